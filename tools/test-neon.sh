#!/usr/bin/env bash
# The NEON (AArch64) kernels, cross-compiled with Debian's g++-aarch64-linux-gnu and tested under
# qemu-user: the Jetson's CPU path, checked on an x86 machine. Part of tools/test.sh.
# Runs the tests that exercise the CPU kernels and their inputs (the decomposition is the same
# portable code on every CPU and is tested natively).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${NEON_BUILD_DIR:-build-aarch64}"
tools/install-deps.sh --neon
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DQSL_GTEST_SOURCE_DIR=/usr/src/googletest \
  -DQSL_BUILD_BENCHMARKS=OFF -DQSL_BUILD_EXAMPLES=OFF -DQSL_INSTALL=OFF \
  -DQSL_WITH_CUDA=OFF -DQSL_WITH_ONNX=OFF
cmake --build "$build_dir" --parallel "$(nproc)" \
  --target cpu_kernels_test cpu_encoded_kernels_test bit_planes_test weight_code_test quantized_dense_test \
  float_gemm_test quantized_conv2d_test twd_test int8_products_test
ctest --test-dir "$build_dir" --output-on-failure --parallel "$(nproc)" \
  -R "^(EveryTarget/CpuKernels|EveryTarget/CpuEncodedKernels|EveryTarget/Int8Products|EveryTarget/FloatGemm|CpuTarget|BitPlanes|WeightCode|QuantizedDense|QuantizedConv2d|EveryTarget/TwdDense|TwdCode)"
