#!/usr/bin/env bash
# A whole CT volume through `covidrate segment` on the CPU, beside PyTorch running
# the same network over the same number of slices, same machine, same threads.
#
#   bench/compare_segment_cpu.sh BUILD_DIR [THREADS] [VOLUME] [BATCH]
#
# BUILD_DIR/covidrate must exist. THREADS defaults to the number of cores,
# VOLUME to ../shared/data/ct-covid-ricord (255 slices of 512 x 512), BATCH to 1
# (segment's default on the CPU) for both sides. Ours runs first, then PyTorch
# (bench/torch_volume.py, the independent network of tools/dev/make_model_golden.py,
# width 1, 512 x 512, float32, eager, eval + no_grad).
#
# The two sides do different amounts of work, on purpose: that is the comparison
# the issue asks for. Ours is the whole command: read the DICOM series, extract
# the lungs, run the network on the slices that hold lung only (RICORD: 205 of
# 255), with batch norm folded into the convolutions, write the masks, the
# pictures and the reports. PyTorch runs the network on every slice (it has no
# lung extraction) and reads or writes nothing. Columns:
#   slices/s       the volume's slices per second of wall time (255 / seconds)
#   net s/slice    network seconds per slice the network ran on: the engines alone
#   cpu s          process CPU time, all threads (less sensitive to other load)
#   peak MB        peak resident set of the whole process (ours: /usr/bin/time's
#                  maximum RSS; PyTorch: growth of the peak over the timed part)
set -euo pipefail

if [[ $# -lt 1 || ! -x "$1/covidrate" ]]; then
  echo "usage: $0 BUILD_DIR [THREADS] [VOLUME] [BATCH]   (BUILD_DIR/covidrate must exist)" >&2
  exit 2
fi
build=$1
threads=${2:-$(nproc)}
here=$(cd "$(dirname "$0")" && pwd)
volume=${3:-$here/../../shared/data/ct-covid-ricord}
batch=${4:-1}
[[ -e $volume ]] || { echo "$0: no volume at $volume" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Both libraries read these; pinning them keeps either side from using more threads.
export COVIDRATE_THREADS=$threads OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f '%e %U %S %M' -o "$tmp/ours.time" \
  "$build/covidrate" segment "$volume" --out "$tmp/ours" --device cpu --batch "$batch" >"$tmp/ours.log" 2>&1 \
  || { cat "$tmp/ours.log" >&2; exit 1; }
slices=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["input"]["size"][2])' "$tmp/ours/report.json")
/usr/bin/python3 "$here/torch_volume.py" --threads "$threads" --slices "$slices" --batch "$batch" >"$tmp/torch.tsv"
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

/usr/bin/python3 - "$tmp" "$threads" "$batch" <<'EOF'
import json, sys

tmp, threads, batch = sys.argv[1:4]
report = json.load(open(f"{tmp}/ours/report.json"))
timings = report["timings_s"]
wall, user, system, max_rss_kb = (float(v) for v in open(f"{tmp}/ours.time").read().split())
slices = report["input"]["size"][2]
with_lung = report["study_figures"]["slices_with_lung"]
_, _, t_slices, _, t_seconds, t_rate, t_cpu, t_peak = open(f"{tmp}/torch.tsv").read().split("\t")
t_seconds, t_cpu = float(t_seconds), float(t_cpu)

print(f"volume {report['input']['path']}: {slices} slices, {with_lung} with lung; "
      f"threads {threads}, batch {batch}, width 1, 512 x 512, float32")
print(f"ours: read {timings['read']:.1f} s, lungs {timings['lungs']:.1f} s, network {timings['network']:.1f} s, "
      f"write {timings['write']:.1f} s, whole command {wall:.1f} s wall")
print(f"{'':<28} {'slices/s':>9} {'net s/slice':>12} {'cpu s':>8} {'peak MB':>8}")
print(f"{'ours (whole segment command)':<28} {slices / wall:9.3f} {timings['network'] / with_lung:12.2f} "
      f"{user + system:8.0f} {max_rss_kb / 1024:8.0f}")
print(f"{'torch (network, every slice)':<28} {slices / t_seconds:9.3f} {t_seconds / slices:12.2f} "
      f"{t_cpu:8.0f} {float(t_peak):8.0f}")
print(f"ratio ours/torch: slices/s {t_seconds / wall:.2f}, network per slice "
      f"{(t_seconds / slices) / (timings['network'] / with_lung):.2f}, CPU time {t_cpu / (user + system):.2f} "
      f"(above 1: we are faster)")
EOF
