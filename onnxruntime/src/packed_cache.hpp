#pragma once
// One packed copy per weight code, however many nodes read it: an exporter unrolls an LSTM
// into one Gemm per time step, all on the same weight, and qsl-compress turns each into a
// QuantizedMatMul on the same code tensors. Kernels of those nodes share the packed layout
// through this cache, keyed by the initializers' addresses (stable while the session that owns
// them lives) and the code's shape; an entry lives as long as a kernel holds it.
#include <cstdint>
#include <functional>
#include <memory>
#include <tuple>

#include "qsl/cpu.hpp"

namespace qsl::ort {

struct packed_key {
  const void* signs = nullptr;
  const void* coefficients = nullptr;
  const void* masks = nullptr;
  std::int64_t rows = 0, cols = 0, bits = 0, basis = 0, group_size = 0;
  bool byte_tables = false;  ///< with the table layout (add_encoded_layout: encoded activations)
  bool operator<(const packed_key& o) const {
    return std::tie(signs, coefficients, masks, rows, cols, bits, basis, group_size,
                    byte_tables) < std::tie(o.signs, o.coefficients, o.masks, o.rows, o.cols,
                                            o.bits, o.basis, o.group_size, o.byte_tables);
  }
};

/// What the nodes of one code share: its packed weights and, made by the first call that needs
/// them, its rows' int8 grids (int8_min_rows).
struct packed_layer {
  cpu_weights weights;
  cpu_int8_grids int8;
};

/// The packed layer for `key`: a live entry's, or one of `pack()`'s weights (which checks the
/// code and throws for a bad one; nothing is cached then).
std::shared_ptr<const packed_layer> shared_packed(const packed_key& key,
                                                  const std::function<cpu_weights()>& pack);

}  // namespace qsl::ort
