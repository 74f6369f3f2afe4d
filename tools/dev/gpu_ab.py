#!/usr/bin/env python3
"""The bf16 forward's A/B timings of one GPU check, side by side (tools/gpu_check.sh).

    python3 tools/dev/gpu_ab.py OUT_DIR

Reads, from the check's output folder: bench_cuda_network.json (every case),
bench_cuda_network_cudnn_only.json (the bf16 cases with COVIDRATE_DIRECT_CONV=0)
and torch_network_gpu.txt (PyTorch's eager bf16 on the same machine, if it ran).
Prints images/s of the full-width bf16 forward (batch 16, 512²) as `segment`
runs it, then with one optimization turned off at a time, and each one's gain.
"""
import json
import os
import re
import sys

KEY = "infer/w1/512/b16/"


def rates(path):
    """case (e.g. 'bf16', 'bf16-upsampled') -> images/s, from bench_cuda_network's JSON."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        report = json.load(f)
    out = {}
    for b in report.get("benchmarks", []):
        name = b["name"].split("network/", 1)[-1]
        if name.startswith(KEY) and "images/s" in b:
            out[name[len(KEY):].split("/")[0]] = b["images/s"]
    return out


def torch_bf16(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*" + re.escape(KEY) + r"bf16\s+([\d.]+)", line)
            if m:
                return float(m.group(1))
    return None


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = sys.argv[1]
    ours = rates(os.path.join(out, "bench_cuda_network.json"))
    cudnn_only = rates(os.path.join(out, "bench_cuda_network_cudnn_only.json"))
    torch = torch_bf16(os.path.join(out, "torch_network_gpu.txt"))
    full = ours.get("bf16")
    if full is None:
        print("gpu_ab: no bf16 inference case in bench_cuda_network.json")
        return 1
    print(f"bf16 forward, width 1, batch 16, 512² (images/s; gain = full / without)")
    print(f"  full inference form:                         {full:8.1f}")
    rows = [("decoders upsample, then conv (no four phases)", ours.get("bf16-upsampled")),
            ("tiny filter banks in cuDNN (no direct kernel)", cudnn_only.get("bf16"))]
    for label, rate in rows:
        if rate:
            print(f"  {label}: {rate:8.1f}   gain {full / rate:.3f}")
        else:
            print(f"  {label}: not measured")
    if torch:
        print(f"  PyTorch eager bf16:                          {torch:8.1f}   ours/torch {full / torch:.2f} (aim 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
