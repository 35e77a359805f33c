#pragma once
// The stored form of a quantized dense layer and its versioned byte format.
//
// Format (little-endian, version 1):
//   "QSLD"  magic                         4 bytes
//   u32     format version (1)
//   u64     rows, u64 cols, u64 group size
//   u8      bits, u8 basis, u8 activation bits, u8 activation mode (0 per vector, 1 calibrated)
//   f32     activation step, f32 activation minimum
//   u8      has bias (0 or 1)
//   u64[]   sign planes  [row][plane][word]
//   u64[]   masks        (ternary only)
//   f32[]   coefficients [row][group][plane]
//   f32[]   bias         (rows, when present)
//   u32     CRC-32 (IEEE, as zlib's crc32) of every byte before it
// The offline offsets are derived data: they are recomputed on load, never stored.
// Loading checks the length against the header before reading any array, then the checksum,
// then every invariant of the weight code; any failure is a qsl::error.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "qsl/activation_code.hpp"
#include "qsl/config.hpp"
#include "qsl/weight_code.hpp"

namespace qsl {

/// Everything a quantized dense layer stores.
struct dense_parameters {
  weight_code code;
  std::vector<float> bias;  ///< empty, or one per output
  activation_quantizer activations;

  /// Bytes of the payload: the code, the bias and a calibrated step and minimum.
  std::size_t bytes() const {
    return code.bytes() + bias.size() * sizeof(float) +
           (activations.calibrated ? 2 * sizeof(float) : 0);
  }
};

/// Throws qsl::error unless every part is consistent (code invariants, bias length, finite
/// values, activation settings in range).
QSL_API void validate(const dense_parameters& p, const char* what = "dense layer");

QSL_API std::vector<std::uint8_t> serialize(const dense_parameters& p);
QSL_API dense_parameters deserialize_dense(const std::uint8_t* data, std::size_t size);

/// Writes the bytes to `path` through a temporary file in the same folder and a rename, so
/// that a reader never sees a half-written file. Throws qsl::error naming the path.
QSL_API void write_file_atomically(const std::string& path, const std::uint8_t* data,
                                   std::size_t size);

/// Checks before long work that write_file_atomically(path, ...) can write there now: path is
/// not a folder, and its folder exists and takes a new file (one is created and removed). Throws
/// qsl::error naming the path and the reason. The write itself may still fail (a full disk).
QSL_API void check_writable(const std::string& path);

/// Reads a whole file, refusing files larger than max_bytes. Throws qsl::error naming the path.
QSL_API std::vector<std::uint8_t> read_file(const std::string& path, std::size_t max_bytes);

}  // namespace qsl
