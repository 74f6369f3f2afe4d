#!/usr/bin/python3
"""PyTorch's CPU convolution at the shapes of bench/bench_conv.cpp, as the yardstick.

    /usr/bin/python3 bench/torch_conv.py --threads 2

Prints one line per layer and pass, tab-separated: key, pass, GFLOP/s of wall
time, GFLOP per second of process CPU time (all threads; robust to the load of
a shared machine), median wall ms. The keys match bench_conv's benchmark names
(conv/<key>/<pass>). Each pass is timed as the median of --repeats calls after
warm-up calls, batch 1, float32,
3x3, "same" padding, no bias, the same FLOP count as bench_conv:
2*N*Cout*Ho*Wo*Cin*K*K.
"""
import argparse
import os
import statistics
import time

import torch

# Keep in sync with kLayers in bench/bench_conv.cpp: (Cin, size, Cout, dilation).
LAYERS = [
    (128, 256, 64, 1),
    (256, 128, 128, 1),
    (1024, 32, 512, 1),
    (256, 128, 128, 2),
]
K = 3


def median_seconds(fn, repeats, warmup=2):
    """Median wall seconds and median process CPU seconds of one call."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="CPU threads (default: all cores, as our benchmarks)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    for cin, size, cout, dilation in LAYERS:
        pad = dilation * (K - 1) // 2
        x = torch.randn(1, cin, size, size)
        w = torch.randn(cout, cin, K, K)
        y = torch.nn.functional.conv2d(x, w, None, 1, pad, dilation)
        dy = torch.randn_like(y)

        def backward(mask):
            # One call of the op autograd uses, asking only for the gradient we time.
            return lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, [1, 1], [pad, pad], [dilation, dilation], False, [0, 0], 1, mask)

        passes = {
            "forward": lambda: torch.nn.functional.conv2d(x, w, None, 1, pad, dilation),
            "backward_data": backward([True, False, False]),
            "backward_filter": backward([False, True, False]),
        }
        flops = 2.0 * y.numel() * cin * K * K
        key = f"{cin}x{size}x{size}->{cout} d{dilation}"
        with torch.no_grad():
            for name, fn in passes.items():
                wall, cpu = median_seconds(fn, args.repeats)
                print(f"{key}\t{name}\t{flops / wall * 1e-9:.1f}\t{flops / cpu * 1e-9:.1f}\t"
                      f"{wall * 1e3:.2f}", flush=True)


if __name__ == "__main__":
    main()
