#!/usr/bin/env bash
# Our CPU convolution against PyTorch's, same shapes, same thread count.
#
#   bench/compare_conv_cpu.sh BUILD_DIR [THREADS] [ROUNDS]
#
# Builds nothing: BUILD_DIR must hold bench_conv (ninja -C BUILD_DIR bench_conv).
# THREADS defaults to the number of cores, ROUNDS to 2. Each round runs our
# benchmark, then PyTorch's, each reporting the median of its repetitions; each
# side keeps its best round, so a burst of load from other processes penalizes
# neither side for good.
# Two measures per shape and pass, each as ours, torch and ratio (ours/torch,
# above 1: we are faster):
#   wall  GFLOP per second of elapsed time: what a user waits for;
#   cpu   GFLOP per second of process CPU time summed over threads: the work
#         done, nearly independent of other load on a shared machine (a
#         quiet machine turns it into wall GFLOP/s times the thread count,
#         minus the serial parts).
set -euo pipefail

if [[ $# -lt 1 || ! -x "$1/bench_conv" ]]; then
  echo "usage: $0 BUILD_DIR [THREADS] [ROUNDS]   (BUILD_DIR/bench_conv must exist)" >&2
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

for round in $(seq "$rounds"); do
  # conv/ only: the winograd/ and phases/ cases compare our own algorithms and
  # have no PyTorch peer (keyed like conv/, they would merge into its rows).
  "$build/bench_conv" --benchmark_filter='^conv/' --benchmark_format=csv --benchmark_repetitions=5 \
    --benchmark_report_aggregates_only=true >"$tmp/ours.$round.csv" 2>/dev/null
  /usr/bin/python3 "$here/torch_conv.py" --threads "$threads" >"$tmp/torch.$round.tsv"
done

/usr/bin/python3 - "$tmp" "$rounds" "$threads" <<'EOF'
import csv, sys

tmp, rounds, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ours, torch = {}, {}  # (shape, pass) -> [wall GFLOP/s, cpu GFLOP/s], best over rounds

def keep_best(table, key, wall, cpu):
    best = table.setdefault(key, [0.0, 0.0])
    best[0], best[1] = max(best[0], wall), max(best[1], cpu)

for r in range(1, rounds + 1):
    with open(f"{tmp}/ours.{r}.csv") as f:
        for row in csv.DictReader(f):
            # name: conv/<shape>/<pass>/min_time:.../real_time_median
            if not row["name"].endswith("_median"):
                continue
            _, shape, pass_name = row["name"].split("/")[:3]
            keep_best(ours, (shape, pass_name), float(row["GFLOP/s"]), float(row["GFLOP/cpu-s"]))
    with open(f"{tmp}/torch.{r}.tsv") as f:
        for line in f:
            shape, pass_name, wall, cpu, _ = line.rstrip("\n").split("\t")
            keep_best(torch, (shape, pass_name), float(wall), float(cpu))

print(f"threads {threads}, best of {rounds} rounds; GFLOP/s")
print(f"{'shape':<20} {'pass':<16} {'wall: ours':>10} {'torch':>6} {'ratio':>5}"
      f"   {'cpu: ours':>9} {'torch':>6} {'ratio':>5}")
for key, (wall, cpu) in ours.items():
    t_wall, t_cpu = torch.get(key, [float("nan")] * 2)
    print(f"{key[0]:<20} {key[1]:<16} {wall:10.1f} {t_wall:6.1f} {wall / t_wall:5.2f}"
          f"   {cpu:9.1f} {t_cpu:6.1f} {cpu / t_cpu:5.2f}")
EOF
