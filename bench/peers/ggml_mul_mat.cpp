// Times ggml's CPU MUL_MAT (y = W x for BATCH vectors, default 1) for one weight type, so that
// bench/peer_gemv.py can put it beside qsl's kernels in the same run. Built by that script
// against a ggml build the user points it at (no ggml code or binary is part of qsl).
//
//   ggml_mul_mat TYPE N D MATRICES CALLS THREADS [BATCH]   (TYPE: tq2_0, q2_K, q4_0, f32)
//
// MATRICES weight tensors of N x D are quantized from the same N(0, 1) values and used in
// turn (1: cache-resident; enough to exceed the L3: streaming, as a model's layers are).
// Prints one line: "<microseconds per call> <bytes of one weight tensor>".
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ggml-cpu.h"
#include "ggml.h"

int main(int argc, char** argv) {
  if (argc != 7 && argc != 8) {
    std::fprintf(stderr, "usage: %s TYPE N D MATRICES CALLS THREADS [BATCH]\n", argv[0]);
    return 2;
  }
  const long batch = argc == 8 ? std::atol(argv[7]) : 1;
  const std::string name = argv[1];
  const long n = std::atol(argv[2]), d = std::atol(argv[3]);
  const int matrices = std::atoi(argv[4]), calls = std::atoi(argv[5]),
            threads = std::atoi(argv[6]);
  ggml_type type;
  if (name == "tq2_0") type = GGML_TYPE_TQ2_0;
  else if (name == "q2_K") type = GGML_TYPE_Q2_K;
  else if (name == "q4_0") type = GGML_TYPE_Q4_0;
  else if (name == "f32") type = GGML_TYPE_F32;
  else {
    std::fprintf(stderr, "unknown type %s\n", name.c_str());
    return 2;
  }
  const size_t row_bytes = ggml_row_size(type, d);
  const size_t weight_bytes = row_bytes * static_cast<size_t>(n);
  ggml_init_params params{};
  params.mem_size = weight_bytes * matrices + static_cast<size_t>(d + n) * 8 * matrices * batch +
                    ggml_tensor_overhead() * (3 * matrices + 8) + ggml_graph_overhead() * matrices +
                    (1u << 20);
  ggml_context* ctx = ggml_init(params);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> values(static_cast<size_t>(n * d));
  for (float& v : values) v = normal(rng);
  ggml_tensor* x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, d, batch);  // BATCH vectors
  for (long i = 0; i < d * batch; ++i) static_cast<float*>(x->data)[i] = normal(rng);
  std::vector<ggml_cgraph*> graphs;
  for (int m = 0; m < matrices; ++m) {
    ggml_tensor* w = ggml_new_tensor_2d(ctx, type, d, n);
    if (type == GGML_TYPE_F32)
      std::memcpy(w->data, values.data(), weight_bytes);
    else
      ggml_quantize_chunk(type, values.data(), w->data, 0, n, d, nullptr);
    ggml_cgraph* graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, ggml_mul_mat(ctx, w, x));
    graphs.push_back(graph);
  }
  // One plan per graph, with its work buffer (the quantized activations) allocated once.
  std::vector<ggml_cplan> plans;
  std::vector<std::vector<uint8_t>> work(graphs.size());
  for (size_t i = 0; i < graphs.size(); ++i) {
    plans.push_back(ggml_graph_plan(graphs[i], threads, nullptr));
    work[i].resize(plans[i].work_size + 64);
    plans[i].work_data = work[i].data();
  }
  for (size_t i = 0; i < graphs.size(); ++i) ggml_graph_compute(graphs[i], &plans[i]);  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int c = 0; c < calls; ++c) ggml_graph_compute(graphs[c % matrices], &plans[c % matrices]);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%.3f %zu\n", seconds / calls * 1e6, weight_bytes);
  ggml_free(ctx);
  return 0;
}
