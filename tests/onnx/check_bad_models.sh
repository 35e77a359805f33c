#!/usr/bin/env bash
# Every model of the bad-model corpus makes qsl-compress exit with code 2, print the expected
# message, and write no output file.
#   check_bad_models.sh QSL_COMPRESS CORPUS_DIR WORK_DIR
set -uo pipefail
compress="$1" corpus="$2" work="$3"
rm -rf "$work"
mkdir -p "$work/models" "$work/outside" "$work/out"
cp "$corpus"/* "$work/models/"
# Real files the unsafe models point at, so that refusing them is the loader's doing:
head -c 32768 /dev/zero > "$work/secret.bin"            # ../secret.bin
head -c 32768 /dev/zero > "$work/outside/weights.bin"
ln -s ../outside/weights.bin "$work/models/link.bin"     # a symlink out of the folder
failures=0 count=0
while IFS=$'\t' read -r file fragment; do
  [ -z "$file" ] && continue
  count=$((count + 1))
  out="$work/out/${file%.onnx}.out.onnx"
  "$compress" "$work/models/$file" -o "$out" -q > "$work/out/$file.stdout" 2> "$work/out/$file.stderr"
  code=$?
  problem=""
  [ "$code" -eq 2 ] || problem="exit code $code, expected 2"
  grep -qF -- "$fragment" "$work/out/$file.stderr" || problem="$problem; message lacks '$fragment'"
  [ -e "$out" ] && problem="$problem; an output file was written"
  if ls "$work/out" | grep -q '\.tmp'; then problem="$problem; a temporary file was left"; fi
  if [ -n "$problem" ]; then
    echo "FAIL $file: $problem"
    sed 's/^/    /' "$work/out/$file.stderr"
    failures=$((failures + 1))
  else
    echo "ok   $file: $(cat "$work/out/$file.stderr")"
  fi
done < "$corpus/expected.txt"
echo "$count bad models, $failures failures"
[ "$count" -ge 20 ] && [ "$failures" -eq 0 ]
