#!/usr/bin/env bash
# Configures and builds qsl in Release (one build tree, reused by the demo and the tests).
# BUILD_DIR overrides the folder (default: build); extra arguments go to the build step.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build_dir" --parallel "$(nproc)" "$@"
