#!/usr/bin/env python3
"""Copies one DICOM series folder N times as N distinct studies.

    python3 tools/dev/distinct_studies.py SERIES_FOLDER DEST N

DEST/study1 ... DEST/studyN each hold every file of SERIES_FOLDER with its
StudyInstanceUID (0020,000D) changed in its last digit. `covidrate segment`
treats folders that share a StudyInstanceUID and PatientID as one study (the
series folders of one examination) and leaves out the images they repeat, so
plain copies of one series are one study to it; the GPU check's whole-volume
benchmark (tools/gpu_check.sh) needs a batch of several.

The value keeps its length, so no other byte of a file moves; only explicit-VR
little-endian files are handled (the RICORD series: JPEG Lossless), and a file
without the tag, or with more than one (a nested study UID), is an error. Standard library only: the GPU machine has no
pydicom.
"""
import os
import sys

STUDY_UID_TAG = b"\x20\x00\x0d\x00UI"  # group 0x0020, element 0x000D, VR UI, explicit little endian


def with_study_uid_changed(data, copy, path):
    at = data.find(STUDY_UID_TAG)
    if at < 0:
        sys.exit(f"{path}: no StudyInstanceUID (0020,000D) in explicit VR little endian")
    # A second one sits in a sequence (Related Series, Referenced Study...):
    # which is the study's own cannot be told without parsing the file.
    if data.find(STUDY_UID_TAG, at + 1) >= 0:
        sys.exit(f"{path}: more than one (0020,000D); this script patches files that hold one")
    length = int.from_bytes(data[at + 6:at + 8], "little")
    value = bytearray(data[at + 8:at + 8 + length])
    last = len(value.rstrip(b"\x00 ")) - 1  # UIs are padded with a NUL to an even length
    if last < 0 or not chr(value[last]).isdigit():
        sys.exit(f"{path}: StudyInstanceUID {bytes(value)!r} does not end in a digit")
    value[last] = ord(str((int(chr(value[last])) + copy) % 10))
    return data[:at + 8] + bytes(value) + data[at + 8 + length:]


def main():
    if len(sys.argv) != 4 or not os.path.isdir(sys.argv[1]) or not sys.argv[3].isdigit() or not 1 <= int(sys.argv[3]) <= 9:
        sys.exit("usage: distinct_studies.py SERIES_FOLDER DEST N   (N from 1 to 9)")
    source, dest, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
    names = sorted(n for n in os.listdir(source) if os.path.isfile(os.path.join(source, n)))
    if not names:
        sys.exit(f"{source}: no files")
    for copy in range(1, copies + 1):
        folder = os.path.join(dest, f"study{copy}")
        os.makedirs(folder, exist_ok=True)
        for name in names:
            path = os.path.join(source, name)
            with open(path, "rb") as f:
                data = f.read()
            with open(os.path.join(folder, name), "wb") as f:
                f.write(with_study_uid_changed(data, copy, path))


if __name__ == "__main__":
    main()
