#!/usr/bin/env bash
# Our CPU convolution against PyTorch's, same shapes, same thread count, one run.
#
#   bench/compare_conv_cpu.sh BUILD_DIR [THREADS]
#
# Builds nothing: BUILD_DIR must hold bench_conv (ninja -C BUILD_DIR bench_conv).
# THREADS defaults to the number of cores. Prints: shape, pass, ours GFLOP/s,
# torch GFLOP/s, ratio (ours / torch; above 1 means we are faster).
# Both sides are timed back to back, so on a shared machine the load they see
# is similar but not equal: run it twice before trusting a ratio.
set -euo pipefail

if [[ $# -lt 1 || ! -x "$1/bench_conv" ]]; then
  echo "usage: $0 BUILD_DIR [THREADS]   (BUILD_DIR/bench_conv must exist)" >&2
  exit 2
fi
build=$1
threads=${2:-$(nproc)}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Both libraries read these; pinning them keeps either side from using more threads.
export COVIDRATE_THREADS=$threads OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

"$build/bench_conv" --benchmark_format=csv >"$tmp/ours.csv" 2>/dev/null
/usr/bin/python3 "$here/torch_conv.py" --threads "$threads" >"$tmp/torch.tsv"

/usr/bin/python3 - "$tmp/ours.csv" "$tmp/torch.tsv" "$threads" <<'EOF'
import csv, sys

ours_csv, torch_tsv, threads = sys.argv[1:]
ours = {}
with open(ours_csv) as f:
    for row in csv.DictReader(f):
        # name: conv/<shape>/<pass>/min_time:.../real_time
        _, shape, pass_name = row["name"].split("/")[:3]
        ours[(shape, pass_name)] = float(row["GFLOP/s"])
torch = {}
with open(torch_tsv) as f:
    for line in f:
        shape, pass_name, gflops, _ = line.rstrip("\n").split("\t")
        torch[(shape, pass_name)] = float(gflops)

print(f"threads: {threads}")
print(f"{'shape':<22} {'pass':<16} {'ours GFLOP/s':>12} {'torch GFLOP/s':>13} {'ratio':>6}")
for key, mine in ours.items():
    theirs = torch.get(key)
    ratio = f"{mine / theirs:6.2f}" if theirs else "     -"
    theirs_s = f"{theirs:13.1f}" if theirs else f"{'-':>13}"
    print(f"{key[0]:<22} {key[1]:<16} {mine:12.1f} {theirs_s} {ratio}")
EOF
