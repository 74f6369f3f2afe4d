#!/usr/bin/env python3
"""Puts `covidrate segment --device cuda` beside bench/torch_volume.py on the GPU.

    python3 bench/compare_volume_gpu.py WORK

WORK (tools/gpu_check.sh whole_volume) holds segment-<run>/ folders (segment's
batch output: one folder per study, each with report.json) and torch.tsv
(torch_volume.py lines). Ours is the whole command per study: read, lung
extraction (on the CPU), the network on the slices with lung, writing; PyTorch
runs the network alone over every slice. The first study of a run pays for
cuDNN's algorithm search and the first allocations; "warm" is the mean over
the studies after it. Prints both sides and the ratios (above 1: we are faster).
"""
import glob
import json
import os
import sys

if len(sys.argv) != 2 or sys.argv[1].startswith("-") or not os.path.isdir(sys.argv[1]):
    sys.exit("usage: compare_volume_gpu.py WORK   (the folder tools/gpu_check.sh whole_volume fills)")
work = sys.argv[1]
torch = {}
if os.path.exists(f"{work}/torch.tsv"):
    for line in open(f"{work}/torch.tsv"):
        device, precision, slices, batch, seconds, rate, cpu, peak = line.split("\t")
        torch[precision] = (int(slices), float(seconds))

print("whole volumes on the GPU: ours = the whole `covidrate segment` command per study (read, lungs")
print("on the CPU, network on the slices with lung, write); torch = the network alone over every slice")
for folder in sorted(p for p in glob.glob(f"{work}/segment-*") if os.path.isdir(p)):
    run = os.path.basename(folder)[len("segment-"):]
    reports = sorted(glob.glob(f"{folder}/*/report.json"))
    if not reports:
        print(f"ours {run}: no report (the step failed)")
        continue
    rows = []
    for path in reports:
        r = json.load(open(path))
        t = r["timings_s"]
        rows.append((os.path.basename(os.path.dirname(path)), r["input"]["size"][2],
                     r["study_figures"]["slices_with_lung"], t, r["study_figures"],
                     f'{r.get("algorithm_searches", "?")} cuDNN searches, '
                     f'{r.get("device_system_allocations", "?")} cudaMalloc/cudaHostAlloc'))
    print(f"ours {run}:")
    for name, slices, with_lung, t, f, counts in rows:
        print(f"  {name}: {slices} slices ({with_lung} with lung): read {t['read']:.2f} s, lungs {t['lungs']:.2f} s, "
              f"network {t['network']:.2f} s ({counts}), "
              f"write {t['write']:.2f} s, total {t['total']:.2f} s = "
              f"{slices / t['total']:.1f} slices/s; network {with_lung / t['network']:.1f} slices/s; "
              f"opacity {f['both_lungs']['opacity_percent']:.3f}% (left {f['left_lung']['opacity_percent']:.3f}, "
              f"right {f['right_lung']['opacity_percent']:.3f}), mean certainty index {f.get('mean_certainty_index')}")
    warm = rows[1:] or rows
    slices = sum(r[1] for r in warm)
    with_lung = sum(r[2] for r in warm)
    total = sum(r[3]["total"] for r in warm)
    network = sum(r[3]["network"] for r in warm)
    print(f"  warm ({len(warm)} studies): whole command {slices / total:.1f} slices/s "
          f"(each study's own stages), network {with_lung / network:.1f} slices/s")
    if all("network_stages" in r[3] for r in warm):
        # Where the network phase goes (the main thread's time per step, summed):
        # the forward pass against the copies and the waits for the CPU stages.
        stages = {}
        for r in warm:
            for key, value in r[3]["network_stages"].items():
                stages[key] = stages.get(key, 0.0) + value
        parts = ", ".join(f"{key} {1000 * value / with_lung:.2f}" for key, value in stages.items())
        rest = network - sum(stages.values())
        # With batches queued ahead the forward's launch is `forward` and the
        # GPU time the host could not hide is `device_wait`.
        computing = stages.get("forward", 0.0) + stages.get("device_wait", 0.0)
        print(f"  warm network phase per slice with lung, ms: {parts}, other {1000 * rest / with_lung:.2f} "
              f"(forward + device_wait alone: {with_lung / computing if computing else float('nan'):.1f} slices/s)")
    # The batch's pace once the first study is out: studies overlap (--prefetch
    # reads the next and writes the last while the network runs), so the sum of
    # each study's stages above overstates a batch's time; the reports' write
    # times (file modification times) give the pace a server would see.
    written = sorted(os.stat(path).st_mtime for path in reports)
    if len(written) > 1 and written[-1] > written[0]:
        paced = sum(r[1] for r in rows[1:])
        print(f"  the batch's pace after the first study: {paced} slices in {written[-1] - written[0]:.2f} s = "
              f"{paced / (written[-1] - written[0]):.1f} slices/s (from the reports' write times)")
    if os.path.exists(f"{folder}.wall_s"):
        wall = float(open(f"{folder}.wall_s").read())
        all_slices = sum(r[1] for r in rows)
        print(f"  the batch's wall time: {all_slices} slices in {wall:.2f} s = {all_slices / wall:.1f} slices/s "
              f"(start-up, the first study's search and the overlap of --prefetch included)")
    fromfile = f"{work}/fromfile-{run}"
    if os.path.exists(f"{fromfile}/report.json"):
        # The same study in a new process whose cuDNN choices come from the
        # algorithm cache file the batch run wrote: a repeated single-study run.
        r = json.load(open(f"{fromfile}/report.json"))
        t = r["timings_s"]
        # Names of its own: `with_lung` and `network` below are the warm studies'.
        one_slices, one_with_lung = r["input"]["size"][2], r["study_figures"]["slices_with_lung"]
        wall = float(open(f"{fromfile}.wall_s").read()) if os.path.exists(f"{fromfile}.wall_s") else float("nan")
        print(f"  one study, new process, cuDNN choices from the file: network {t['network']:.2f} s "
              f"({r.get('algorithm_searches', '?')} cuDNN searches; first study above: {rows[0][3]['network']:.2f} s), "
              f"total {t['total']:.2f} s, start-up {t.get('startup', float('nan')):.2f} s (weights, device), "
              f"process wall {wall:.2f} s for {one_slices} slices ({one_with_lung} with lung)")
    for peer, (n, seconds) in torch.items():
        print(f"    vs torch {peer}: {n / seconds:.1f} slices/s; ratio whole command {(slices / total) / (n / seconds):.2f}, "
              f"network per slice {(seconds / n) / (network / with_lung):.2f} (above 1: we are faster)")
