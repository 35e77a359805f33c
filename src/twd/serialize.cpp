// The QSLT byte format of twd_dense_parameters (layout in qsl/twd_dense.hpp). It follows the
// rules of the QSLD format (src/serialize.cpp): little-endian whatever the host, nothing
// allocated before the exact length the header implies has been checked against the buffer,
// a CRC-32 over every byte, derived data (the basis coefficients 1 and offsets M^T 1)
// recomputed rather than trusted, and every invariant validated at the end. The byte reader,
// writer, size checks and CRC-32 are the QSLD format's own (byte_io.hpp).
#include <algorithm>
#include <cstring>

#include "byte_io.hpp"
#include "qsl/error.hpp"
#include "qsl/twd_dense.hpp"

namespace qsl {
namespace {

constexpr char magic[4] = {'Q', 'S', 'L', 'T'};
constexpr std::uint32_t format_version = 1;
constexpr std::size_t header_bytes = 4 + 4 + 3 * 8 + 1 + 1 + 2 * 4 + 1;
constexpr std::size_t checksum_bytes = 4;
// The caps of weight codes (check_shape): rows and cols below 2^31, K at most 65535, so every
// size product below fits in 64 bits before checked_mul even looks at it.
constexpr std::uint64_t max_dimension = std::uint64_t{1} << 31;

std::string str(std::uint64_t v) { return std::to_string(v); }

}  // namespace

std::vector<std::uint8_t> serialize(const twd_dense_parameters& p) {
  validate(p, "serialize");
  detail::byte_writer out;
  for (char c : magic) out.put(static_cast<std::uint8_t>(c));
  out.put(format_version);
  out.put(static_cast<std::uint64_t>(p.code.rows));
  out.put(static_cast<std::uint64_t>(p.code.cols));
  out.put(static_cast<std::uint64_t>(p.code.basis_vectors()));
  out.put(static_cast<std::uint8_t>(p.activations.bits));
  out.put(static_cast<std::uint8_t>(p.activations.calibrated ? 1 : 0));
  out.put(p.activations.step);
  out.put(p.activations.minimum);
  out.put(static_cast<std::uint8_t>(p.bias.empty() ? 0 : 1));
  out.put_all(p.code.basis.signs);
  out.put_all(p.code.basis.masks);
  out.put_all(p.code.mixing);
  out.put_all(p.bias);
  return out.seal();
}

twd_dense_parameters deserialize_twd_dense(const std::uint8_t* data, std::size_t size) {
  const char* what = "deserialize_twd_dense";
  const std::string where = std::string(what) + ": ";
  detail::require(data != nullptr || size == 0, where + "data is null");
  detail::require(
      size >= header_bytes + checksum_bytes,
      where + str(size) + " bytes; a layer needs at least " + str(header_bytes + checksum_bytes));
  detail::require(std::memcmp(data, magic, 4) == 0,
                  where + "not a qsl TWD layer (the first bytes are not \"QSLT\")");
  detail::byte_reader in(data + 4, size - 4, what);
  const auto version = in.get<std::uint32_t>();
  detail::require(version == format_version, where + "format version " + str(version) +
                                                 "; this build reads version " +
                                                 str(format_version));
  const auto rows = in.get<std::uint64_t>();
  const auto cols = in.get<std::uint64_t>();
  const auto k_count = in.get<std::uint64_t>();
  const auto act_bits = in.get<std::uint8_t>();
  const auto act_mode = in.get<std::uint8_t>();
  const auto act_step = in.get<float>();
  const auto act_minimum = in.get<float>();
  const auto has_bias = in.get<std::uint8_t>();
  detail::require(act_mode <= 1, where + "activation mode " + str(act_mode) +
                                     "; expected 0 (per vector) or 1 (calibrated)");
  detail::require(has_bias <= 1, where + "bias flag " + str(has_bias) + "; expected 0 or 1");
  // The shape and the length it implies, before anything is allocated: the header is
  // untrusted, and only a length that matches the buffer bounds the allocation.
  detail::require(rows >= 1 && rows < max_dimension && cols >= 1 && cols < max_dimension,
                  where + "rows " + str(rows) + " and cols " + str(cols) + " are out of range");
  detail::require(k_count >= 1 && k_count <= static_cast<std::uint64_t>(max_twd_basis_vectors),
                  where + "basis vectors " + str(k_count) + "; expected 1.." +
                      str(static_cast<std::uint64_t>(max_twd_basis_vectors)));
  check_shape(static_cast<std::int64_t>(k_count), static_cast<std::int64_t>(cols), 1,
              basis::ternary, 0, "deserialize_twd_dense: basis");
  const std::uint64_t plane_words =
      k_count * static_cast<std::uint64_t>(words_for(static_cast<std::int64_t>(cols)));
  std::uint64_t expected = header_bytes + checksum_bytes;
  using detail::checked_add;
  using detail::checked_mul;
  expected =
      checked_add(expected, checked_mul(2 * plane_words, 8, what, "plane size"), what, "length");
  const std::uint64_t mixing_values = checked_mul(k_count, rows, what, "mixing size");
  expected =
      checked_add(expected, checked_mul(mixing_values, 4, what, "mixing size"), what, "length");
  if (has_bias)
    expected = checked_add(expected, checked_mul(rows, 4, what, "bias size"), what, "length");
  detail::require(size == expected, where + str(size) + " bytes; the header (" + str(rows) + " x " +
                                        str(cols) + ", " + str(k_count) +
                                        " basis vectors) needs exactly " + str(expected));
  detail::check_crc32(data, size, what);

  twd_dense_parameters p;
  p.code.rows = static_cast<std::int64_t>(rows);
  p.code.cols = static_cast<std::int64_t>(cols);
  p.code.basis = make_weight_code(static_cast<std::int64_t>(k_count),
                                  static_cast<std::int64_t>(cols), 1, basis::ternary, 0);
  weight_code& b = p.code.basis;
  in.get_all(b.signs, b.signs.size());
  in.get_all(b.masks, b.masks.size());
  in.get_all(p.code.mixing, static_cast<std::size_t>(k_count * rows));
  if (has_bias) in.get_all(p.bias, static_cast<std::size_t>(rows));
  p.activations = {act_bits, act_mode == 1, act_step, act_minimum};
  std::fill(b.coefficients.begin(), b.coefficients.end(), 1.0f);
  compute_offsets(b);
  validate(p, what);
  return p;
}

}  // namespace qsl
