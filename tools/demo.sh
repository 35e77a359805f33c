#!/usr/bin/env bash
# The main job: installs dependencies, builds Release and runs the demo, which compresses a
# random 1024 x 4096 layer at several settings and prints error, size and speed.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh --target qsl-demo
"${BUILD_DIR:-build}/examples/qsl-demo" "$@"
