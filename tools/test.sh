#!/usr/bin/env bash
# The test command: installs dependencies, builds Release, runs every test (C++ with CTest, then
# the Python package's from a wheel in a fresh venv); then cross-compiles
# the AArch64 (NEON) kernels and runs their tests under qemu-user (tools/test-neon.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --parallel "$(nproc)"
tools/test-python.sh  # the Python package: a wheel in a fresh venv, tests/python
tools/test-neon.sh
