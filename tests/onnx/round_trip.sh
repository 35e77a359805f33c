#!/usr/bin/env bash
# qsl-compress -> both formats -> ONNX Runtime: the standard-format model gives the outputs of
# the original graph with the weights decoded from the qsl-format model (check_standard_format.py).
#   round_trip.sh QSL_COMPRESS PYTHON MODELS_DIR WORK_DIR
set -euo pipefail
compress="$1" python="$2" models="$3" work="$4"
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$work"
mkdir -p "$work"
# binary 2 bits groups of 64; ternary 1 plane per row; 3 bits groups of 128 with a 4-bit edge;
# then codes the standard decoder splits into parts (tables of at most G / 4 levels): 4 bits in
# groups of 16 (two parts), ternary 3 planes in groups of 8 (three), 8 bits in groups of 64 (two)
configs=("--bits 2 --group 64" "--bits 1 --group 0 --basis ternary" "--bits 3 --group 128 --edge-bits 4"
         "--bits 4 --group 16" "--bits 3 --group 8 --basis ternary" "--bits 8 --group 64")
# What the standard decoding makes, in fp32 weights (standard_decoder.cpp): per part with C
# channels 3C/4 (unpacked uint8 bits: shifted, mod 2, reshaped) + 3 (int32 index, + offsets, the
# gathered floats), + 1 for a Sum of parts and for a Conv's final Reshape, plus the tables (levels
# per group / G, three tensors each) and the padding bits of the 27-column convolution.
#   1: 1.5 + 3 + conv                    2: 1.5 + 2 (no offsets: one group per row) + conv
#   3: 2.25 + 3 (3 planes), edges in 2 parts   4: 2 x (1.5 + 3) + 1 + conv
#   5: 3 x (1.5 + 3) + 1 + tables 3 x 3 x 3/8   6: 2 x (3 + 3) + 1 + tables 2 x 3 x 16/64
max_totals=(5.0 4.0 6.0 12.0 18.5 15.5)
i=0
for config in "${configs[@]}"; do
  i=$((i + 1))
  # The qsl-format file is the reference of the codes: every layer in a qsl operator
  # (--native-rows 0), none kept on ORT's own operator with the standard decoding.
  for format in qsl standard; do
    # shellcheck disable=SC2086 # the config is a list of options
    "$compress" "$models/layers.onnx" -o "$work/$i.$format.onnx" --format "$format" \
      --min-weights 100 --native-rows 0 -q $config > "$work/$i.$format.log"
  done
  echo "config $i: $config"
  "$python" "$here/check_standard_format.py" "$work/$i.qsl.onnx" "$work/$i.standard.onnx" \
    "$models/layers_input.npy" "${max_totals[$((i - 1))]}"
done
