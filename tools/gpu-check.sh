#!/usr/bin/env bash
# The GPU check: configures for the GPU it finds, builds the CUDA tests and benchmarks, runs the
# tests, compute-sanitizer (memcheck) on them, and the benchmarks against cuBLAS; every log goes
# to OUTDIR. Meant for the device tool, after tools/gpu-deps.sh staged .gpu-deps/ here:
#   run(command="tools/gpu-check.sh $OUT", carry=[".gpu-deps"], timeout_s=540)
# or, cheaper in device time, with the programs built here first (docs/cuda.md):
#   QSL_GPU_BUILD_ONLY=90 tools/gpu-check.sh /tmp/gpu-build
#   run(command="QSL_GPU_PREBUILT=1 tools/gpu-check.sh $OUT", timeout_s=300, carry=[".gpu-deps",
#       "build-gpu/tests/cuda_test", "build-gpu/tests/cuda_row_math_test", "build-gpu/bench/cuda_bench",
#       "build-gpu/examples/qsl-run", "build-gpu/examples/qsl-cuda-example", "build-gpu/gpu-model"])
# Built here, the build includes qsl-run with ONNX and a compressed copy of the bundled model
# (build-gpu/gpu-model/), so that the device also runs the model end to end with
# --backend cuda beside --backend cpu (accuracy and time in OUTDIR/qsl_run_*.json).
# On an H200 (2026-11-26): build about 1.5 minutes, tests 16 s, memcheck 17 s; the benchmarks
# (54 cases at min_time 0.02) are expected to take 1-2 minutes (not yet timed at that setting).
# Steps that fail are logged and the script goes on; it exits non-zero if any did.
set -uo pipefail
out="${1:?usage: tools/gpu-check.sh OUTDIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
status=0
step() {  # step NAME COMMAND...: runs it, logging to OUTDIR/NAME.log
  local name="$1"
  shift
  echo "== $name: $*"
  if "$@" > "$out/$name.log" 2>&1; then echo "   ok"; else echo "   FAILED (see $name.log)"; status=1; fi
  tail -n 3 "$out/$name.log"
}
nvidia-smi > "$out/nvidia-smi.log" 2>&1 || true
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '.')
arch="${arch:-90}"
# QSL_GPU_BUILD_ONLY=ARCH (here, before calling the device): configure and build the three
# programs for compute capability ARCH into build-gpu/, then stop; see QSL_GPU_PREBUILT below.
arch="${QSL_GPU_BUILD_ONLY:-$arch}"
deps=()
if [ -d .gpu-deps ]; then
  export LD_LIBRARY_PATH="$PWD/.gpu-deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  deps=(-DCMAKE_PREFIX_PATH="$PWD/.gpu-deps/usr" -DEigen3_DIR="$PWD/.gpu-deps/usr/share/eigen3/cmake"
        -DQSL_GTEST_SOURCE_DIR="$PWD/.gpu-deps/src/googletest")
fi
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:${CUDA_HOME:-/usr/local/cuda}/lib64:${CUDA_HOME:-/usr/local/cuda}/lib"
# QSL_GPU_PREBUILT=1: the three programs were built beforehand for this card (same CPU
# architecture and CUDA version; the same configure line with CMAKE_CUDA_ARCHITECTURES set)
# and carried along as build-gpu/tests/cuda_test, build-gpu/tests/cuda_row_math_test and
# build-gpu/bench/cuda_bench: the device's minutes then go to the GPU work, not the compiler.
# If they do not start here, they are built as usual.
if [ -z "${QSL_GPU_BUILD_ONLY:-}" ] && [ "${QSL_GPU_PREBUILT:-0}" = 1 ] &&
    build-gpu/tests/cuda_row_math_test --gtest_list_tests \
    > /dev/null 2>&1 && build-gpu/tests/cuda_test --gtest_list_tests > /dev/null 2>&1; then
  echo "== prebuilt programs in build-gpu/: configure and build skipped"
else
  # Here (QSL_GPU_BUILD_ONLY) the Debian packages are installed: qsl-run is built too, with
  # ONNX. The device has no ONNX packages: there the examples are left out.
  onnx=OFF
  targets=(cuda_test cuda_row_math_test cuda_bench)
  if [ -n "${QSL_GPU_BUILD_ONLY:-}" ]; then onnx=ON; targets+=(qsl-run qsl-compress qsl-cuda-example); fi
  step configure cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DQSL_WITH_ONNX=$onnx -DQSL_BUILD_EXAMPLES=$onnx -DQSL_INSTALL=OFF -DQSL_BENCH_NATIVE=OFF "${deps[@]}"
  step build cmake --build build-gpu --parallel "$(nproc)" --target "${targets[@]}"
fi
if [ -n "${QSL_GPU_BUILD_ONLY:-}" ]; then
  mkdir -p build-gpu/gpu-model
  step compress build-gpu/examples/qsl-compress models/fashion_mnist_cnn.onnx \
    -o build-gpu/gpu-model/cnn_2bit_g128.onnx --bits 2 --group 128 -q --force
  exit $status
fi
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
step cuda_test build-gpu/tests/cuda_test
step cuda_row_math_test build-gpu/tests/cuda_row_math_test
step memcheck "$sanitizer" --tool memcheck --error-exitcode 1 build-gpu/tests/cuda_test \
  --gtest_filter='Cuda.LookUp*:Cuda.GemvsSplit*:Cuda.ForwardCanBeCaptured*:Cuda.Popcount*Integers:Cuda.Automatic*:Cuda.ForwardHost*:Cuda.TwdDense*:Cuda.HalfActivations*:Cuda.RepeatedCalls*:Cuda.EveryPlaneCount*'
# Each benchmark iteration times 20 calls and reports one call's time, and min_time counts
# reported time: 0.02 s of it is 0.4 s of GPU work per case (0.2 s made the run exceed 4
# minutes on an H200).
step cuda_bench build-gpu/bench/cuda_bench --benchmark_min_time=0.02 \
  --benchmark_out="$out/cuda_bench.json" --benchmark_out_format=json
# Issue 5's targets from that file (also runnable here afterwards on the fetched JSON).
if command -v python3 > /dev/null; then
  step targets python3 tools/cuda_targets.py "$out/cuda_bench.json"
  cat "$out/targets.log"
fi
if [ -x build-gpu/examples/qsl-cuda-example ]; then step cuda_example build-gpu/examples/qsl-cuda-example; fi
# The bundled model end to end (only where qsl-run and the model were carried): the same 2,000
# test images on the CPU and through qsl::cuda; the accuracies must agree to within a few
# images (the GPU adds in another order).
images=.gpu-deps/usr/share/datasets/fashion-mnist
if [ -x build-gpu/examples/qsl-run ] && [ -f build-gpu/gpu-model/cnn_2bit_g128.onnx ]; then
  for backend in cpu cuda; do
    step "qsl_run_$backend" build-gpu/examples/qsl-run build-gpu/gpu-model/cnn_2bit_g128.onnx \
      --images "$images/t10k-images-idx3-ubyte.gz" --labels "$images/t10k-labels-idx1-ubyte.gz" \
      --batch 64 --limit 2000 --backend "$backend" --json "$out/qsl_run_$backend.json"
  done
fi
exit $status
