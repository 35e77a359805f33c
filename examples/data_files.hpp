#pragma once
// Reading the data files of qsl-run and qsl-compress: IDX (MNIST format, gzip or not) and NumPy
// .npy (float32 for inputs; any number type parsed), and writing .npy. Every size is checked
// against the file before anything is allocated.

#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "qsl/error.hpp"
#include "qsl/serialize.hpp"

namespace qsl::tools {

struct array {
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> bytes;  ///< IDX: the unsigned bytes
  std::vector<float> floats;        ///< .npy
};

/// The whole file, gunzipped when it starts with the gzip magic; at most max_bytes.
inline std::vector<std::uint8_t> read_maybe_gzip(const std::string& path, std::size_t max_bytes) {
  std::vector<std::uint8_t> raw = read_file(path, max_bytes);
  if (raw.size() < 2 || raw[0] != 0x1f || raw[1] != 0x8b) return raw;
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw qsl::error("cannot open '" + path + "'");
  std::vector<std::uint8_t> out;
  std::uint8_t chunk[1 << 16];
  int n;
  while ((n = gzread(f, chunk, sizeof chunk)) > 0) {
    out.insert(out.end(), chunk, chunk + n);
    if (out.size() > max_bytes) {
      gzclose(f);
      throw qsl::error("'" + path + "' decompresses to more than " + std::to_string(max_bytes) +
                       " bytes");
    }
  }
  const bool failed = n < 0;
  gzclose(f);
  if (failed) throw qsl::error("'" + path + "' is a corrupt gzip file");
  return out;
}

/// An IDX file of unsigned bytes (type 0x08), e.g. MNIST images or labels.
inline array read_idx(const std::string& path) {
  const std::vector<std::uint8_t> data = read_maybe_gzip(path, std::size_t{1} << 32);
  const std::string where = "'" + path + "': ";
  detail::require(data.size() >= 4 && data[0] == 0 && data[1] == 0,
                  where + "not an IDX file (bad magic)");
  detail::require(data[2] == 0x08, where + "IDX type " + std::to_string(data[2]) +
                                       "; qsl-run reads unsigned bytes (0x08)");
  const int dims = data[3];
  detail::require(dims >= 1 && dims <= 4 && data.size() >= 4 + 4u * dims,
                  where + "IDX header with " + std::to_string(dims) + " dimensions is truncated");
  array a;
  std::uint64_t count = 1;
  for (int i = 0; i < dims; ++i) {
    const std::uint64_t d = (std::uint64_t{data[4 + 4 * i]} << 24) |
                            (std::uint64_t{data[5 + 4 * i]} << 16) |
                            (std::uint64_t{data[6 + 4 * i]} << 8) | data[7 + 4 * i];
    a.shape.push_back(static_cast<std::int64_t>(d));
    count *= d;
    detail::require(count <= data.size(), where + "dimensions exceed the file");
  }
  detail::require(data.size() == 4 + 4u * dims + count,
                  where + std::to_string(data.size()) + " bytes; the header needs " +
                      std::to_string(4 + 4 * dims + count));
  a.bytes.assign(data.begin() + 4 + 4 * dims, data.end());
  return a;
}

/// An array of any of the element types a model input takes, as raw little-endian bytes.
struct typed_array {
  std::string name;                 ///< the .npz entry without ".npy"; empty for a .npy file
  std::int32_t type = 0;            ///< ONNX element type (1 FLOAT, 7 INT64, 9 BOOL, ...)
  std::vector<std::int64_t> shape;  ///< C order
  std::vector<std::uint8_t> bytes;
};

/// An element type a model input may take: its ONNX code, NumPy dtype string (empty where
/// NumPy has none), bytes per element and name.
struct element_type {
  std::int32_t onnx;
  const char* npy;
  std::size_t bytes;
  const char* name;
};

inline constexpr element_type element_types[] = {
    {1, "<f4", 4, "float32"}, {2, "|u1", 1, "uint8"},    {3, "|i1", 1, "int8"},
    {4, "<u2", 2, "uint16"},  {5, "<i2", 2, "int16"},    {6, "<i4", 4, "int32"},
    {7, "<i8", 8, "int64"},   {9, "|b1", 1, "bool"},     {10, "<f2", 2, "float16"},
    {11, "<f8", 8, "float64"}, {12, "<u4", 4, "uint32"}, {13, "<u8", 8, "uint64"},
    {16, "", 2, "bfloat16"}};

/// The entry of an ONNX element type; null for types models do not take.
inline const element_type* element_type_of(std::int32_t onnx) {
  for (const element_type& t : element_types)
    if (t.onnx == onnx) return &t;
  return nullptr;
}

/// The entry of a NumPy dtype string ('<f4', '|b1', ...); null for dtypes models do not take.
inline const element_type* element_type_of_npy(const std::string& descr) {
  for (const element_type& t : element_types)
    if (*t.npy != '\0' && descr == t.npy) return &t;
  return nullptr;
}

/// A C-order .npy file's array from its bytes; `where` names it in errors.
inline typed_array parse_npy(const std::vector<std::uint8_t>& data, const std::string& where) {
  detail::require(data.size() >= 10 && std::memcmp(data.data(), "\x93NUMPY", 6) == 0,
                  where + "not a .npy file");
  const int major = data[6];
  const std::size_t header_len = major == 1 ? (data[8] | (data[9] << 8))
                                            : data.size() >= 12 ? (data[8] | (data[9] << 8) |
                                                                   (data[10] << 16) |
                                                                   (std::size_t{data[11]} << 24))
                                                                : 0;
  const std::size_t start = major == 1 ? 10 : 12;
  detail::require(start + header_len <= data.size(), where + "truncated .npy header");
  const std::string header(data.begin() + start, data.begin() + start + header_len);
  const auto descr_at = header.find("'descr': '");
  detail::require(descr_at != std::string::npos, where + "no dtype in the .npy header");
  const std::string descr = header.substr(descr_at + 10, header.find('\'', descr_at + 10) -
                                                             (descr_at + 10));
  const element_type* type = element_type_of_npy(descr);
  detail::require(type != nullptr, where + "dtype '" + descr +
                                       "'; expected a little-endian number or bool array");
  detail::require(header.find("'fortran_order': False") != std::string::npos,
                  where + "Fortran-order arrays are not supported");
  const auto open = header.find("'shape': (");
  detail::require(open != std::string::npos, where + "no shape in the .npy header");
  typed_array a;
  a.type = type->onnx;
  std::uint64_t count = 1;
  for (std::size_t i = open + 10; i < header.size() && header[i] != ')';) {
    if (header[i] < '0' || header[i] > '9') {
      ++i;
      continue;
    }
    std::uint64_t d = 0;
    while (i < header.size() && header[i] >= '0' && header[i] <= '9' && d < (1ULL << 40))
      d = d * 10 + static_cast<std::uint64_t>(header[i++] - '0');
    a.shape.push_back(static_cast<std::int64_t>(d));
    count *= d;
    detail::require(count <= data.size(), where + "the shape exceeds the file");
  }
  detail::require(data.size() - start - header_len == count * type->bytes,
                  where + "the data does not match the shape");
  a.bytes.assign(data.begin() + static_cast<std::ptrdiff_t>(start + header_len), data.end());
  return a;
}

/// A little-endian float32 C-order .npy file.
inline array read_npy(const std::string& path) {
  const std::string where = "'" + path + "': ";
  typed_array t = parse_npy(read_file(path, std::size_t{1} << 34), where);
  detail::require(t.type == 1, where + "qsl-run reads float32 (<f4) arrays");
  array a;
  a.shape = std::move(t.shape);
  a.floats.resize(t.bytes.size() / 4);
  std::memcpy(a.floats.data(), t.bytes.data(), t.bytes.size());
  return a;
}

/// Model inputs read from a file, `count` inputs of `per_input` values each.
struct model_inputs {
  std::int64_t count = 0;
  std::vector<float> values;
};

inline bool has_npy_suffix(const std::string& path) {
  return path.size() >= 4 && path.compare(path.size() - 4, 4, ".npy") == 0;
}

/// IDX images (gzip or not), scaled from bytes to [0, 1], or (npy) a float32 .npy used as it
/// is. Throws qsl::error when the inputs are not `per_input` wide.
inline model_inputs read_model_inputs(const std::string& path, std::int64_t per_input, bool npy) {
  model_inputs out;
  std::size_t values = 0;
  if (npy) {
    array a = read_npy(path);
    detail::require(!a.shape.empty(), "'" + path + "' is a scalar");
    out.count = a.shape[0];
    out.values = std::move(a.floats);
    values = out.values.size();
  } else {
    const array idx = read_idx(path);
    out.count = idx.shape[0];
    values = idx.bytes.size();
    out.values.resize(values);
    for (std::size_t i = 0; i < values; ++i) out.values[i] = idx.bytes[i] / 255.0f;
  }
  detail::require(out.count == 0 || static_cast<std::int64_t>(values) == out.count * per_input,
                  "'" + path + "' holds inputs of " +
                      std::to_string(out.count ? values / static_cast<std::size_t>(out.count) : 0) +
                      " values; the model's input takes " + std::to_string(per_input));
  return out;
}

inline void write_npy(const std::string& path, const std::vector<std::int64_t>& shape,
                      const std::vector<float>& values) {
  std::string dims;
  for (std::int64_t d : shape) dims += std::to_string(d) + ", ";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::vector<std::uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                   static_cast<std::uint8_t>(header.size() & 0xFF),
                                   static_cast<std::uint8_t>(header.size() >> 8)};
  out.insert(out.end(), header.begin(), header.end());
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(values.data());
  out.insert(out.end(), bytes, bytes + values.size() * 4);
  write_file_atomically(path, out.data(), out.size());
}

}  // namespace qsl::tools
