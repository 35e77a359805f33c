// The QSLT byte format of twd_dense_parameters (layout in qsl/twd_dense.hpp). It follows the
// rules of the QSLD format (src/serialize.cpp): little-endian whatever the host, nothing
// allocated before the exact length the header implies has been checked against the buffer,
// a CRC-32 over every byte, derived data (the basis coefficients 1 and offsets M^T 1)
// recomputed rather than trusted, and every invariant validated at the end.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

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

bool little_endian() {
  const std::uint16_t one = 1;
  std::uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

class byte_writer {
 public:
  template <class T>
  void put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::uint8_t raw[sizeof(T)];
    std::memcpy(raw, &value, sizeof(T));
    if (!little_endian()) std::reverse(raw, raw + sizeof(T));
    bytes_.insert(bytes_.end(), raw, raw + sizeof(T));
  }
  template <class T>
  void put_all(const std::vector<T>& values) {
    for (const T& v : values) put(v);
  }
  std::vector<std::uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
};

class byte_reader {
 public:
  byte_reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  template <class T>
  T get() {
    detail::require(pos_ + sizeof(T) <= size_,
                    "deserialize_twd_dense: truncated at byte " + str(pos_));
    std::uint8_t raw[sizeof(T)];
    std::memcpy(raw, data_ + pos_, sizeof(T));
    if (!little_endian()) std::reverse(raw, raw + sizeof(T));
    pos_ += sizeof(T);
    T value;
    std::memcpy(&value, raw, sizeof(T));
    return value;
  }
  template <class T>
  void get_all(std::vector<T>& out, std::size_t count) {
    out.resize(count);
    for (T& v : out) v = get<T>();
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// CRC-32 (IEEE 802.3, reflected: zlib's crc32). The same function as src/serialize.cpp's,
// which is private to that file; the tests check both files' checksums through corruption.
std::uint32_t crc32_of(const std::uint8_t* data, std::size_t size) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t crc = 0xFFFFFFFFU;
  for (std::size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFU;
}

std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const char* what) {
  detail::require(b == 0 || a <= std::numeric_limits<std::uint64_t>::max() / b,
                  std::string("deserialize_twd_dense: ") + what + " overflows");
  return a * b;
}

std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, const char* what) {
  detail::require(a <= std::numeric_limits<std::uint64_t>::max() - b,
                  std::string("deserialize_twd_dense: ") + what + " overflows");
  return a + b;
}

}  // namespace

std::vector<std::uint8_t> serialize(const twd_dense_parameters& p) {
  validate(p, "serialize");
  byte_writer out;
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
  out.put(crc32_of(out.bytes().data(), out.bytes().size()));
  return std::move(out.bytes());
}

twd_dense_parameters deserialize_twd_dense(const std::uint8_t* data, std::size_t size) {
  const std::string where = "deserialize_twd_dense: ";
  detail::require(data != nullptr || size == 0, where + "data is null");
  detail::require(
      size >= header_bytes + checksum_bytes,
      where + str(size) + " bytes; a layer needs at least " + str(header_bytes + checksum_bytes));
  detail::require(std::memcmp(data, magic, 4) == 0,
                  where + "not a qsl TWD layer (the first bytes are not \"QSLT\")");
  byte_reader in(data + 4, size - 4);
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
  expected = checked_add(expected, checked_mul(2 * plane_words, 8, "plane size"), "length");
  expected = checked_add(
      expected, checked_mul(checked_mul(k_count, rows, "mixing size"), 4, "mixing size"), "length");
  if (has_bias) expected = checked_add(expected, checked_mul(rows, 4, "bias size"), "length");
  detail::require(size == expected, where + str(size) + " bytes; the header (" + str(rows) + " x " +
                                        str(cols) + ", " + str(k_count) +
                                        " basis vectors) needs exactly " + str(expected));
  byte_reader tail(data + size - checksum_bytes, checksum_bytes);
  const auto stored_crc = tail.get<std::uint32_t>();
  const std::uint32_t actual_crc = crc32_of(data, size - checksum_bytes);
  detail::require(stored_crc == actual_crc, where + "checksum " + str(actual_crc) +
                                                " does not match the stored " + str(stored_crc) +
                                                "; the data is corrupt");

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
  validate(p, "deserialize_twd_dense");
  return p;
}

}  // namespace qsl
