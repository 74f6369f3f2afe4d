#!/usr/bin/env python3
"""Puts `covidrate segment --device cuda` (f32, bf16) beside bench/torch_volume.py on the GPU.

    python3 bench/compare_volume_gpu.py WORK

WORK (tools/gpu_check.sh whole_volume) holds segment-f32/, segment-bf16/ and
segment-bf16-heuristic/ (segment's output folders) and torch.tsv (torch_volume.py
lines). Ours is the whole command: read, lung extraction (on the CPU), the network
on the slices with lung, writing; PyTorch runs the network alone over every slice. Prints both and the ratios (above 1: we are faster).
"""
import json, os, sys
work = sys.argv[1]
torch = {}
if os.path.exists(f"{work}/torch.tsv"):
    for line in open(f"{work}/torch.tsv"):
        device, precision, slices, batch, seconds, rate, cpu, peak = line.split("\t")
        torch[precision] = (int(slices), float(seconds))
print("whole volume on the GPU: ours = the whole `covidrate segment` command (read, lungs on the CPU,")
print("network on the slices with lung, write); torch = the network alone over every slice")
print("(our network time includes cuDNN's algorithm search on the first batch of each shape; the")
print("'heuristic' run takes cuDNN's predicted ranking instead, with no search)")
for precision in ["f32", "bf16", "bf16-heuristic"]:
    path = f"{work}/segment-{precision}/report.json"
    if not os.path.exists(path):
        print(f"ours {precision}: no report (the step failed)")
        continue
    r = json.load(open(path))
    t, slices, with_lung = r["timings_s"], r["input"]["size"][2], r["study_figures"]["slices_with_lung"]
    print(f"ours {precision}: {slices} slices ({with_lung} with lung): read {t['read']:.2f} s, lungs {t['lungs']:.2f} s, "
          f"network {t['network']:.2f} s, write {t['write']:.2f} s, total {t['total']:.2f} s = "
          f"{slices / t['total']:.1f} slices/s; network alone {with_lung / t['network']:.1f} slices/s")
    for peer, (n, seconds) in torch.items():
        print(f"  vs torch {peer}: {n / seconds:.1f} slices/s; ratio whole command {seconds / t['total']:.2f}, "
              f"network per slice {(seconds / n) / (t['network'] / with_lung):.2f} (above 1: we are faster)")
