#!/usr/bin/env bash
# Installs every build and test dependency of covidrate from Debian 12's packages.
# Why each one is here is written in README.md ("Dependencies").
set -euo pipefail
pkgs=(
  cmake ninja-build g++ pkg-config   # build
  libopenblas-dev                    # sgemm/dgemm behind the CPU convolution fast path
  doctest-dev                        # unit tests
  libbenchmark-dev                   # bench/
  libgdcm-dev                        # DICOM decoding (JPEG Lossless, JPEG-LS, JPEG 2000, RLE)
  libstb-dev                         # PNG read and write, JPG never: see libjpeg
  libjpeg62-turbo-dev                # JPG read (libjpeg-turbo)
  zlib1g-dev                         # .nii.gz
)
if [ "${COVIDRATE_WITH_TORCH:-0}" = 1 ]; then
  pkgs+=(python3-torch python3-numpy)  # developer tools only: golden files, peer benchmarks
fi
if [ "${COVIDRATE_WITH_FUZZ:-0}" = 1 ]; then
  pkgs+=(clang libclang-rt-14-dev)     # fuzz/: libFuzzer and the sanitizers
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
