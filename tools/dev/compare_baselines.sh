#!/usr/bin/env bash
# COVID-Rate against the paper's baselines (its Table 4), measured here: every
# architecture trained by 5-fold cross-validation on the same folds of the 50
# MedSeg slices, each fold's best weights scored by `covidrate eval` on that
# fold's validation slices at their own resolution, every slice validated once.
#
#   tools/dev/compare_baselines.sh BUILD OUT [SIZE] [WIDTH] [EPOCHS] [PATIENCE]
#
# Defaults: size 128, width 0.25, 80 epochs, patience 15 (a CPU budget: about
# an hour on 2 cores). Rerunning resumes: a finished fold is not trained again
# (train --resume), and each fold's eval.json is kept once written.
# Ends with tools/dev/baseline_table.py OUT: the table of docs/model.md.
set -euo pipefail

build=${1:?usage: compare_baselines.sh BUILD OUT [SIZE] [WIDTH] [EPOCHS] [PATIENCE]}
out=${2:?usage: compare_baselines.sh BUILD OUT [SIZE] [WIDTH] [EPOCHS] [PATIENCE]}
size=${3:-128}
width=${4:-0.25}
epochs=${5:-80}
patience=${6:-15}
here=$(cd "$(dirname "$0")/../.." && pwd)
data=${COVIDRATE_DATA:-$here/../shared/data}/medseg-semiseg/train
program=$build/covidrate
[ -x "$program" ] || { echo "compare_baselines: $program is missing (build the covidrate target)" >&2; exit 1; }
[ -d "$data/images" ] || { echo "compare_baselines: $data/images is missing" >&2; exit 1; }
folds=5

# name: the arguments that pick the architecture (the paper's name in baseline_table.py)
variants=(
  "covid-rate:--arch covid-rate"
  "unet:--arch unet"
  "attention-unet:--arch attention-unet"
  "unet-plus-plus:--arch unet++"
  "residual-unet-cpb:--no-se"
  "covid-rate-no-cpb:--no-cpb"
  # COVID-Rate with as many parameters as the U-Net at the chosen width (0.375
  # against U-Net's 0.25: 2.03 M and 2.16 M): capacity apart from architecture.
  "covid-rate-wider:--arch covid-rate --width $(awk "BEGIN { print $width * 1.5 }")"
)
if [ -n "${VARIANTS:-}" ]; then  # e.g. VARIANTS="unet covid-rate"
  chosen=()
  for v in "${variants[@]}"; do
    for want in $VARIANTS; do [ "${v%%:*}" = "$want" ] && chosen+=("$v"); done
  done
  variants=("${chosen[@]}")
fi

mkdir -p "$out"
for v in "${variants[@]}"; do
  name=${v%%:*}
  args=${v#*:}
  dir=$out/$name
  resume=()
  [ -d "$dir" ] && resume=(--resume)
  echo "== $name ($args): $folds folds, size $size, width $width, $epochs epochs, patience $patience"
  # shellcheck disable=SC2086  # $args is a list of options
  # The variant's own options come last: its --width wins. --decay 1e-5: the
  # schedule the table in docs/model.md was measured with (train's default then).
  "$program" train --images "$data/images" --masks "$data/masks" --out "$dir" --width "$width" \
    --size "$size" --epochs "$epochs" --patience "$patience" --folds "$folds" --seed 1 --decay 1e-5 $args "${resume[@]}" \
    > "$dir.train.log" 2>&1 || { echo "compare_baselines: training $name failed, see $dir.train.log" >&2; exit 1; }
  for k in $(seq 1 $folds); do
    fold=$dir/fold-$k
    [ -s "$fold/eval.json" ] && continue
    # The fold's validation slices, as folders eval can read.
    rm -rf "$fold/val"
    mkdir -p "$fold/val/images" "$fold/val/masks"
    python3 - "$fold/split.json" "$data" "$fold/val" <<'EOF'
import json, os, sys
split, data, val = sys.argv[1:4]
for stem in json.load(open(split))["validation"]:
    for sub, ext in (("images", ".jpg"), ("masks", ".png")):
        os.symlink(os.path.join(data, sub, stem + ext), os.path.join(val, sub, stem + ext))
EOF
    "$program" eval --weights "$fold/best.safetensors" --images "$fold/val/images" --masks "$fold/val/masks" \
      --json "$fold/eval.json" 2> "$fold/eval.log"
  done
  tail -n 9 "$dir.train.log"
done
python3 "$here/tools/dev/baseline_table.py" "$out"
