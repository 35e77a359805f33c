// The standard format's decoder: standard ONNX operators (opset >= 11) that rebuild a weight from
// its planes and coefficients, laid out so that a runtime folding them into a constant (ONNX
// Runtime does, at session creation) never holds more than a few bytes per weight.
//
// ONNX Runtime keeps every folded intermediate until the whole graph is folded, so what counts
// is the sum of the intermediates, not the largest: a float ±1 tensor per plane and a batched
// MatMul (the first decoder) cost ~18 floats per weight, and a 22 M-parameter model took 5x the
// memory of its fp32 original. This decoder goes through a level index instead:
//
//   planes uint8 [rows, K, ceil(cols/8)]        K = k sign planes (+ k masks when ternary)
//     -> BitShift, Mod 2                        one uint8 bit per weight and channel
//     -> MatMulInteger with digit weights       q = sum_j 2^j b_j (binary) or
//                                                   sum_j 3^j (s_j + z_j) (ternary), int32
//     -> + the column's group offset            index into the row's table of levels
//     -> GatherElements from the level table    the weight, float
//
// The table, levels[row][group][q] = sum_j alpha_j value_j(q), is a MatMul of the coefficients
// with a constant [k, levels] matrix. Planes are split into parts, each unpacked, indexed and
// looked up on its own and then summed, so that each part's unpacked bits (at most 4 channels)
// and its table (at most a quarter of the group's weights) stay within the fp32 weight's size:
// no intermediate is larger than the weight (int32 indices, float parts), and the transposes
// happen on the packed bytes. docs/design.md has the measured memory.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "onnx/writer.hpp"

namespace qsl::onnx::detail {
namespace {

// Values one plane contributes: binary {-1, +1}; ternary digit t = sign + mask: 0 -> 0,
// 1 -> -1, 2 -> +1 (signs are canonical: no sign bit under a zero mask bit).
int levels_per_plane(qsl::basis b) { return b == qsl::basis::ternary ? 3 : 2; }
float digit_value(qsl::basis b, int digit) {
  if (b == qsl::basis::binary) return digit == 0 ? -1.0f : 1.0f;
  return digit == 0 ? 0.0f : (digit == 1 ? -1.0f : 1.0f);
}

// Columns the unpacked bits of a row hold: whole bytes, except a row of fewer than 8 columns,
// which is unpacked by exactly `cols` shifts.
std::int64_t unpacked_cols(std::int64_t cols) { return cols < 8 ? cols : (cols + 7) / 8 * 8; }

// Planes per part: as many as keep
//  * the part's unpacked bits (one uint8 per weight and channel: its signs, and its masks when
//    ternary) within the fp32 weight's bytes (at most 4 channels, fewer when padding bits add);
//  * its table of levels (levels^p per group) within a quarter of the group's weights;
//  * its digit weights (levels^(p-1)) within uint8.
int planes_per_part(const weight_code& code) {
  const int n = levels_per_plane(code.basis);
  const int per_plane = code.basis == qsl::basis::ternary ? 2 : 1;  // channels
  int channels = 4;
  while (channels > per_plane && channels * unpacked_cols(code.cols) > 4 * code.cols) --channels;
  const int max_planes = std::min(channels / per_plane, code.basis == qsl::basis::ternary ? 6 : 8);
  const std::int64_t budget = std::max<std::int64_t>(n, code.group_size / 4);
  int p = 1;
  std::int64_t levels = n;
  while (p < code.bits && p < max_planes && levels * n <= budget) {
    ++p;
    levels *= n;
  }
  return p;
}

std::int64_t power(std::int64_t base, int exponent) {
  std::int64_t r = 1;
  for (int i = 0; i < exponent; ++i) r *= base;
  return r;
}

void add_ints_attribute(pb::NodeProto& n, const char* name, const std::vector<std::int64_t>& v) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(pb::AttributeProto::INTS);
  for (std::int64_t x : v) a->add_ints(x);
}

}  // namespace

