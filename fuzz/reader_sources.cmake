# The files each fuzz target compiles besides itself: the reader under test
# and every file of the engine it links against. One list for both builds:
# fuzz/CMakeLists.txt compiles them with clang, libFuzzer and the sanitizers;
# the main build's replay programs (fuzz_replay_*, run by ctest in CI) compile
# exactly these too instead of linking the whole engine, so a reader that
# starts calling another file of the engine fails CI's build until the file is
# listed here (session 14's thread count in data/dicom.cpp broke the clang
# build of fuzz_dicom unnoticed for a session).
#
# Needs COVIDRATE_ROOT (the source tree).
set(COVIDRATE_FUZZ_dicom_SOURCES
    ${COVIDRATE_ROOT}/data/dicom.cpp
    ${COVIDRATE_ROOT}/data/dicom_file.cpp
    ${COVIDRATE_ROOT}/data/dicom_structure.cpp
    ${COVIDRATE_ROOT}/data/dicom_codestream.cpp
    ${COVIDRATE_ROOT}/kernels/cpu/threads.cpp)  # headers read and slices decoded on the CPU pool
# nifti.cpp's writer needs the atomic file, the parallel deflate and the CPU
# pool, which sets OpenBLAS's threads (the reader under test calls none of
# them, but they must link).
set(COVIDRATE_FUZZ_nifti_SOURCES
    ${COVIDRATE_ROOT}/data/nifti.cpp
    ${COVIDRATE_ROOT}/data/nifti_affine.cpp
    ${COVIDRATE_ROOT}/data/parallel_deflate.cpp
    ${COVIDRATE_ROOT}/nn/text_file.cpp
    ${COVIDRATE_ROOT}/kernels/cpu/threads.cpp)
# read_image: stb_image for PNG (compiled into image2d.cpp) with the PNG chunk
# walk, libjpeg-turbo for JPG; the PNG writer beside it needs the parallel
# deflate and the atomic file.
set(COVIDRATE_FUZZ_image_SOURCES
    ${COVIDRATE_ROOT}/data/image2d.cpp
    ${COVIDRATE_ROOT}/data/parallel_deflate.cpp
    ${COVIDRATE_ROOT}/nn/text_file.cpp
    ${COVIDRATE_ROOT}/kernels/cpu/threads.cpp)
