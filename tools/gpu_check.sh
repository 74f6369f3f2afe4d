#!/usr/bin/env bash
# Full verification of the CUDA backend on a lent GPU machine, in two halves.
#
#   tools/gpu_check.sh prepare   HERE (the build machine, no GPU needed):
#       configures and builds build-gpu (CUDA on, sm_90 code + compute_90 PTX),
#       then packs into .gpucheck/bundle.tar.xz the test and benchmark programs,
#       the non-CUDA shared libraries they load (OpenBLAS, libstdc++, GDCM, ...;
#       never cuDNN/cuBLAS, which are hundreds of MB and exist on the GPU
#       machine) and the small real-data folders the tests read.
#   tools/gpu_check.sh run       THERE (repository root on the GPU machine,
#       .gpucheck/ carried along): finds cuDNN/cuBLAS/cudart (system CUDA or
#       PyTorch's nvidia-* wheels), prints nvidia-smi, runs every test program
#       with COVIDRATE_DEVICE=cuda, compute-sanitizer memcheck (and racecheck)
#       over the parity test, the CUDA benchmarks and bench/torch_*_gpu.py
#       (kernels; the whole network's training step and inference), and a whole
#       volume through `covidrate segment --device cuda` (f32, bf16) beside
#       PyTorch's network over as many slices ($OUT/volume.txt).
#       Every step has its own timeout, a failure never stops the run, and the
#       whole half keeps within 8 minutes. Writes $OUT/summary.json,
#       $OUT/gpu_check.log and $OUT/volume.txt, the rest (benchmark JSON, ab.txt,
#       the op profile, cuDNN's choices) packed in $OUT/details.tgz: the device
#       tool brings back 8 files. Prints a table last, exits non-zero if a step
#       failed (77 when there is no GPU at all).
#   tools/gpu_check.sh exec CMD...  THERE: one command with the bundle's
#       programs (covidrate, tests, benches) on PATH and its libraries and data
#       set up as for `run`: training or timing the whole network on the GPU.
#
# Environment: GPU_CHECK_BUILD (build folder, default build-gpu), GPU_CHECK_JOBS
# (parallel build jobs, default 2), OUT (where results go, default .gpucheck/out),
# GPU_CHECK_TIME_LIMIT (seconds for the run half, default 470), GPU_CHECK_SKIP
# (a bash regex of step names not to run, e.g. 'kernels' when a rerun needs
# only what changed: device time is short).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BUNDLE=.gpucheck/bundle.tar.xz
# The GPU machine accepts 64 MiB in all: the tracked tree (the shipped weights
# alone are 29 MB) plus the bundle. prepare checks the sum.
MAX_TREE_BYTES=$(( 64 * 1048576 ))

# Data folders small enough to carry (about 6 MB together). The CT series
# (ct-covid-ricord, ct-healthy-tcga, ct-lungdx) and the 1600 unlabeled slices
# stay behind: tests that read them check file formats, not the GPU.
CARRIED_DATA=(README.md dicom-samples lung-masks-zenodo nifti-samples medseg-semiseg/train)
VOLUME=ct-covid-ricord-quarter  # the volume `segment` runs on there (see prepare)
LEFT_DATA_PATTERN='ct-covid-ricord|ct-healthy-tcga|ct-lungdx|unlabeled'
# Libraries the GPU machine supplies itself (its glibc, its driver, its CUDA libraries).
SYSTEM_LIBS='linux-vdso|ld-linux|/libc\.so|/libm\.so|/libdl\.so|/libpthread\.so|/librt\.so|libcuda\.so|libnvidia|libcudnn|libcublas|libcudart'

# The newest GLIBC_x.y symbol version the given files need ("2.34").
newest_glibc() {
  objdump -T "$@" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1
}
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$1" ]; }

