#!/usr/bin/env bash
# Reads the machine code of the CUDA kernels without a GPU: compiles cuda/src/kernels.cu for
# one architecture and prints the SASS of the kernels whose mangled names match a pattern,
# with ptxas's register and spill report. What it showed (docs/cuda.md): loads the compiler
# had sunk to their use, 64-bit loop arithmetic, the instructions per table look-up.
#
#   tools/sass.sh 90 'float_gemvILi2ELb0ELb1E' > /tmp/lut_k2.sass     # lut_gemv, k = 2, binary
#   tools/sass.sh 75 wmma_gemm | grep -c HMMA
#
# The toolkit here has no cuobjdump; it and the nvdisasm it calls come from the PyPI wheels
# nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm, fetched once into .sass-tools/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: tools/sass.sh ARCH [KERNEL-PATTERN]}
pattern=${2:-.}
[[ $arch =~ ^[0-9]+$ ]] || { echo "tools/sass.sh: ARCH is a number such as 75 or 90, not '$arch'" >&2; exit 2; }
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
cuobjdump=.sass-tools/nvidia/cu13/bin/cuobjdump
if [[ ! -x $cuobjdump || ! -x .sass-tools/nvidia/cu13/bin/nvdisasm ]]; then
  rm -rf .sass-tools && mkdir -p .sass-tools
  python3 -m pip download --quiet --no-deps nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm \
    -d .sass-tools >&2
  for wheel in .sass-tools/*.whl; do python3 -m zipfile -e "$wheel" .sass-tools/; done
  chmod +x .sass-tools/nvidia/cu13/bin/*
fi
export NVDISASM_PATH=$PWD/.sass-tools/nvidia/cu13/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-std=c++17 "-arch=sm_$arch" --fmad=false --prec-div=true -Iinclude -Icuda/src)
"$nvcc" "${flags[@]}" -cubin cuda/src/kernels.cu -o "$work/k.cubin" -Xptxas -v 2> "$work/ptxas.txt"
# ptxas's report, one line per matching kernel: name, registers, spills.
awk -v pat="$pattern" '
  /Compiling entry function/ { name = $0; sub(/.*function ./, "", name); sub(/. for .*/, "", name); keep = name ~ pat }
  keep && /spill/ { spill = $0; sub(/^ */, "", spill) }
  keep && /Used [0-9]+ registers/ { match($0, /Used [0-9]+ registers/); print name ": " substr($0, RSTART, RLENGTH) ", " spill }
' "$work/ptxas.txt" >&2
"$cuobjdump" -sass "$work/k.cubin" | sed 's#/\* 0x[0-9a-f]* \*/##' | grep -v '^[[:space:]]*$' |
  awk -v pat="$pattern" '/Function :/ { keep = $0 ~ pat } keep'
