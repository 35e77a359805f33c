#include "qsl/serialize.hpp"

#include <cmath>
#include <cstring>

#include "byte_io.hpp"
#include "layer_checks.hpp"
#include "qsl/error.hpp"

namespace qsl {
namespace {

constexpr char magic[4] = {'Q', 'S', 'L', 'D'};
constexpr std::uint32_t format_version = 1;
constexpr std::size_t header_bytes = 4 + 4 + 3 * 8 + 4 + 2 * 4 + 1;
constexpr std::size_t checksum_bytes = 4;
// check_shape caps rows and cols at 2^31 and rows * cols at 2^38, so every product below of
// values under this bound fits in 64 bits.
constexpr std::uint64_t max_dimension = std::uint64_t{1} << 31;

std::string str(std::uint64_t v) { return std::to_string(v); }

}  // namespace

void validate(const dense_parameters& p, const char* what) {
  validate(p.code, what);
  detail::validate_bias_and_activations(p.bias, p.code.rows, p.activations,
                                        std::string(what) + ": ");
}

std::vector<std::uint8_t> serialize(const dense_parameters& p) {
  validate(p);
  detail::byte_writer out;
  for (char c : magic) out.put(static_cast<std::uint8_t>(c));
  out.put(format_version);
  out.put(static_cast<std::uint64_t>(p.code.rows));
  out.put(static_cast<std::uint64_t>(p.code.cols));
  out.put(static_cast<std::uint64_t>(p.code.group_size));
  out.put(static_cast<std::uint8_t>(p.code.bits));
  out.put(static_cast<std::uint8_t>(p.code.basis));
  out.put(static_cast<std::uint8_t>(p.activations.bits));
  out.put(static_cast<std::uint8_t>(p.activations.calibrated ? 1 : 0));
  out.put(p.activations.step);
  out.put(p.activations.minimum);
  out.put(static_cast<std::uint8_t>(p.bias.empty() ? 0 : 1));
  out.put_all(p.code.signs);
  out.put_all(p.code.masks);
  out.put_all(p.code.coefficients);
  out.put_all(p.bias);
  return out.seal();
}

dense_parameters deserialize_dense(const std::uint8_t* data, std::size_t size) {
  detail::require(data != nullptr || size == 0, "deserialize: data is null");
  detail::require(size >= header_bytes + checksum_bytes,
                  "deserialize: " + str(size) + " bytes; a layer needs at least " +
                      str(header_bytes + checksum_bytes));
  detail::require(std::memcmp(data, magic, 4) == 0,
                  "deserialize: not a qsl layer (the first bytes are not \"QSLD\")");
  detail::byte_reader in(data + 4, size - 4, "deserialize");
  const auto version = in.get<std::uint32_t>();
  detail::require(version == format_version, "deserialize: format version " + str(version) +
                                                 "; this build reads version " +
                                                 str(format_version));
  const auto rows = in.get<std::uint64_t>();
  const auto cols = in.get<std::uint64_t>();
  const auto group_size = in.get<std::uint64_t>();
  const auto bits = in.get<std::uint8_t>();
  const auto basis_id = in.get<std::uint8_t>();
  const auto act_bits = in.get<std::uint8_t>();
  const auto act_mode = in.get<std::uint8_t>();
  const auto act_step = in.get<float>();
  const auto act_minimum = in.get<float>();
  const auto has_bias = in.get<std::uint8_t>();
  detail::require(basis_id <= 1, "deserialize: basis " + str(basis_id) + "; expected 0 or 1");
  detail::require(act_mode <= 1, "deserialize: activation mode " + str(act_mode) +
                                     "; expected 0 (per vector) or 1 (calibrated)");
  detail::require(has_bias <= 1, "deserialize: bias flag " + str(has_bias) + "; expected 0 or 1");
  // Check the shape and the length against it before allocating anything: the header is
  // untrusted, and only a length that matches the buffer bounds the allocation.
  detail::require(rows < max_dimension && cols < max_dimension && group_size < max_dimension,
                  "deserialize: rows " + str(rows) + ", cols " + str(cols) + ", group size " +
                      str(group_size) + " are out of range");
  const auto n = static_cast<std::int64_t>(rows), d = static_cast<std::int64_t>(cols);
  auto g = static_cast<std::int64_t>(group_size);
  detail::require(g == d || (g >= 8 && g % 8 == 0 && g < d),
                  "deserialize: group size " + str(group_size) + " for " + str(cols) +
                      " columns; expected the column count or a multiple of 8 below it");
  const qsl::basis basis = static_cast<qsl::basis>(basis_id);
  check_shape(n, d, bits, basis, g == d ? 0 : g, "deserialize");
  const std::uint64_t plane_words = rows * bits * static_cast<std::uint64_t>(words_for(d));
  const std::uint64_t groups = (cols + group_size - 1) / group_size;
  std::uint64_t expected = header_bytes + checksum_bytes;
  expected += detail::checked_mul(plane_words * (basis == qsl::basis::ternary ? 2 : 1), 8,
                                  "deserialize", "plane size");
  expected += detail::checked_mul(rows * groups * bits, 4, "deserialize", "coefficient size");
  expected += has_bias ? detail::checked_mul(rows, 4, "deserialize", "bias size") : 0;
  detail::require(size == expected, "deserialize: " + str(size) + " bytes; the header (" +
                                        str(rows) + " x " + str(cols) + ", " + str(bits) +
                                        " bits) needs exactly " + str(expected));
  detail::check_crc32(data, size, "deserialize");

  dense_parameters p;
  const weight_code shape = make_weight_code(n, d, bits, basis, g == d ? 0 : g);
  p.code = shape;
  in.get_all(p.code.signs, shape.signs.size());
  in.get_all(p.code.masks, shape.masks.size());
  in.get_all(p.code.coefficients, shape.coefficients.size());
  if (has_bias) in.get_all(p.bias, static_cast<std::size_t>(rows));
  p.activations = {act_bits, act_mode == 1, act_step, act_minimum};
  // Coefficients must be finite before the offsets are derived from them.
  for (std::size_t i = 0; i < p.code.coefficients.size(); ++i)
    detail::require(std::isfinite(p.code.coefficients[i]),
                    "deserialize: coefficient " + str(i) + " is " +
                        std::to_string(p.code.coefficients[i]) + "; expected a finite value");
  compute_offsets(p.code);
  validate(p, "deserialize");
  return p;
}

}  // namespace qsl