# ============================================================================ prepare
prepare() {
  local build=${GPU_CHECK_BUILD:-build-gpu} jobs=${GPU_CHECK_JOBS:-2}
  local data=${COVIDRATE_DATA:-$ROOT/../shared/data}
  echo "== configure $build (CUDA on, sm_90 + PTX)"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOVIDRATE_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DCOVIDRATE_BENCH=ON >/dev/null || return 1
  echo "== build (-j$jobs)"
  ninja -C "$build" -j "$jobs" || return 1

  local stage=.gpucheck/stage
  rm -rf .gpucheck && mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-fallback" "$stage/data"
  local manifest=.gpucheck/manifest.txt
  {
    echo "built $(date -u +%FT%TZ) from $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+local changes')"
    echo "build folder: $build"
  } >"$manifest"

  local exe src
  # Every test program; of the benchmarks only the GPU ones (bench_cuda_*).
  for exe in "$build"/test_* "$build"/bench_cuda_* "$build"/covidrate; do
    [ -x "$exe" ] && [ -f "$exe" ] || continue
    src=$(ls tests/"$(basename "$exe")".cpp tests/cuda/"$(basename "$exe")".cpp bench/"$(basename "$exe")".cpp 2>/dev/null | head -1)
    if [ -n "$src" ] && grep -Eq "$LEFT_DATA_PATTERN" "$src"; then
      echo "not carried: $(basename "$exe") (reads CT data that stays here)" | tee -a "$manifest"
      continue
    fi
    # A test outside tests/cuda that never asks for a device runs on the CPU
    # there exactly as in CI: not worth its megabytes of the 64 MiB. So is one
    # that says so with the marker "gpu_check: CPU only": test_cli names a
    # device only to keep it out, test_cuda_library_loading checks the loader.
    if grep -q 'gpu_check: CPU only' "$src" ||
       { [[ "$src" == tests/test_*.cpp ]] && ! grep -Eq 'cuda|default_device|COVIDRATE_DEVICE' "$src"; }; then
      echo "not carried: $(basename "$exe") (CPU only, as in CI)" >>"$manifest"
      continue
    fi
    # Not stripped: symbols cost little and name the frames of a sanitizer report.
    cp "$exe" "$stage/bin/"
    echo "carried: $(basename "$exe")" >>"$manifest"
  done

  # Shared libraries of every carried program, minus what the GPU machine has.
  # Those that need a newer glibc than the programs themselves (Debian 12's
  # libstdc++ wants 2.36) go to lib-new-glibc/, used there only if its glibc
  # is new enough; otherwise the machine's own copies serve.
  local lib programs_glibc lib_glibc
  programs_glibc=$(newest_glibc "$stage"/bin/*)
  for lib in $(ldd "$stage"/bin/* 2>/dev/null | awk '/=>/ {print $3}' | sort -u | grep -Ev "$SYSTEM_LIBS"); do
    lib_glibc=$(newest_glibc "$lib")
    if version_ge "$programs_glibc" "$lib_glibc"; then
      cp -L "$lib" "$stage/lib/" && echo "library: $(basename "$lib")" >>"$manifest"
    else
      mkdir -p "$stage/lib-new-glibc"
      cp -L "$lib" "$stage/lib-new-glibc/" && echo "library: $(basename "$lib") (needs glibc $lib_glibc)" >>"$manifest"
    fi
  done
  echo "$programs_glibc" >"$stage/bin/GLIBC_NEEDED"
  [ -d "$stage/lib-new-glibc" ] && newest_glibc "$stage"/lib-new-glibc/* >"$stage/lib-new-glibc/GLIBC_NEEDED"
  # libcudart is 0.7 MB: carried as a last resort, searched after the machine's own.
  local cudart
  cudart=$(ldd "$stage"/bin/* 2>/dev/null | awk '/libcudart/ {print $3}' | sort -u | head -1)
  [ -n "$cudart" ] && cp -L "$cudart" "$stage/lib-fallback/"
  echo "the programs need glibc $programs_glibc or newer" >>"$manifest"

  local d
  for d in "${CARRIED_DATA[@]}"; do
    if [ -e "$data/$d" ]; then
      mkdir -p "$stage/data/$(dirname "$d")" && cp -rL "$data/$d" "$stage/data/$d"
      echo "data: $d" >>"$manifest"
    else
      echo "data missing here: $data/$d" | tee -a "$manifest"
    fi
  done

  # Every fourth slice of the RICORD series (64 of 255, 5 mm apart, ~13 MB): a
  # whole chest for `segment` on the GPU. The files' names (1-001.dcm ...)
  # follow the instance number, which follows z here, so the spacing stays even.
  # The tree and the bundle together must stay under the 64 MiB the GPU machine
  # accepts; when they would not, the volume is what gives: every fifth slice,
  # then every sixth ... (each try packs again, about a minute here).
  local every=${GPU_CHECK_VOLUME_EVERY:-4} bundle_bytes tree_bytes
  tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
  cp "$manifest" "$manifest.base"
  while :; do
    cp "$manifest.base" "$manifest"
    if [ -d "$data/ct-covid-ricord" ]; then
      rm -rf "${stage:?}/data/$VOLUME" && mkdir -p "$stage/data/$VOLUME"
      find "$data/ct-covid-ricord" -name '*.dcm' | sort |
        awk -v every="$every" '(NR - 1) % every == 0' | xargs -r cp -t "$stage/data/$VOLUME"
      echo "data: $VOLUME ($(ls "$stage/data/$VOLUME" | wc -l) slices of ct-covid-ricord, every ${every}th)" >>"$manifest"
    fi
    echo "== pack"
    # -9: 1.1 MiB smaller than -6 (27.8 -> 26.7 MiB, 2026-11-27) for 30 s more here.
    tar -C "$stage" -cf - . | xz -T"$jobs" -9 >"$BUNDLE" || return 1
    bundle_bytes=$(stat -c %s "$BUNDLE")
    [ $(( bundle_bytes + tree_bytes )) -lt "$MAX_TREE_BYTES" ] && break
    if [ ! -d "$data/ct-covid-ricord" ] || [ "$every" -ge 16 ]; then
      echo "error: bundle and tree are $(( (bundle_bytes + tree_bytes) / 1048576 )) MiB, over the $(( MAX_TREE_BYTES / 1048576 )) MiB the GPU machine accepts" >&2
      return 1
    fi
    every=$(( every + 1 ))
    echo "bundle and tree are $(( (bundle_bytes + tree_bytes) / 1048576 )) MiB, over $(( MAX_TREE_BYTES / 1048576 )): the volume takes every ${every}th slice"
  done
  rm -rf "$stage" "$manifest.base"
  echo "bundle: $BUNDLE, $(( bundle_bytes / 1048576 )) MiB; with the tree that travels $(( (bundle_bytes + tree_bytes) / 1048576 )) MiB ($(( (MAX_TREE_BYTES - bundle_bytes - tree_bytes) / 1024 )) KiB to spare)" | tee -a "$manifest"
  cat "$manifest"
  echo "ready: run 'tools/gpu_check.sh run' on the GPU machine with .gpucheck carried along"
}

# Whole volumes: `covidrate segment --device cuda` on the carried RICORD
# quarter, given as GPU_CHECK_VOLUME_COPIES (default 4) studies of one batch
# run: the first study pays for cuDNN's algorithm search and the allocator's
# first cudaMallocs, the later ones show the steady state of a server that
# segments study after study. In float32 and in bf16 (its cuDNN choices to
# $OUT/cudnn_choices.txt). The batch run starts from an empty algorithm cache
# file (kernels/algorithm_cache.h) and fills it; then one study is run again
# as a new process reading that file (fromfile-<precision>): what a second
# single-study run on the same machine costs. Beside PyTorch running the network over as many slices (bench/torch_volume.py: f32, tf32,
# eager bf16, AMP). Segment's outputs stay in .gpucheck; $OUT/volume.txt gets
# both sides' numbers and the ratios.
whole_volume() {
  local vol=$here/data/$VOLUME work=.gpucheck/volume precision slices i
  local copies=${GPU_CHECK_VOLUME_COPIES:-4}
  [ -d "$vol" ] || { record "whole volume" "skipped" null 0 0 0 1 "$VOLUME not in the bundle"; return 0; }
  slices=$(( $(ls "$vol" | wc -l) * copies ))
  rm -rf "$work" && mkdir -p "$work/studies"
  # Copies that differ in their StudyInstanceUID: plain copies of one series
  # are one study to segment (it merges a study's series folders and leaves
  # out the images they repeat), which made the 2026-11-28 run's batch one study.
  python3 tools/dev/distinct_studies.py "$vol" "$work/studies" "$copies" ||
    { record "whole volume" "failed" 1 0 0 1 0 "could not copy $VOLUME as $copies studies"; return 0; }
  local t0
  for precision in f32 bf16 bf16-release; do
    # bf16-release: bf16 with the device cache's rule (2) on (it frees smaller
    # cached blocks on a miss, and cudaFree waits for the device; off by default
    # since 2026-11-28): the A/B for the cudaMalloc count of warm studies
    # (device_system_allocations in each report) and their network phase.
    # Its cuDNN choices come from bf16's file: no second search.
    if [ "$precision" = bf16-release ]; then
      cp "$work/cudnn-bf16.tsv" "$work/cudnn-$precision.tsv" 2>/dev/null
      t0=$EPOCHREALTIME
      step "segment ${copies}x$VOLUME cuda bf16, cache rule 2 on" 90 plain env COVIDRATE_CUDA_RELEASE_ON_MISS=1 \
           COVIDRATE_CUDNN_CACHE="$work/cudnn-$precision.tsv" \
           "$here/bin/covidrate" segment "$work/studies" --out "$work/segment-$precision" --device cuda \
           --batch 16 --precision bf16
      python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$EPOCHREALTIME" \
        >"$work/segment-$precision.wall_s"
      continue
    fi
    t0=$EPOCHREALTIME
    step "segment ${copies}x$VOLUME cuda $precision" 120 plain env COVIDRATE_CUDNN_LOG=1 \
         COVIDRATE_CUDNN_CACHE="$work/cudnn-$precision.tsv" \
         "$here/bin/covidrate" segment "$work/studies" --out "$work/segment-$precision" --device cuda \
         --batch 16 --precision "$precision"
    # Its searches' log, now: the next step's output replaces step.out, and that
    # step reads its choices from the file, so it logs none.
    [ "$precision" = bf16 ] && [ -f .gpucheck/step.out ] &&
      grep -a -A12 '^cudnn' .gpucheck/step.out >"$OUT/cudnn_choices.txt"
    # The batch's wall time: with --prefetch (on with CUDA) studies overlap, so
    # their reports' totals (each study's own stages) add up to more.
    python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$EPOCHREALTIME" \
      >"$work/segment-$precision.wall_s"
    t0=$EPOCHREALTIME
    step "segment 1x$VOLUME cuda $precision, cuDNN choices from the file" 60 plain \
         env COVIDRATE_CUDNN_CACHE="$work/cudnn-$precision.tsv" \
         "$here/bin/covidrate" segment "$work/studies/study1" --out "$work/fromfile-$precision" --device cuda \
         --batch 16 --precision "$precision"
    python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$EPOCHREALTIME" \
      >"$work/fromfile-$precision.wall_s"
  done
  if command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then
    for precision in f32 tf32 bf16 amp; do
      step "torch_volume cuda $precision" 90 plain env -u LD_LIBRARY_PATH python3 bench/torch_volume.py \
           --device cuda --precision "$precision" --slices "$slices" --batch 16
      grep -a "^cuda" .gpucheck/step.out 2>/dev/null >>"$work/torch.tsv"
    done
  fi
  python3 bench/compare_volume_gpu.py "$work" >"$OUT/volume.txt" 2>&1
  tee -a "$LOG" <"$OUT/volume.txt"
}

# ============================================================================ run
START=$SECONDS
TIME_LIMIT=${GPU_CHECK_TIME_LIMIT:-470}   # the whole run half: under 8 minutes
RESERVE=10                               # kept for the summary
STEPS=()                                 # JSON objects, one per step
ROWS=()                                  # table rows
ANY_FAILED=0
GPU_SEEN=0                               # set once nvidia-smi has listed a GPU

log() { echo "$*" | tee -a "$LOG"; }

# record NAME STATUS RC SECONDS PASSED FAILED SKIPPED NOTE
record() {
  local note=${8//\"/\'}
  STEPS+=("{\"name\": \"$1\", \"status\": \"$2\", \"exit_code\": $3, \"seconds\": $4, \"passed\": $5, \"failed\": $6, \"skipped\": $7, \"note\": \"$note\"}")
  ROWS+=("$(printf '%-44s %-8s %5s %7ss  %s' "$1" "$2" "$3" "$4" "$note")")
  [ "$2" = failed ] && ANY_FAILED=1
  return 0
}

# step NAME TIMEOUT_S KIND COMMAND...   KIND: doctest | plain
# Runs COMMAND with its own timeout (cut to the time left), logs its output,
# and records passed/failed/skipped (doctest's own counts for doctest programs).
step() {
  local name=$1 limit=$2 kind=$3; shift 3
  rm -f .gpucheck/step.out   # a step not run leaves no output for a caller to pick up
  if [ -n "${GPU_CHECK_SKIP:-}" ] && [[ "$name" =~ $GPU_CHECK_SKIP ]]; then
    log "-- $name: not run, GPU_CHECK_SKIP matches it"
    record "$name" "skipped" null 0 0 0 1 "GPU_CHECK_SKIP"
    return 0
  fi
  local left=$(( TIME_LIMIT - RESERVE - (SECONDS - START) ))
  if [ "$left" -lt 15 ]; then
    log "-- $name: not run, the 8-minute budget is spent"
    record "$name" "not-run" null 0 0 0 0 "time budget spent"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "-- $name (timeout ${limit}s): $*"
  local out=.gpucheck/step.out t0=$SECONDS rc
  timeout --kill-after=5 "$limit" "$@" >"$out" 2>&1
  rc=$?
  cat "$out" >>"$LOG"
  tail -n 25 "$out"
  local secs=$(( SECONDS - t0 )) passed=0 failed=0 skipped=0 status note=""
  if [ "$kind" = doctest ]; then
    # "[doctest] test cases: 12 | 11 passed | 1 failed | 0 skipped"
    local line
    line=$(grep -a '^\[doctest\] test cases:' "$out" | tail -1)
    if [ -n "$line" ]; then
      passed=$(sed -E 's/.*\| *([0-9]+) passed.*/\1/' <<<"$line")
      failed=$(sed -E 's/.*\| *([0-9]+) failed.*/\1/' <<<"$line")
      skipped=$(sed -E 's/.*\| *([0-9]+) skipped.*/\1/' <<<"$line")
    fi
  fi
  if [ "$rc" -eq 0 ]; then
    status=passed
  elif [ "$rc" -eq 77 ] && [ "$GPU_SEEN" = 1 ]; then
    # nvidia-smi sees a GPU, yet the program could not use it (driver too old
    # for CUDA 13, a library missing): that is a failure of this check.
    status=failed; skipped=1; note="skipped although nvidia-smi sees a GPU: $(grep -a -m1 'SKIPPED' "$out" | cut -c1-80)"
  elif [ "$rc" -eq 77 ]; then
    status=skipped; skipped=1; note=$(grep -a -m1 'SKIPPED' "$out" | cut -c1-100)
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    status=failed; note="timed out after ${limit}s"
  else
    status=failed; note=$(grep -a -m1 -iE 'error|failed|fatal|not found' "$out" | cut -c1-100)
  fi
  record "$name" "$status" "$rc" "$secs" "${passed:-0}" "${failed:-0}" "${skipped:-0}" "$note"
}

# Prints the folders (one a line) holding a library, looking where NVIDIA's
# installers and PyTorch's wheels put them.
lib_dirs_for() {
  local soname=$1 d sp
  local candidates=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64
                    /usr/lib/x86_64-linux-gnu /usr/local/lib /opt/conda/lib)
  if command -v python3 >/dev/null; then
    for sp in $(python3 -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
      candidates+=("$sp"/nvidia/*/lib "$sp"/nvidia/*/lib64 "$sp"/torch/lib)
    done
  fi
  for d in "${candidates[@]}"; do
    [ -e "$d/$soname" ] && echo "$d"
  done
}

# Unpacks the bundle into .gpucheck/run and points LD_LIBRARY_PATH and
# COVIDRATE_DATA at what it holds. Sets `here`.
unpack_and_set_paths() {
  if [ ! -f "$BUNDLE" ]; then
    log "error: $BUNDLE is missing: run 'tools/gpu_check.sh prepare' on the build machine and carry .gpucheck"
    exit 1
  fi
  here=.gpucheck/run
  rm -rf "$here" && mkdir -p "$here"
  if command -v xz >/dev/null; then
    tar -C "$here" -xJf "$BUNDLE"
  else  # Python's lzma when the xz tool is absent
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$BUNDLE" "$here"
  fi || { log "error: cannot unpack $BUNDLE"; exit 1; }
  cat "$here/../manifest.txt" >>"$LOG" 2>/dev/null

  # Library path: the carried libraries first, then wherever cuDNN, cuBLAS and
  # cudart live here, then the carried cudart as a last resort.
  local path=$ROOT/$here/lib lib d glibc
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  log "glibc here: ${glibc:-unknown}; the programs need $(cat "$here/bin/GLIBC_NEEDED")"
  if [ -f "$here/lib-new-glibc/GLIBC_NEEDED" ]; then
    if version_ge "${glibc:-0}" "$(cat "$here/lib-new-glibc/GLIBC_NEEDED")"; then
      path=$path:$ROOT/$here/lib-new-glibc
    else
      log "glibc ${glibc:-unknown} is older than the carried libstdc++ needs: using this machine's own"
    fi
  fi
  for lib in libcudnn.so.9 libcublas.so.13 libcublasLt.so.13 libcudart.so.13; do
    d=$(lib_dirs_for "$lib" | head -1)
    if [ -n "$d" ]; then
      log "found $lib in $d"
      case ":$path:" in *":$d:"*) ;; *) path=$path:$d ;; esac
    else
      log "did not find $lib in the usual places"
    fi
  done
  export LD_LIBRARY_PATH=$path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:$ROOT/$here/lib-fallback
  export COVIDRATE_DATA=$ROOT/$here/data COVIDRATE_SOURCE=$ROOT
  # Each step searches cuDNN's algorithms itself, as on a fresh machine, not
  # from choices an earlier step left in ~/.cache; whole_volume sets its own file.
  export COVIDRATE_CUDNN_CACHE=off
  log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
}

