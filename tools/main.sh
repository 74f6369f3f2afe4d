#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and segments the
# small real chest CT kept in examples/ricord-sample (8 slices of a COVID-19
# positive RICORD study) with the shipped weights. Results: out/ricord-sample/.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${COVIDRATE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$(nproc)" --target covidrate
rm -rf out/ricord-sample
build/covidrate segment examples/ricord-sample --out out/ricord-sample "$@"
echo "open out/ricord-sample/report.html (montage: most_affected.png, plot: infection_rate.png," \
     "mask: lesion_mask.nii.gz, figures: report.json)"
