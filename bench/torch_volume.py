#!/usr/bin/python3
"""PyTorch running COVID-Rate over a whole CT volume's slices: the peer of
`covidrate segment` in bench/compare_segment_cpu.sh (CPU) and tools/gpu_check.sh (GPU).

    /usr/bin/python3 bench/torch_volume.py --slices 255 --batch 4 --threads 2
    python3 bench/torch_volume.py --device cuda --precision bf16 --slices 255 --batch 16

The network is the independent PyTorch implementation in
tools/dev/make_model_golden.py (built from docs/model.md, not from our code) at
width 1, in eval() under torch.no_grad(), PyTorch's eager mode and NCHW layout,
at 512 x 512 (the size segment runs at). PyTorch has no lung extraction, so it
runs the network on every slice; its inputs are random (speed does not depend
on the values). Precisions:
    f32    float32 (on CUDA with TF32 off: PyTorch's default for convolutions
           is TF32 on, set here explicitly off)
    tf32   float32 tensors, TF32 tensor cores for convolutions and matmuls
    bf16   the model and the input cast to bfloat16 (eager bf16: the issue's peer)
    amp    float32 model under torch.autocast(dtype=bfloat16)
One untimed warm-up batch (two on CUDA, where cuDNN picks its algorithms),
then every slice once, batch by batch. Prints one tab-separated line:
    device precision slices batch seconds slices/s cpu_seconds peak_MB
where cpu_seconds is the process CPU time over the timed part (all threads)
and peak_MB the peak of torch.cuda.max_memory_allocated (CUDA) or the growth
of the resident set's peak (CPU, VmHWM reset through /proc/self/clear_refs).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "dev"))
import make_model_golden as reference  # noqa: E402  (the network)
from torch_network import proc_status_bytes, reset_peak_rss  # noqa: E402  (the CPU memory measure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["f32", "tf32", "bf16", "amp"], default="f32")
    parser.add_argument("--slices", type=int, default=255, help="slices in the volume (RICORD: 255)")
    parser.add_argument("--batch", type=int, default=1, help="slices per pass (segment: 1 on the CPU, 8 on CUDA)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="CPU threads (default: all cores, as our benchmarks)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_volume.py: --device cuda, but this PyTorch sees no CUDA device")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        tf32 = args.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True  # as our cuDNN plans: the best algorithm per shape

    net = reference.CovidRate(args.width).to(device).eval()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    net = net.to(dtype)
    volume = torch.rand(args.slices, 1, args.size, args.size)  # on the host, as a volume read from disk

    def run(first, count):
        batch = volume[first:first + count].to(device, non_blocking=True).to(dtype)
        with torch.no_grad():
            if args.precision == "amp":
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    probabilities = net(batch)
            else:
                probabilities = net(batch)
        return probabilities.float().cpu()  # every slice's probabilities back on the host, as segment does

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2 if device.type == "cuda" else 1):
        run(0, min(args.batch, args.slices))
    synchronize()
    rss_before = proc_status_bytes("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for first in range(0, args.slices, args.batch):
        run(first, min(args.batch, args.slices - first))
    synchronize()
    seconds, cpu_seconds = time.perf_counter() - start_wall, time.process_time() - start_cpu
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = proc_status_bytes("VmHWM") - rss_before
    print(f"{args.device}\t{args.precision}\t{args.slices}\t{args.batch}\t{seconds:.2f}\t"
          f"{args.slices / seconds:.3f}\t{cpu_seconds:.2f}\t{peak * 1e-6:.0f}", flush=True)


if __name__ == "__main__":
    main()
