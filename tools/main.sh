#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs the main job.
# Until `covidrate segment` exists (issue 6) the main job is the engine
# demonstration: a tiny segmentation network trained with the hybrid loss.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${COVIDRATE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$(nproc)" --target covidrate
build/covidrate version
build/covidrate model --width 1 --size 512 || true
build/covidrate demo --out demo-out "$@"
