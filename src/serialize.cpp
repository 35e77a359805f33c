#include "qsl/serialize.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>

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

class byte_writer {
 public:
  template <class T>
  void put(T value) {  // little-endian whatever the host
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
  static bool little_endian() {
    const std::uint16_t one = 1;
    std::uint8_t first;
    std::memcpy(&first, &one, 1);
    return first == 1;
  }

 private:
  std::vector<std::uint8_t> bytes_;
};

class byte_reader {
 public:
  byte_reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  template <class T>
  T get() {
    detail::require(pos_ + sizeof(T) <= size_, "deserialize: truncated at byte " + str(pos_));
    std::uint8_t raw[sizeof(T)];
    std::memcpy(raw, data_ + pos_, sizeof(T));
    if (!byte_writer::little_endian()) std::reverse(raw, raw + sizeof(T));
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

// CRC-32 (IEEE 802.3, reflected, the checksum of zlib and PNG). Written out rather than taken
// from zlib so that the core library depends on nothing but Eigen and threads: it then
// cross-compiles for a Jetson (and for the NEON tests under qemu) with no target libraries.
// The tests check it against zlib's crc32.
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

// a * b, or an error when it does not fit: sizes come from untrusted headers.
std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const char* what) {
  detail::require(b == 0 || a <= std::numeric_limits<std::uint64_t>::max() / b,
                  std::string("deserialize: ") + what + " overflows");
  return a * b;
}

}  // namespace

void validate(const dense_parameters& p, const char* what) {
  validate(p.code, what);
  const std::string where = std::string(what) + ": ";
  detail::require(p.bias.empty() || p.bias.size() == static_cast<std::size_t>(p.code.rows),
                  where + "bias has " + str(p.bias.size()) + " values; expected 0 or " +
                      str(static_cast<std::uint64_t>(p.code.rows)));
  for (std::size_t i = 0; i < p.bias.size(); ++i)
    detail::require(std::isfinite(p.bias[i]), where + "bias " + str(i) + " is " +
                                                  std::to_string(p.bias[i]) +
                                                  "; expected a finite value");
  const activation_quantizer& a = p.activations;
  detail::require(a.bits >= 0 && a.bits <= max_activation_bits,
                  where + "activation bits is " + std::to_string(a.bits) + "; expected 0.." +
                      std::to_string(max_activation_bits));
  if (a.calibrated)
    detail::require(a.bits > 0 && std::isfinite(a.step) && a.step >= 0 &&
                        std::isfinite(a.minimum),
                    where + "calibrated activations need bits >= 1, a finite step >= 0 and a "
                            "finite minimum; got bits " +
                        std::to_string(a.bits) + ", step " + std::to_string(a.step) +
                        ", minimum " + std::to_string(a.minimum));
}

std::vector<std::uint8_t> serialize(const dense_parameters& p) {
  validate(p);
  byte_writer out;
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
  out.put(crc32_of(out.bytes().data(), out.bytes().size()));
  return std::move(out.bytes());
}

dense_parameters deserialize_dense(const std::uint8_t* data, std::size_t size) {
  detail::require(data != nullptr || size == 0, "deserialize: data is null");
  detail::require(size >= header_bytes + checksum_bytes,
                  "deserialize: " + str(size) + " bytes; a layer needs at least " +
                      str(header_bytes + checksum_bytes));
  detail::require(std::memcmp(data, magic, 4) == 0,
                  "deserialize: not a qsl layer (the first bytes are not \"QSLD\")");
  byte_reader in(data + 4, size - 4);
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
  expected += checked_mul(plane_words * (basis == qsl::basis::ternary ? 2 : 1), 8, "plane size");
  expected += checked_mul(rows * groups * bits, 4, "coefficient size");
  expected += has_bias ? checked_mul(rows, 4, "bias size") : 0;
  detail::require(size == expected, "deserialize: " + str(size) + " bytes; the header (" +
                                        str(rows) + " x " + str(cols) + ", " + str(bits) +
                                        " bits) needs exactly " + str(expected));
  byte_reader tail(data + size - checksum_bytes, checksum_bytes);
  const auto stored_crc = tail.get<std::uint32_t>();
  const std::uint32_t actual_crc = crc32_of(data, size - checksum_bytes);
  detail::require(stored_crc == actual_crc,
                  "deserialize: checksum " + str(actual_crc) + " does not match the stored " +
                      str(stored_crc) + "; the data is corrupt");

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
