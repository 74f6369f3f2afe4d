#!/usr/bin/python3
"""PyTorch running the whole COVID-Rate network at the cases of bench/bench_network.cpp.

    /usr/bin/python3 bench/torch_network.py --threads 2

The network is the independent PyTorch implementation in
tools/dev/make_model_golden.py (built from docs/model.md, not from our code),
float32, batch 1, PyTorch's default initialization and memory layout (NCHW):
    train  forward in training mode, the hybrid loss, backward, Adam (eps 1e-7);
    infer  eval() under torch.no_grad().
Prints one line per case, tab-separated: key (as bench_network's
network/<key>), median wall ms of --repeats steps after two warm-up steps,
images/s, median process CPU ms (all threads: the work done, nearly
independent of other load), and rss_MB: the growth of the peak
resident set over the steps (VmHWM reset through /proc/self/clear_refs, minus
VmRSS before them), the same measure as bench_network's rss_MB; each case
runs in a process of its own. PyTorch's CPU
allocator keeps no statistics without the profiler, so the resident set is the
one measure both sides share.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "dev"))
import make_model_golden as reference  # noqa: E402  (the network and the hybrid loss)

# Keep in sync with kCases in bench/bench_network.cpp: (pass, width, size).
CASES = [
    ("train", 0.25, 352), ("train", 1.0, 352), ("infer", 0.25, 512),
    ("infer", 1.0, 512), ("infer", 0.25, 352), ("infer", 1.0, 352),
]


def proc_status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return 1024.0 * float(line.split()[1])
    return 0.0


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def make_batch(size):
    """An image in [0, 1] and a disk as the lesion mask, as bench_network does."""
    image = torch.rand(1, 1, size, size)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = (((yy - size // 2) ** 2 + (xx - size // 3) ** 2) < size * size // 25).float()
    return image, mask[None, None]


def key_of(pass_name, width, size):
    return f"{pass_name}/w{width:g}/{size}"


def run_case(pass_name, width, size, repeats):
    """Median wall and process CPU seconds of one step, and the peak resident-set growth in bytes."""
    net = reference.CovidRate(width)
    image, mask = make_batch(size)
    if pass_name == "train":
        net.train()
        adam = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)

        def step():
            adam.zero_grad(set_to_none=False)
            reference.hybrid_loss(net(image), mask).backward()
            adam.step()
    else:
        net.eval()

        def step():
            with torch.no_grad():
                net(image)

    rss_before = proc_status_bytes("VmRSS")
    reset_peak_rss()
    # Two warm-up steps: at batch 1, 352 x 352, PyTorch's first step took 3 s and
    # its second still 1.5x a settled one (oneDNN building its kernels).
    step()
    step()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), proc_status_bytes("VmHWM") - rss_before


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="CPU threads (default: all cores, as our benchmarks)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help="run this case alone, in this process (a key)")
    args = parser.parse_args()
    keys = [key_of(*case) for case in CASES]
    if args.case is not None and args.case not in keys:
        sys.exit(f"torch_network.py: no case {args.case!r}; the cases: {' '.join(keys)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    for pass_name, width, size in CASES:
        key = key_of(pass_name, width, size)
        if args.case is None:
            # Each case in a fresh process: memory that malloc kept from an
            # earlier case would hide this one's growth of the resident set.
            subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                            "--repeats", str(args.repeats), "--case", key], check=True)
        elif args.case == key:
            seconds, cpu_seconds, rss = run_case(pass_name, width, size, args.repeats)
            print(f"{key}\t{seconds * 1e3:.1f}\t{1 / seconds:.3f}\t{cpu_seconds * 1e3:.1f}\t"
                  f"{rss * 1e-6:.0f}", flush=True)


if __name__ == "__main__":
    main()
