#!/usr/bin/env bash
# The whole COVID-Rate network, ours against PyTorch's, same cases, same threads.
#
#   bench/compare_network_cpu.sh BUILD_DIR [THREADS] [ROUNDS]
#   CASES="infer/w1/512 train/w0.25/352" bench/compare_network_cpu.sh BUILD_DIR 2
#
# Builds nothing: BUILD_DIR must hold bench_network (ninja -C BUILD_DIR
# bench_network). THREADS defaults to the number of cores, ROUNDS to 2. Every
# case runs in a process of its own on each side (a fresh resident set to
# measure): warm-up steps (ours one, PyTorch two: its second step is still
# slow), then one timed step for PyTorch and as many as bench_network's
# --benchmark_min_time asks (one, for all but the smallest cases). Each round runs every case on both sides, alternating; each side
# keeps its best round, so a burst of load from other processes penalizes
# neither side for good. Columns:
#   img/s     images per second of wall time, ours and torch; ratio ours/torch
#             (above 1: we are faster);
#   cpu ms/img  process CPU time (all threads) per image, ours and torch, ratio
#             torch/ours (above 1: we do less work): nearly independent of the
#             load of a shared machine;
#   GFLOP/s   ours, CovidRateNet::forward_flops per image (x3 for a training step);
#   alloc MB  peak of our CPU allocator: every tensor, weights and optimizer state included;
#   rss MB    growth of the peak resident set over the steps, ours and torch
#             (VmHWM after resetting it, minus VmRSS before the steps).
set -euo pipefail

if [[ $# -lt 1 || ! -x "$1/bench_network" ]]; then
  echo "usage: $0 BUILD_DIR [THREADS] [ROUNDS]   (BUILD_DIR/bench_network must exist)" >&2
  exit 2
fi
build=$1
threads=${2:-$(nproc)}
rounds=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Both libraries read these; pinning them keeps either side from using more threads.
export COVIDRATE_THREADS=$threads OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

# Keep in sync with kCases in bench/bench_network.cpp and CASES in bench/torch_network.py;
# CASES="infer/w1/512 ..." in the environment runs a subset.
cases=${CASES:-"train/w0.25/352 train/w1/352 infer/w0.25/512 infer/w1/512 infer/w0.25/352 infer/w1/352"}

# A case our benchmark does not have would give an empty row, silently.
for key in $cases; do
  if ! "$build/bench_network" --benchmark_list_tests --benchmark_filter="^network/${key//./\\.}/" | grep -q .; then
    echo "$0: no case network/$key/ in $build/bench_network (--benchmark_list_tests lists them)" >&2
    exit 2
  fi
done

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  for key in $cases; do
    "$build/bench_network" --benchmark_filter="^network/${key//./\\.}/" --benchmark_format=csv \
      2>/dev/null >>"$tmp/ours.$round.csv"
    /usr/bin/python3 "$here/torch_network.py" --threads "$threads" --repeats 1 --case "$key" \
      >>"$tmp/torch.$round.tsv"
  done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

/usr/bin/python3 - "$tmp" "$rounds" "$threads" <<'EOF'
import csv, sys

tmp, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ours, torch = {}, {}  # key -> the round with the most images/s

def keep_best(table, key, row):
    if key not in table or row["images/s"] > table[key]["images/s"]:
        table[key] = row

# bench_network's CSV: a header line before each case's row.
for r in range(1, rounds + 1):
    with open(f"{tmp}/ours.{r}.csv") as f:
        for fields in csv.reader(f):
            if fields[0] == "name":
                header = fields
                continue
            row = dict(zip(header, fields))
            # name: network/<pass>/w<width>/<size>/min_time:.../real_time
            key = "/".join(row["name"].split("/")[1:4])
            keep_best(ours, key, {"images/s": float(row["images/s"]), "GFLOP/s": float(row["GFLOP/s"]),
                                  "cpu_ms": float(row["cpu_ms/image"]),
                                  "alloc": float(row["alloc_MB"]), "rss": float(row["rss_MB"])})
    with open(f"{tmp}/torch.{r}.tsv") as f:
        for line in f:
            key, _, images, cpu_ms, rss = line.split("\t")
            keep_best(torch, key, {"images/s": float(images), "cpu_ms": float(cpu_ms), "rss": float(rss)})

print(f"threads {threads}, best of {rounds} rounds, batch 1, float32")
print(f"{'case':<17} {'img/s: ours':>11} {'torch':>7} {'ratio':>6} {'GFLOP/s':>8}"
      f"   {'cpu ms/img: ours':>16} {'torch':>7} {'ratio':>6}"
      f"   {'alloc MB':>8}   {'rss MB: ours':>12} {'torch':>6}")
for key, o in ours.items():
    t = torch.get(key, {"images/s": float("nan"), "cpu_ms": float("nan"), "rss": float("nan")})
    print(f"{key:<17} {o['images/s']:11.3f} {t['images/s']:7.3f} {o['images/s'] / t['images/s']:6.2f}"
          f" {o['GFLOP/s']:8.1f}   {o['cpu_ms']:16.0f} {t['cpu_ms']:7.0f} {t['cpu_ms'] / o['cpu_ms']:6.2f}"
          f"   {o['alloc']:8.0f}   {o['rss']:12.0f} {t['rss']:6.0f}")
EOF