# $OUT (created) and its log gpu_check.log (emptied): where run and exec write.
open_out() {
  OUT=${OUT:-$ROOT/.gpucheck/out}
  mkdir -p "$OUT"
  LOG=$OUT/gpu_check.log
  : >"$LOG"
}

run() {
  open_out
  log "gpu_check run, $(date -u +%FT%TZ), $(hostname)"
  unpack_and_set_paths

  local gpu=1
  if command -v nvidia-smi >/dev/null; then
    step "nvidia-smi" 30 plain nvidia-smi
    nvidia-smi -L >/dev/null 2>&1 || gpu=0
  else
    log "-- nvidia-smi: not installed"
    record "nvidia-smi" "skipped" null 0 0 0 1 "nvidia-smi not installed"
    gpu=0
  fi
  # Engine tests run on the GPU; without one they run on the CPU and the CUDA
  # tests report themselves skipped.
  [ "$gpu" = 1 ] && export COVIDRATE_DEVICE=cuda
  GPU_SEEN=$gpu
  # A missing library would fail every test the same way: say so once, plainly.
  local missing
  missing=$(ldd "$here"/bin/* 2>/dev/null | grep 'not found' | sort -u)
  if [ -n "$missing" ]; then
    log "unresolved libraries:"; log "$missing"
    record "libraries resolve" "failed" 1 0 0 1 0 "$(echo "$missing" | head -1 | xargs)"
  else
    record "libraries resolve" "passed" 0 0 1 0 0 ""
  fi

  local exe name limit
  for exe in "$here"/bin/test_*; do
    name=$(basename "$exe")
    # The parity test gets the most time: it times cuDNN's algorithms per shape.
    # test_inference_cuda segments the sample ten times, in five batch shapes
    # each searched by cuDNN once (38 s in the last run, with four).
    case "$name" in
      test_cuda_parity) limit=120 ;;
      test_inference_cuda) limit=150 ;;
      *) limit=90 ;;
    esac
    step "$name" "$limit" doctest "$exe"
  done
  # The TF32 path (cuDNN default math, cuBLAS TF32 tensor ops) once, in the runtime test.
  [ -x "$here/bin/test_cuda_runtime" ] &&
    step "test_cuda_runtime (COVIDRATE_TF32=1)" 60 doctest env COVIDRATE_TF32=1 "$here/bin/test_cuda_runtime"
  # The device cache's rule (2), off by default, once on (the allocator's test of it).
  [ -x "$here/bin/test_cuda_runtime" ] &&
    step "test_cuda_runtime (COVIDRATE_CUDA_RELEASE_ON_MISS=1)" 60 doctest env COVIDRATE_CUDA_RELEASE_ON_MISS=1 \
         "$here/bin/test_cuda_runtime"

  # The kernels that have not run on a GPU before (session 10: the direct
  # convolution, whose filter bank lives in shared memory, and the phases'
  # interleaving) under memcheck and racecheck now, in seconds: the whole-suite
  # sanitizer runs at the end may not fit the time left.
  local sanitizer_early
  sanitizer_early=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ "$gpu" = 1 ] && [ -n "$sanitizer_early" ] && [ -x "$here/bin/test_cuda_parity" ]; then
    local tool
    for tool in memcheck racecheck; do
      step "$tool: direct conv and interleave" 60 doctest env COVIDRATE_CUDNN_SEARCH=heuristic "$sanitizer_early" \
           --tool "$tool" --error-exitcode 1 --report-api-errors no "$here/bin/test_cuda_parity" \
           --test-case='*direct kernel*,*every op case*,*bf16 forward ops*' --subcase='conv2d*,interleave*'
    done
  fi

  for exe in "$here"/bin/bench_cuda_*; do
    [ -x "$exe" ] || continue
    name=$(basename "$exe")
    # 0.5 s per case: at 0.05 s the slow cases ran one iteration, too few to trust.
    step "$name" 90 plain env COVIDRATE_CUDNN_LOG=1 "$exe" --benchmark_min_time=0.5 \
         --benchmark_out="$OUT/$name.json" --benchmark_out_format=json
  done
  # The same under another cuDNN workspace cap (GPU_CHECK_WORKSPACE_MB, default
  # 1024: the cap before 2026-11-27), on the same machine: the new cap made bf16
  # inference 4x faster, and f32 training measured 93 -> 116 ms a step on two
  # machines, one iteration each. This A/B settles whether the cap did that.
  [ -x "$here/bin/bench_cuda_network" ] &&
    step "bench_cuda_network (workspace ${GPU_CHECK_WORKSPACE_MB:-1024} MiB)" 90 plain \
         env COVIDRATE_CUDNN_WORKSPACE_MB="${GPU_CHECK_WORKSPACE_MB:-1024}" \
         "$here/bin/bench_cuda_network" --benchmark_min_time=0.5 \
         --benchmark_out="$OUT/bench_cuda_network_ws.json" --benchmark_out_format=json
  # Our direct kernel for tiny filter banks (kernels/cuda/conv_direct.h) against
  # cuDNN for the same layers: the bf16 forward with it turned off.
  [ -x "$here/bin/bench_cuda_network" ] &&
    step "bench_cuda_network (direct conv off)" 60 plain env COVIDRATE_DIRECT_CONV=0 \
         "$here/bin/bench_cuda_network" --benchmark_filter='infer/w1/512/b16/bf16/' --benchmark_min_time=0.5 \
         --benchmark_out="$OUT/bench_cuda_network_cudnn_only.json" --benchmark_out_format=json
  # Where the bf16 forward's time goes, op by op (COVIDRATE_PROFILE, kernels/
  # op_profile.h: CUDA events around each dispatched op), for the case the
  # 1.5x aim is about; the table is the step's stderr.
  if [ -x "$here/bin/bench_cuda_network" ]; then
    step "op profile: bf16 inference" 60 plain env COVIDRATE_PROFILE=1 "$here/bin/bench_cuda_network" \
         --benchmark_filter='infer/w1/512/b16/bf16/' --benchmark_min_time=0.5
    [ -f .gpucheck/step.out ] && cp .gpucheck/step.out "$OUT/op_profile_infer_bf16.txt"
  fi
  local py ours
  for py in bench/torch_*_gpu.py; do
    [ -f "$py" ] || continue
    if command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then
      # torch_<x>_gpu.py compares itself with bench_cuda_<x>'s JSON when given it.
      ours=$OUT/bench_cuda_$(basename "$py" _gpu.py | sed 's/^torch_//').json
      # PyTorch loads its own cuDNN: the one our programs found may be older.
      if [ -f "$ours" ]; then
        step "$(basename "$py")" 180 plain env -u LD_LIBRARY_PATH python3 "$py" --covidrate-json "$ours"
      else
        step "$(basename "$py")" 180 plain env -u LD_LIBRARY_PATH python3 "$py"
      fi
      [ -f .gpucheck/step.out ] && cp .gpucheck/step.out "$OUT/$(basename "$py" .py).txt"
    else
      record "$(basename "$py")" "skipped" null 0 0 0 1 "no python3 with torch"
    fi
  done

  # The bf16 forward with each optimization on and off, beside PyTorch (ab.txt).
  if [ -f "$OUT/bench_cuda_network.json" ] && command -v python3 >/dev/null; then
    python3 tools/dev/gpu_ab.py "$OUT" 2>&1 | tee "$OUT/ab.txt" | tee -a "$LOG"
  fi

  [ "$gpu" = 1 ] && whole_volume

  # The memory checker after the timings: a slow or failing sanitizer must not
  # cost the numbers the issues ask for.
  local sanitizer
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ "$gpu" = 1 ] && [ -n "$sanitizer" ] && [ -x "$here/bin/test_cuda_parity" ]; then
    # API errors are not reported: cuDNN probes kernels with calls that may fail
    # by design. cuDNN's predicted ranking replaces timing every algorithm, which
    # is very slow under the sanitizer.
    step "memcheck test_cuda_parity" 150 doctest env COVIDRATE_CUDNN_SEARCH=heuristic "$sanitizer" \
         --tool memcheck --error-exitcode 1 --report-api-errors no "$here/bin/test_cuda_parity"
  else
    log "-- compute-sanitizer: not run (GPU: $gpu, sanitizer: ${sanitizer:-none})"
    record "compute-sanitizer" "skipped" null 0 0 0 1 "no GPU or no compute-sanitizer"
  fi


  # racecheck looks at shared memory: our kernels, not cuDNN's (conv cases left
  # out for time). Last, because it is the slowest and the least likely to fail.
  if [ "$gpu" = 1 ] && [ -n "$sanitizer" ] && [ -x "$here/bin/test_cuda_parity" ]; then
    step "racecheck test_cuda_parity (no conv)" 90 doctest env COVIDRATE_CUDNN_SEARCH=heuristic "$sanitizer" \
         --tool racecheck --error-exitcode 1 --report-api-errors no "$here/bin/test_cuda_parity" \
         --subcase-exclude='conv2d*,block*' --test-case-exclude='*layer size*,*direct kernel*'
  fi

  # The unpacked bundle (about 90 MB) goes: .gpucheck must stay small enough to
  # carry to a GPU machine after a dry run here.
  rm -rf "$here" .gpucheck/step.out .gpucheck/volume

  # summary.json and the table
  local total=$(( SECONDS - START ))
  {
    echo "{"
    echo "  \"gpu\": $([ "$gpu" = 1 ] && echo true || echo false),"
    echo "  \"seconds\": $total,"
    echo "  \"steps\": ["
    local i
    for i in "${!STEPS[@]}"; do
      printf '    %s%s\n' "${STEPS[$i]}" "$([ "$i" -lt $(( ${#STEPS[@]} - 1 )) ] && echo ,)"
    done
    echo "  ]"
    echo "}"
  } >"$OUT/summary.json"
  {
    echo
    printf '%-44s %-8s %5s %8s  %s\n' step status rc time note
    printf '%s\n' "${ROWS[@]}"
    echo "total ${total}s; results in $OUT (summary.json, gpu_check.log, volume.txt; the rest in details.tgz)"
  } | tee -a "$LOG"
  if [ "$gpu" = 0 ]; then
    log "NO GPU: the CUDA checks could not run here; the CPU tests ran on the CPU"
  fi
  pack_details
  [ "$gpu" = 0 ] && [ "$ANY_FAILED" = 0 ] && exit 77
  exit "$ANY_FAILED"
}

# The device tool brings back at most 8 files from $OUT: the benchmarks'
# JSON, the op profile, the cuDNN choices... go into details.tgz, beside the
# three files read first.
pack_details() {
  local keep='^\./(summary\.json|gpu_check\.log|volume\.txt|details\.tgz)$' files
  files=$(cd "$OUT" && find . -maxdepth 1 -type f | grep -Ev "$keep")
  [ -n "$files" ] || return 0
  # shellcheck disable=SC2086  # the names are the script's own, without spaces
  (cd "$OUT" && tar czf details.tgz $files && rm -f $files)
}

# Runs one command with the bundle's programs and libraries (training or timing
# the whole network on the GPU): tools/gpu_check.sh exec covidrate train ...
# The bundle's bin/ is put first on PATH.
exec_in_bundle() {
  open_out
  unpack_and_set_paths
  export PATH=$ROOT/$here/bin:$PATH
  "$@"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  exec) shift; exec_in_bundle "$@" ;;
  *) echo "usage: $0 prepare | run | exec COMMAND [ARGS...]" >&2; exit 2 ;;
esac
