#!/usr/bin/env bash
# The Python package's tests (docs/python.md): builds a wheel with `pip wheel .` (scikit-build-core,
# nanobind; its CMake build stays in build/python/ for the next run), installs it into a fresh
# venv with the test dependencies, and runs tests/python there, so the suite checks the package a
# user gets, not the source tree. Needs tools/build.sh first (the C++ reference of the
# bit-for-bit checks, build/tests/qsl-python-reference).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
build_dir="${BUILD_DIR:-build}"
wheels="$build_dir/python/wheels"
venv="$build_dir/python/venv"
rm -rf "$wheels" "$venv"
# The build dependencies are installed by tools/install-deps.sh: no isolated download per run.
"$python" -m pip wheel . --no-deps --no-build-isolation --wheel-dir "$wheels" \
  --config-settings=build-dir="$build_dir/python/cmake" --quiet
"$python" -m venv "$venv"
if ! "$venv/bin/python" -m pip install --quiet "$wheels"/qsl-*.whl pytest numpy onnx onnxruntime; then
  # Offline: a venv that sees the system's numpy, onnx, onnxruntime and pytest (install-deps.sh
  # put them there), with only the wheel installed into it.
  echo "qsl: no package index; the venv uses the system's test dependencies"
  rm -rf "$venv"
  "$python" -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install --quiet --no-deps --no-index "$wheels"/qsl-*.whl
fi
# From the tests' folder, so that `import qsl` can only find the installed package.
cd tests/python
QSL_PYTHON_REFERENCE="$(cd ../.. && pwd)/$build_dir/tests/qsl-python-reference" \
  timeout 1200 "../../$venv/bin/python" -m pytest -q -p no:cacheprovider .  # a hang fails
