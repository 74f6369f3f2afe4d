#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole suite.
# On a machine without a GPU the CUDA tests report themselves as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${COVIDRATE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$(nproc)"
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 900
