#!/usr/bin/env python3
"""PyTorch on the GPU at the shapes of bench/bench_cuda_kernels.cpp: the peer
numbers for covidrate's custom kernels and its cuDNN convolutions.

Times, with torch.cuda.Event around every run and the median over the runs:
  - 3x3 convolutions of three COVID-Rate layers (batch 4), forward, backward
    data and backward filter (+ bias), in float32 with TF32 OFF (what covidrate
    runs by default) and in bfloat16 (what mixed precision could reach);
  - batch norm (train forward, backward) and sigmoid (forward, backward) at
    4 x 32 x 512 x 512.
The benchmark names are those of bench_cuda_kernels, so with

  build-gpu/bench_cuda_kernels --benchmark_out=cr.json --benchmark_out_format=json
  python3 bench/torch_kernels_gpu.py --covidrate-json cr.json

it also prints covidrate's median time over PyTorch's for every shared name
(above 1: covidrate is slower). Without PyTorch or a GPU it says so and exits 0.
Developer tool only: nothing in covidrate runs Python.
"""
import argparse
import json
import statistics
import sys


def median_ms(torch, fn, iters):
    for _ in range(3):  # warm-up: cuDNN algorithm search, caching allocator
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    runs = []
    for _ in range(iters):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        runs.append(start.elapsed_time(stop))
    return statistics.median(runs)


def conv_cases(torch, dtype, suffix):
    """(name, fn, bytes, flops) for the convolution shapes of bench_cuda_kernels."""
    aten = torch.ops.aten
    cases = []
    for cin, cout, hw in ((128, 64, 256), (256, 128, 128), (1024, 512, 32)):
        tag = f"/{cin}to{cout}@{hw}{suffix}"
        x = torch.randn(4, cin, hw, hw, device="cuda", dtype=dtype)
        w = torch.randn(cout, cin, 3, 3, device="cuda", dtype=dtype) * 0.05
        b = torch.randn(cout, device="cuda", dtype=dtype) * 0.1
        dy = torch.randn(4, cout, hw, hw, device="cuda", dtype=dtype)
        flops = 2.0 * 4 * cout * hw * hw * cin * 9
        args = ([1, 1], [1, 1], [1, 1], False, [0, 0], 1)  # stride, padding, dilation, transposed, output_padding, groups
        cases.append(("conv_fwd" + tag, lambda x=x, w=w, b=b: torch.nn.functional.conv2d(x, w, b, padding=1), 0, flops))
        cases.append(("conv_bwd_data" + tag,
                      lambda dy=dy, x=x, w=w: aten.convolution_backward(dy, x, w, None, *args, [True, False, False]),
                      0, flops))
        cases.append(("conv_bwd_filter" + tag,
                      lambda dy=dy, x=x, w=w: aten.convolution_backward(dy, x, w, [w.shape[0]], *args, [False, True, True]),
                      0, flops))
    return cases


def memory_cases(torch):
    """(name, fn, bytes, flops) for the memory-bound shapes; bytes as bench_cuda_kernels counts them."""
    aten = torch.ops.aten
    shape = (4, 32, 512, 512)
    n = 4 * 32 * 512 * 512
    act = "/4x32x512x512"
    x = torch.rand(shape, device="cuda") * 4 - 1
    dy = torch.rand(shape, device="cuda") * 2 - 1
    y = torch.empty(shape, device="cuda")
    gamma = torch.rand(32, device="cuda") + 0.5
    beta = torch.rand(32, device="cuda") - 0.5
    rm, rv = torch.zeros(32, device="cuda"), torch.ones(32, device="cuda")
    # momentum 0.01 and eps 1e-3: covidrate's BatchNormParams defaults.
    _, save_mean, save_invstd = aten.native_batch_norm(x, gamma, beta, rm, rv, True, 0.01, 1e-3)
    s = torch.sigmoid(x)
    return [
        ("bn_train_fwd" + act,
         lambda: torch.nn.functional.batch_norm(x, rm, rv, gamma, beta, True, 0.01, 1e-3), 8 * n, 0),
        ("bn_bwd" + act,
         lambda: aten.native_batch_norm_backward(dy, x, gamma, rm, rv, save_mean, save_invstd, True, 1e-3,
                                                 [True, True, True]), 12 * n, 0),
        ("sigmoid_fwd" + act, lambda: torch.sigmoid(x, out=y), 8 * n, 0),
        ("sigmoid_bwd" + act, lambda: aten.sigmoid_backward(dy, s), 12 * n, 0),
    ]


def covidrate_medians(path):
    """Median microseconds per benchmark name from a bench_cuda_kernels JSON file."""
    with open(path) as f:
        report = json.load(f)
    out = {}
    for b in report.get("benchmarks", []):
        # "bn_bwd/4x32x512x512/min_time:0.200/manual_time" -> "bn_bwd/4x32x512x512"
        parts = [p for p in b["name"].split("/") if not p.startswith("min_time:") and p != "manual_time"]
        if "median_us" in b:
            out["/".join(parts)] = b["median_us"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--covidrate-json", help="bench_cuda_kernels JSON output: print time ratios")
    parser.add_argument("--iters", type=int, default=30, help="timed runs per case (default 30)")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("torch_kernels_gpu: PyTorch is not installed, nothing to time")
        return 0
    if not torch.cuda.is_available():
        print("torch_kernels_gpu: no CUDA device, nothing to time")
        return 0
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, TF32 off")

    ours = covidrate_medians(args.covidrate_json) if args.covidrate_json else {}
    cases = memory_cases(torch) + conv_cases(torch, torch.float32, "") + conv_cases(torch, torch.bfloat16, "_bf16")
    # The last column is a TIME ratio: below 1 covidrate is faster than PyTorch.
    print("median_us, GB/s and TFLOP/s are PyTorch's; time covidrate/torch < 1 means covidrate is faster")
    print(f"{'case':34s} {'median_us':>10s} {'GB/s':>8s} {'TFLOP/s':>8s} {'time cr/torch':>16s}")
    with torch.no_grad():
        for name, fn, nbytes, flops in cases:
            ms = median_ms(torch, fn, args.iters)
            gbs = f"{nbytes / (ms * 1e-3) / 1e9:8.0f}" if nbytes else f"{'':8s}"
            tfs = f"{flops / (ms * 1e-3) / 1e12:8.1f}" if flops else f"{'':8s}"
            ratio = f"{ours[name] / (ms * 1e3):16.2f}" if name in ours else f"{'':16s}"
            print(f"{name:34s} {ms * 1e3:10.1f} {gbs} {tfs} {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