// Bits of `packed` ([rows, channels, bytes] uint8) as one uint8 per weight and channel:
// [rows, channels, cols] (as_is) or [cols, channels, rows] (transposed), the shapes
// MatMulInteger contracts over the channels.
std::string graph_writer::unpack_bits(const std::string& packed, const weight_code& code,
                                      int channels, weight_layout layout) {
  const std::string p = packed + "_bits";
  const std::int64_t rows = code.rows, cols = code.cols, bytes = (cols + 7) / 8;
  const bool transposed = layout == weight_layout::transposed;
  std::string x = packed;
  if (transposed) {  // on the packed bytes, an eighth of the unpacked size per channel
    const std::string t = unique(p + "_transposed");
    add_ints_attribute(node("Transpose", {x}, t), "perm", {2, 1, 0});
    x = t;
  }
  const std::string split = unique(p + "_split");
  node("Reshape",
       {x, int64s(p + "_shape_split", transposed
                                          ? std::vector<std::int64_t>{bytes, 1, channels, rows}
                                          : std::vector<std::int64_t>{rows, channels, bytes, 1})},
       split);
  const std::int64_t per_byte = std::min<std::int64_t>(8, cols);  // bits unpacked per byte
  const std::string shifts =
      shared("shifts_" + std::to_string(per_byte) + (transposed ? "_rows" : ""), [&] {
        const std::uint8_t s[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        return make_uint8_tensor("qsl_bit_shifts" + std::string(transposed ? "_rows" : ""),
                                 transposed ? std::vector<std::int64_t>{1, per_byte, 1, 1}
                                            : std::vector<std::int64_t>{per_byte},
                                 s);
      });
  const std::string shifted = unique(p + "_shifted");
  auto& shift = node("BitShift", {split, shifts}, shifted);
  auto* direction = shift.add_attribute();
  direction->set_name("direction");
  direction->set_type(pb::AttributeProto::STRING);
  direction->set_s("RIGHT");
  const std::string bits = unique(p + "_mod");
  node("Mod",
       {shifted, shared("two_u8",
                        [] {
                          const std::uint8_t two = 2;
                          return make_uint8_tensor("qsl_two_u8", {}, &two);
                        })},
       bits);
  std::string flat = unique(p + "_flat");
  node("Reshape",
       {bits, int64s(p + "_shape_flat",
                     transposed ? std::vector<std::int64_t>{bytes * per_byte, channels, rows}
                                : std::vector<std::int64_t>{rows, channels, bytes * per_byte})},
       flat);
  if (bytes * per_byte != cols) {  // the padding bits of the last byte
    const std::string cut = unique(p + "_cut");
    node("Slice",
         {flat, int64s(p + "_start", {0}), int64s(p + "_end", {cols}),
          int64s(p + "_axis", {transposed ? 0 : 2})},
         cut);
    flat = cut;
  }
  return flat;
}

// The levels of planes [first, first + planes) for every row and group: [rows, groups * L]
// (as_is) or [groups * L, rows] (transposed), L = levels_per_plane^planes.
std::string graph_writer::level_table(const weight_code& code, const std::string& coefficients,
                                      int first, int planes, weight_layout layout) {
  const int n = levels_per_plane(code.basis);
  const std::int64_t levels = power(n, planes);
  const std::string p = coefficients + "_levels" + std::to_string(first);
  std::string alpha = coefficients;
  if (planes < code.bits) {
    alpha = unique(p + "_alpha");
    node("Slice",
         {coefficients, int64s(p + "_start", {first}), int64s(p + "_end", {first + planes}),
          int64s(p + "_axis", {3})},
         alpha);
  }
  // values[i][q] = value of digit i of q (base n): the table is alpha [.., 1, planes] @ values.
  const std::string key = "values_" + std::to_string(n) + "_" + std::to_string(planes);
  const std::string values = shared(key, [&] {
    std::vector<float> v(static_cast<std::size_t>(planes * levels));
    for (int i = 0; i < planes; ++i)
      for (std::int64_t q = 0; q < levels; ++q)
        v[static_cast<std::size_t>(i * levels + q)] =
            digit_value(code.basis, static_cast<int>(q / power(n, i) % n));
    return make_float_tensor("qsl_level_" + key, {planes, levels}, v.data());
  });
  const std::string table = unique(p + "_table");
  node("MatMul", {alpha, values}, table);  // [rows, groups, 1, levels]
  const std::string flat = unique(p + "_flat");
  node("Reshape", {table, int64s(p + "_shape", {code.rows, code.groups() * levels})}, flat);
  if (layout != weight_layout::transposed) return flat;
  const std::string t = unique(p + "_transposed");
  add_ints_attribute(node("Transpose", {flat}, t), "perm", {1, 0});
  return t;
}

void graph_writer::decode_standard(const std::string& weight,
                                   const std::vector<std::int64_t>& shape, weight_layout layout,
                                   const weight_code& code, const std::string& signs,
                                   const std::string& masks, const std::string& half_or_float) {
  const std::string coefficients = float_coefficients(half_or_float);
  const bool ternary = code.basis == qsl::basis::ternary;
  const bool transposed = layout == weight_layout::transposed;
  const int k = code.bits;
  const int n = levels_per_plane(code.basis);
  const std::string p = weight + "_qsl";
  const int per_part = planes_per_part(code);
  std::vector<std::string> parts;
  for (int first = 0; first < k; first += per_part) {
    const int planes = std::min(per_part, k - first);
    const int channels = ternary ? 2 * planes : planes;
    const std::int64_t levels = power(n, planes);
    // The part's planes, packed: its signs, then (ternary) its masks.
    auto planes_of = [&](const std::string& all) {
      if (planes == k) return all;
      const std::string part = unique(all + "_" + std::to_string(first));
      node("Slice",
           {all, int64s(p + "_start", {first}), int64s(p + "_end", {first + planes}),
            int64s(p + "_axis", {1})},
           part);
      return part;
    };
    std::string packed = planes_of(signs);
    if (ternary) {
      const std::string both = unique(p + "_planes" + std::to_string(first));
      add_int_attribute(node("Concat", {packed, planes_of(masks)}, both), "axis", 1);
      packed = both;
    }
    const std::string bits = unpack_bits(packed, code, channels, layout);
    // The digit weights: n^i for the part's plane i (its sign, and its mask when ternary).
    const std::string key = "digits_" + std::to_string(n) + "_" + std::to_string(planes);
    const std::string digits = shared(key, [&] {
      std::vector<std::uint8_t> w(static_cast<std::size_t>(channels), 0);
      for (int i = 0; i < planes; ++i) {
        const auto weight_i = static_cast<std::uint8_t>(power(n, i));
        w[static_cast<std::size_t>(i)] = weight_i;
        if (ternary) w[static_cast<std::size_t>(planes + i)] = weight_i;
      }
      return make_uint8_tensor("qsl_" + key, {channels}, w.data());
    });
    std::string index = unique(p + "_index" + std::to_string(first));
    node("MatMulInteger", {digits, bits}, index);  // int32 [rows, cols] or [cols, rows]
    if (code.groups() > 1) {                       // + levels * (the column's group)
      const std::string offsets_key = "offsets_" + std::to_string(code.cols) + "_" +
                                      std::to_string(code.group_size) + "_" +
                                      std::to_string(levels) + (transposed ? "_t" : "");
      const std::string offsets = shared(offsets_key, [&] {
        std::vector<std::int32_t> o(static_cast<std::size_t>(code.cols));
        for (std::int64_t c = 0; c < code.cols; ++c)
          o[static_cast<std::size_t>(c)] =
              static_cast<std::int32_t>(levels * (c / code.group_size));
        return make_int32_tensor("qsl_level_" + offsets_key,
                                 transposed ? std::vector<std::int64_t>{code.cols, 1}
                                            : std::vector<std::int64_t>{1, code.cols},
                                 o.data());
      });
      const std::string grouped = unique(p + "_grouped" + std::to_string(first));
      node("Add", {index, offsets}, grouped);
      index = grouped;
    }
    const std::string part = unique(p + "_part" + std::to_string(first));
    add_int_attribute(node("GatherElements",
                           {level_table(code, coefficients, first, planes, layout), index}, part),
                      "axis", transposed ? 0 : 1);
    parts.push_back(part);
  }
  std::string w = parts.front();
  if (parts.size() > 1) {
    w = unique(p + "_sum");
    node("Sum", parts, w);
  }
  // W (or W^T) under the weight's name, in the tensor's own shape.
  names_.erase(weight);
  if (shape.size() != 2)  // a convolution's [M, C, k...], a ConvTranspose's W^T [C, M, k...]
    node("Reshape", {w, int64s(p + "_shape_weight", shape)}, weight);
  else
    nodes_.back().set_output(0, weight);  // the last node made w: it produces the weight itself
  names_.insert(weight);
}

}  // namespace qsl::onnx::detail
