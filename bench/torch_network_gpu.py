#!/usr/bin/env python3
"""PyTorch running the whole COVID-Rate network (width 1) on the GPU at the cases
of bench/bench_cuda_network.cpp: the peer numbers for our training step and our
inference.

    python3 bench/torch_network_gpu.py [--covidrate-json bench_cuda_network.json]

The network is the independent implementation in tools/dev/make_model_golden.py
(from docs/model.md, not from our code), eager mode, NCHW, cuDNN's autotuner on
(as our plans time cuDNN's algorithms once per shape). Cases:
    train/w1/352/b4   forward in training mode, the hybrid loss, backward, Adam
    infer/w1/512/b16  eval() under torch.no_grad()
in the precisions
    f32    float32, TF32 off                 (ours: .../f32)
    tf32   float32, TF32 convs and matmuls   (ours: .../tf32)
    amp    float32 weights, torch.autocast(bfloat16)        (mixed precision)
    bf16   model and input cast to bfloat16  (inference only: eager bf16)
    bf16_nhwc  the same in channels-last memory (NHWC): not a peer of ours (we
           run NCHW), but what that layout is worth to cuDNN at these shapes,
           the measurement that says whether an NHWC path would pay
Each case: two warm-up steps, then steps until half a second has passed (at
least 5), wall time to a synchronize per step, as bench_cuda_network measures.
With --covidrate-json (bench_cuda_network's --benchmark_out JSON) it also
prints our images/s over PyTorch's for every case whose name both have, and
over PyTorch's best precision of the same pass. Without PyTorch or a GPU it
says so and exits 0. Developer tool only: nothing in covidrate runs Python.
"""
import argparse
import json
import os
import sys
import time

# Keep in sync with kCases in bench/bench_cuda_network.cpp: (pass, size, batch, precisions).
CASES = [("train", 352, 4, ["f32", "tf32", "amp"]), ("infer", 512, 16, ["f32", "tf32", "amp", "bf16", "bf16_nhwc"])]


def run_case(torch, reference, pass_name, size, batch, precision):
    """Images per second and the peak of PyTorch's caching allocator in MB."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    net = reference.CovidRate(1.0).cuda().to(dtype)
    image = torch.rand(batch, 1, size, size, device="cuda", dtype=dtype)
    if precision == "bf16_nhwc":
        net = net.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = (((yy - size // 2) ** 2 + (xx - size // 3) ** 2) < size * size // 25).float()
    mask = disk.expand(batch, 1, size, size).contiguous().cuda()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "amp")

    if pass_name == "train":
        net.train()
        adam = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)

        def step():
            adam.zero_grad(set_to_none=False)
            with autocast:
                probabilities = net(image)
            # The loss in float32, as autocast would leave a reduction.
            reference.hybrid_loss(probabilities.float(), mask).backward()
            adam.step()
    else:
        net.eval()

        def step():
            with torch.no_grad(), autocast:
                net(image)

    step()
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    steps, start = 0, time.perf_counter()
    while steps < 5 or time.perf_counter() - start < 0.5:
        step()
        torch.cuda.synchronize()
        steps += 1
    seconds = time.perf_counter() - start
    return steps * batch / seconds, torch.cuda.max_memory_allocated() / 1e6


def load_ours(path):
    """bench_cuda_network's JSON: case name (without 'network/' and Google Benchmark's suffixes) -> images/s."""
    with open(path) as f:
        report = json.load(f)
    ours = {}
    for b in report.get("benchmarks", []):
        parts = b["name"].split("/")  # network/<pass>/w1/<size>/b<batch>/<precision>/min_time:.../real_time
        if len(parts) >= 6 and "images/s" in b:
            ours["/".join(parts[1:6])] = (b["images/s"], b.get("peak_MB", float("nan")))
    return ours


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--covidrate-json", help="bench_cuda_network JSON output: print the ratios")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("torch_network_gpu: nothing to run, PyTorch is not installed")
        return 0
    if not torch.cuda.is_available():
        print("torch_network_gpu: nothing to run, no CUDA device")
        return 0
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "dev"))
    import make_model_golden as reference

    ours = load_ours(args.covidrate_json) if args.covidrate_json else {}
    print(f"PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print(f"{'case':<28} {'torch img/s':>11} {'peak MB':>8} {'ours img/s':>10} {'peak MB':>8} {'ours/torch':>10}")
    shown = set()
    for pass_name, size, batch, precisions in CASES:
        best = 0.0
        for precision in precisions:
            key = f"{pass_name}/w1/{size}/b{batch}/{precision}"
            rate, peak = run_case(torch, reference, pass_name, size, batch, precision)
            best = max(best, rate)
            mine = ours.get(key)
            shown.add(key)
            tail = f" {mine[0]:10.1f} {mine[1]:8.0f} {mine[0] / rate:10.2f}" if mine else ""
            print(f"{key:<28} {rate:11.1f} {peak:8.0f}{tail}", flush=True)
        # Our variants without a PyTorch twin (bf16-upsampled), beside the rows above.
        for key, (rate, peak) in ours.items():
            if key.startswith(f"{pass_name}/w1/{size}/b{batch}/") and key not in shown:
                print(f"{key:<28} {'(ours only)':>11} {'':>8} {rate:10.1f} {peak:8.0f}", flush=True)
        mine = [v[0] for k, v in ours.items() if k.startswith(f"{pass_name}/w1/{size}/b{batch}/")]
        if mine:
            print(f"{pass_name}: our best {max(mine):.1f} img/s over PyTorch's best {best:.1f} = "
                  f"{max(mine) / best:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
