#!/usr/bin/env bash
# Redraws every picture of docs/data.md into docs/img from the real data, with
# the covidrate commands (lungs, synth) and, to put several inputs side by side
# and halve the result, the developer tool covidrate_tile_png (tools/dev/tile_png.cpp).
#
#   tools/dev/make_data_figures.sh [BUILD_DIR]     (default: build)
#
# Needs the targets covidrate and covidrate_tile_png built in BUILD_DIR and the
# data of ../shared/data (or $COVIDRATE_DATA). Takes about half a minute.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$repo/build}" && pwd)
data=${COVIDRATE_DATA:-$repo/../shared/data}
covidrate=$build/covidrate
tile=$build/covidrate_tile_png
img=$repo/docs/img
for program in "$covidrate" "$tile"; do
  [[ -x $program ]] || { echo "missing $program: build the covidrate and covidrate_tile_png targets" >&2; exit 1; }
done
[[ -d $data/lung-masks-zenodo ]] || { echo "no data in $data: set COVIDRATE_DATA" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export COVIDRATE_DATA=$data

# lungs NAME INPUT [lungs options]: extraction of INPUT into $work/NAME, its
# numbers on stdout so that the figures' captions can be checked against them.
lungs() {
  local name=$1 input=$2
  shift 2
  echo "== lungs $name" >&2
  "$covidrate" lungs "$input" --out "$work/$name" "$@" >&2
}

medseg=$data/medseg-semiseg/train
zenodo=$data/lung-masks-zenodo

# 1. The input domain: a MedSeg picture and a TCGA slice mapped through the window.
lungs medseg25 "$medseg/images/25.jpg"
lungs tcga24 "$data/ct-healthy-tcga" --slices 24
"$tile" --out "$img/domain_side_by_side.png" --shrink 2 \
  "$work/medseg25/lungs_overlay.png" "$work/tcga24/lungs_overlay.png"

# 2. Against expert lung masks (Zenodo 3757476): ours green/blue, expert yellow/magenta.
for case in coronacases_001_slice_98 radiopaedia_14_85914_0_slice_0 coronacases_008_slice_26; do
  lungs "$case" "$zenodo/${case}_ct.nii.gz" --reference "$zenodo/${case}_lungs.nii.gz"
done
"$tile" --out "$img/lungs_zenodo.png" --shrink 2 "$work/coronacases_001_slice_98/lungs_overlay.png" \
  "$work/radiopaedia_14_85914_0_slice_0/lungs_overlay.png" "$work/coronacases_008_slice_26/lungs_overlay.png"

# 3. Whole series: RICORD (COVID) on six slices (shrunk by 3 to stay under 400 KB), TCGA (healthy) on four.
lungs ricord "$data/ct-covid-ricord"
"$tile" --out "$img/lungs_ricord.png" --shrink 3 "$work/ricord/lungs_overlay.png"
lungs tcga "$data/ct-healthy-tcga" --tiles 4
"$tile" --out "$img/lungs_tcga.png" --shrink 2 "$work/tcga/lungs_overlay.png"

# 4. MedSeg training pictures with their expert lesion masks (red): two with
# scattered lesions, one whose posterior consolidation the dent step takes back
# (35) and the remaining limit, consolidation reaching past the aerated lung (23).
medseg_tiles=()
for n in 0 25 35 23; do
  lungs "medseg$n-lesions" "$medseg/images/$n.jpg" --lesions "$medseg/masks/$n.png"
  medseg_tiles+=("$work/medseg$n-lesions/lungs_overlay.png")
done
"$tile" --out "$img/lungs_medseg.png" --shrink 2 --columns 2 "${medseg_tiles[@]}"

# 5. Synthetic lesion insertion: the command's own overview, halved.
echo "== synth" >&2
"$covidrate" synth --ratio 2 --seed 3 --out "$work/synth" >&2
"$tile" --out "$img/synth_overview.png" --shrink 2 "$work/synth/overview.png"

ls -l "$img"
