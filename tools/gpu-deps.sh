#!/usr/bin/env bash
# Stages, on this (Debian) machine, what tools/gpu-check.sh needs on the GPU machine, which has
# CMake, nvcc and compute-sanitizer but no Debian packages and no network: Eigen's headers,
# GoogleTest's sources, Google Benchmark (headers, shared library, CMake config), and for a
# prebuilt qsl-run (QSL_GPU_BUILD_ONLY) its ONNX and protobuf libraries and the Fashion-MNIST
# test images. The folder .gpu-deps/ is ignored by git; name it in the device tool's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
rm -rf .gpu-deps
mkdir -p .gpu-deps/usr/include .gpu-deps/usr/share .gpu-deps/usr/lib/x86_64-linux-gnu/cmake .gpu-deps/src
cp -r /usr/include/eigen3 .gpu-deps/usr/include/
cp -r /usr/share/eigen3 .gpu-deps/usr/share/
cp -r /usr/src/googletest .gpu-deps/src/
cp -r /usr/include/benchmark .gpu-deps/usr/include/
cp -a /usr/lib/x86_64-linux-gnu/libbenchmark*.so* /usr/lib/x86_64-linux-gnu/libbenchmark_main.a \
  .gpu-deps/usr/lib/x86_64-linux-gnu/
cp -r /usr/lib/x86_64-linux-gnu/cmake/benchmark .gpu-deps/usr/lib/x86_64-linux-gnu/cmake/
for lib in libonnx.so.1 libonnx_proto.so.1 libprotobuf.so.32; do
  cp -L "/usr/lib/x86_64-linux-gnu/$lib" .gpu-deps/usr/lib/x86_64-linux-gnu/
done
mkdir -p .gpu-deps/usr/share/datasets/fashion-mnist
cp /usr/share/datasets/fashion-mnist/t10k-* .gpu-deps/usr/share/datasets/fashion-mnist/
du -sh .gpu-deps
