#!/usr/bin/env bash
# qsl-compress -> both formats -> ONNX Runtime: the standard-format model gives the outputs of
# the original graph with the weights decoded from the qsl-format model (check_standard_format.py).
#   round_trip.sh QSL_COMPRESS PYTHON MODELS_DIR WORK_DIR
set -euo pipefail
compress="$1" python="$2" models="$3" work="$4"
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
# binary 2 bits groups of 64; ternary 1 plane per row; 3 bits groups of 128 with a 4-bit edge
configs=("--bits 2 --group 64" "--bits 1 --group 0 --basis ternary" "--bits 3 --group 128 --edge-bits 4")
i=0
for config in "${configs[@]}"; do
  i=$((i + 1))
  for format in qsl standard; do
    # shellcheck disable=SC2086 # the config is a list of options
    "$compress" "$models/layers.onnx" -o "$work/$i.$format.onnx" --format "$format" \
      --min-weights 100 -q $config > "$work/$i.$format.log"
  done
  echo "config $i: $config"
  "$python" "$here/check_standard_format.py" "$work/$i.qsl.onnx" "$work/$i.standard.onnx" \
    "$models/layers_input.npy"
done
