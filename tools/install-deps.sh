#!/usr/bin/env bash
# Installs the Debian packages qsl builds with (Debian 12 or later). Idempotent: only missing
# packages are installed, and the package lists are refreshed only if an install fails.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libeigen3-dev                      # the library
  libgtest-dev libgmock-dev zlib1g-dev  # tests
  libbenchmark-dev                   # benchmarks
)
# --neon: the AArch64 cross compiler and qemu-user for tools/test-neon.sh
if [ "${1:-}" = "--neon" ]; then
  packages+=(g++-aarch64-linux-gnu qemu-user googletest)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "qsl: installing ${missing[*]}"
$sudo apt-get install -y --no-install-recommends "${missing[@]}" ||
  { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
