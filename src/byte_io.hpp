#pragma once
// The pieces the byte formats share (QSLD in serialize.cpp, QSLT in twd/serialize.cpp):
// little-endian values whatever the host, a reader that never reads past its buffer,
// overflow-checked size arithmetic for untrusted headers, and the trailing CRC-32.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "qsl/error.hpp"

namespace qsl::detail {

inline bool little_endian() {
  const std::uint16_t one = 1;
  std::uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// CRC-32 (IEEE 802.3, reflected, the checksum of zlib and PNG). Written out rather than taken
// from zlib so that the core library depends on nothing but Eigen and threads: it then
// cross-compiles for a Jetson (and for the NEON tests under qemu) with no target libraries.
// The tests check it against zlib's crc32.
inline std::uint32_t crc32_of(const std::uint8_t* data, std::size_t size) {
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
  /// Appends the CRC-32 of every byte written so far and hands the bytes over.
  std::vector<std::uint8_t> seal() {
    put(crc32_of(bytes_.data(), bytes_.size()));
    return std::move(bytes_);
  }

 private:
  std::vector<std::uint8_t> bytes_;
};

class byte_reader {
 public:
  /// `what` names the caller in the error for reading past the end ("deserialize: truncated at
  /// byte 12"); it must outlive the reader.
  byte_reader(const std::uint8_t* data, std::size_t size, const char* what)
      : data_(data), size_(size), what_(what) {}
  template <class T>
  T get() {
    require(pos_ + sizeof(T) <= size_,
            std::string(what_) + ": truncated at byte " + std::to_string(pos_));
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
  const char* what_;
  std::size_t pos_ = 0;
};

/// Checks the last 4 bytes of `data` (at least 4 long) against the CRC-32 of the others.
inline void check_crc32(const std::uint8_t* data, std::size_t size, const char* what) {
  constexpr std::size_t checksum_bytes = 4;
  byte_reader tail(data + size - checksum_bytes, checksum_bytes, what);
  const auto stored_crc = tail.get<std::uint32_t>();
  const std::uint32_t actual_crc = crc32_of(data, size - checksum_bytes);
  require(stored_crc == actual_crc, std::string(what) + ": checksum " + std::to_string(actual_crc) +
                                        " does not match the stored " + std::to_string(stored_crc) +
                                        "; the data is corrupt");
}

// Size arithmetic on values from untrusted headers: the result, or the error "<what>: <quantity>
// overflows" when it does not fit in 64 bits.
inline std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const char* what,
                                 const char* quantity) {
  require(b == 0 || a <= std::numeric_limits<std::uint64_t>::max() / b,
          std::string(what) + ": " + quantity + " overflows");
  return a * b;
}
inline std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, const char* what,
                                 const char* quantity) {
  require(a <= std::numeric_limits<std::uint64_t>::max() - b,
          std::string(what) + ": " + quantity + " overflows");
  return a + b;
}

}  // namespace qsl::detail
