#pragma once
// Internal: the protobuf side of qsl::onnx. `pb` names ONNX's generated namespace (::onnx),
// which qsl::onnx would otherwise shadow.

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>

#include "qsl/onnx.hpp"

namespace pb = ::onnx;

namespace qsl::onnx {

struct model::impl {
  pb::ModelProto proto;
  std::string source;  ///< the file it came from, empty if parsed from bytes
  load_limits limits;
};

}  // namespace qsl::onnx

namespace qsl::onnx::detail {

/// Bytes per element of a tensor data type; 0 for types qsl does not accept (undefined,
/// complex, float8, 4-bit, string).
std::size_t element_size(std::int32_t data_type);
/// Human name of a data type ("FLOAT", "INT64", ...).
std::string type_name(std::int32_t data_type);

/// Element count from the dims, with overflow checks and the byte cap; throws model_error
/// naming the tensor and the field.
std::uint64_t element_count(const pb::TensorProto& t, std::uint64_t max_bytes, const std::string& what);

/// Checks one tensor completely: dtype, dims, exactly one data source of the right length.
/// External data is refused here (the loader resolves it into raw_data first).
void check_tensor(const pb::TensorProto& t, std::uint64_t max_bytes, const std::string& what);

/// The tensor's values as floats (FLOAT, DOUBLE, FLOAT16, BFLOAT16); throws model_error for
/// other types. The tensor must have passed check_tensor.
std::vector<float> read_floats(const pb::TensorProto& t, const std::string& what);

/// The values of an INT32 or INT64 tensor, widened; throws model_error for other types. The
/// tensor must have passed check_tensor.
std::vector<std::int64_t> read_integers(const pb::TensorProto& t, const std::string& what);

/// FLOAT, UINT8, INT32 and INT64 tensors (raw little-endian data).
pb::TensorProto make_float_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const float* values);
/// `values` as a tensor of the floating-point `type` (FLOAT, DOUBLE, FLOAT16, BFLOAT16;
/// halves rounded to nearest even); throws qsl::error for another type.
pb::TensorProto make_floating_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                     std::int32_t type, const float* values);
pb::TensorProto make_uint8_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const std::uint8_t* values);
pb::TensorProto make_int8_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                 const std::int8_t* values);
pb::TensorProto make_int32_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const std::int32_t* values);
pb::TensorProto make_int64_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const std::int64_t* values);

}  // namespace qsl::onnx::detail
