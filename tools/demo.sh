#!/usr/bin/env bash
# The main job: installs what it needs, builds Release, then compresses the bundled
# Fashion-MNIST model at several settings and runs each on the 10,000 test images
# (tools/demo.py prints the table). Extra arguments go to tools/demo.py (e.g. --limit 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh --target qsl-compress qsl-run
python3 tools/demo.py --build "${BUILD_DIR:-build}" "$@"
