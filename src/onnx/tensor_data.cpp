// Tensor checks and conversions (see proto.hpp).
#include <Eigen/Core>

#include <cmath>
#include <cstring>
#include <limits>

#include "onnx/proto.hpp"

namespace qsl::onnx::detail {
namespace {

using pb::TensorProto;

std::string str(std::uint64_t v) { return std::to_string(v); }

bool host_is_little_endian() {
  const std::uint16_t one = 1;
  std::uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// IEEE half -> float, exact (every half is a float).
float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000U) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FFU;
  std::uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000U | (mantissa << 13);  // inf / nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: normalize
    exponent = 113;
    while (!(mantissa & 0x400U)) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFU) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The typed field that holds `type`'s values when raw_data is not used, and its length.
int typed_count(const TensorProto& t, std::int32_t type) {
  switch (type) {
    case TensorProto::FLOAT:
      return t.float_data_size();
    case TensorProto::DOUBLE:
      return t.double_data_size();
    case TensorProto::INT64:
      return t.int64_data_size();
    case TensorProto::UINT32:
    case TensorProto::UINT64:
      return t.uint64_data_size();
    default:  // INT32 and the narrower integer / 16-bit float types are stored in int32_data
      return t.int32_data_size();
  }
}

int all_typed_counts(const TensorProto& t) {
  return t.float_data_size() + t.double_data_size() + t.int64_data_size() +
         t.uint64_data_size() + t.int32_data_size() + t.string_data_size();
}

}  // namespace

std::size_t element_size(std::int32_t type) {
  switch (type) {
    case TensorProto::FLOAT:
    case TensorProto::INT32:
    case TensorProto::UINT32:
      return 4;
    case TensorProto::UINT8:
    case TensorProto::INT8:
    case TensorProto::BOOL:
      return 1;
    case TensorProto::UINT16:
    case TensorProto::INT16:
    case TensorProto::FLOAT16:
    case TensorProto::BFLOAT16:
      return 2;
    case TensorProto::INT64:
    case TensorProto::DOUBLE:
    case TensorProto::UINT64:
      return 8;
    default:
      return 0;
  }
}

std::string type_name(std::int32_t type) {
  if (TensorProto::DataType_IsValid(type))
    return TensorProto::DataType_Name(static_cast<TensorProto::DataType>(type));
  return "unknown type " + std::to_string(type);
}

std::uint64_t element_count(const TensorProto& t, std::uint64_t max_bytes, const std::string& what) {
  const std::size_t size = element_size(t.data_type());
  if (size == 0)
    throw model_error(what + ": data_type is " + type_name(t.data_type()) +
                      "; qsl accepts FLOAT, DOUBLE, FLOAT16, BFLOAT16, BOOL and integer tensors");
  std::uint64_t count = 1;
  for (int i = 0; i < t.dims_size(); ++i) {
    const std::int64_t d = t.dims(i);
    if (d < 0)
      throw model_error(what + ": dims[" + std::to_string(i) + "] is " + std::to_string(d) +
                        "; expected >= 0");
    const auto u = static_cast<std::uint64_t>(d);
    if (u != 0 && count > max_bytes / size / u)
      throw model_error(what + ": dims describe more than " + str(max_bytes) +
                        " bytes (the product overflows or exceeds the limit)");
    count *= u;
  }
  return count;
}

void check_tensor(const TensorProto& t, std::uint64_t max_bytes, const std::string& what) {
  const std::uint64_t count = element_count(t, max_bytes, what);
  const std::size_t size = element_size(t.data_type());
  if (t.data_location() == TensorProto::EXTERNAL || t.external_data_size() > 0)
    throw model_error(what + ": external data is not resolved here");
  if (t.string_data_size() > 0)
    throw model_error(what + ": string_data is set on a " + type_name(t.data_type()) + " tensor");
  const bool raw = t.has_raw_data();
  const int typed = all_typed_counts(t);
  if (raw && typed > 0)
    throw model_error(what + ": both raw_data and a typed data field are set; expected one");
  if (raw) {
    if (t.raw_data().size() != count * size)
      throw model_error(what + ": raw_data has " + str(t.raw_data().size()) + " bytes; dims x " +
                        type_name(t.data_type()) + " need " + str(count * size));
    return;
  }
  const int right = typed_count(t, t.data_type());
  if (typed != right)
    throw model_error(what + ": a typed data field that does not match " +
                      type_name(t.data_type()) + " is set");
  if (static_cast<std::uint64_t>(right) != count)
    throw model_error(what + ": holds " + str(static_cast<std::uint64_t>(right)) +
                      " values; dims need " + str(count));
}

std::vector<std::int64_t> read_integers(const TensorProto& t, const std::string& what) {
  const bool wide = t.data_type() == TensorProto::INT64;
  if (!wide && t.data_type() != TensorProto::INT32)
    throw model_error(what + ": data_type is " + type_name(t.data_type()) +
                      "; expected INT32 or INT64");
  const std::uint64_t count = element_count(t, std::numeric_limits<std::uint64_t>::max(), what);
  const std::size_t size = wide ? 8 : 4;
  std::vector<std::int64_t> out(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!t.has_raw_data()) {
      out[i] = wide ? t.int64_data(static_cast<int>(i)) : t.int32_data(static_cast<int>(i));
      continue;
    }
    std::uint64_t u = 0;  // little-endian whatever the host
    for (std::size_t b = 0; b < size; ++b)
      u |= std::uint64_t{static_cast<std::uint8_t>(t.raw_data()[i * size + b])} << (8 * b);
    out[i] = wide ? static_cast<std::int64_t>(u)
                  : static_cast<std::int64_t>(static_cast<std::int32_t>(u));
  }
  return out;
}

std::vector<float> read_floats(const TensorProto& t, const std::string& what) {
  const std::uint64_t count = element_count(t, std::numeric_limits<std::uint64_t>::max(), what);
  std::vector<float> out(static_cast<std::size_t>(count));
  const bool raw = t.has_raw_data();
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(t.raw_data().data());
  auto little = [&](std::size_t offset, std::size_t n) {  // n-byte little-endian unsigned
    std::uint64_t v = 0;
    for (std::size_t b = 0; b < n; ++b) v |= std::uint64_t{bytes[offset + b]} << (8 * b);
    return v;
  };
  switch (t.data_type()) {
    case TensorProto::FLOAT:
      for (std::size_t i = 0; i < out.size(); ++i) {
        if (raw) {
          const auto v = static_cast<std::uint32_t>(little(4 * i, 4));
          std::memcpy(&out[i], &v, 4);
        } else {
          out[i] = t.float_data(static_cast<int>(i));
        }
      }
      break;
    case TensorProto::DOUBLE:
      for (std::size_t i = 0; i < out.size(); ++i) {
        double d;
        if (raw) {
          const std::uint64_t v = little(8 * i, 8);
          std::memcpy(&d, &v, 8);
        } else {
          d = t.double_data(static_cast<int>(i));
        }
        out[i] = static_cast<float>(d);
      }
      break;
    case TensorProto::FLOAT16:
    case TensorProto::BFLOAT16:
      for (std::size_t i = 0; i < out.size(); ++i) {
        const auto h = static_cast<std::uint16_t>(
            raw ? little(2 * i, 2) : static_cast<std::uint32_t>(t.int32_data(static_cast<int>(i))));
        if (t.data_type() == TensorProto::FLOAT16) {
          out[i] = half_to_float(h);
        } else {
          const std::uint32_t bits = std::uint32_t{h} << 16;
          std::memcpy(&out[i], &bits, 4);
        }
      }
      break;
    default:
      throw model_error(what + ": a " + type_name(t.data_type()) +
                        " weight cannot be compressed; expected a floating-point tensor");
  }
  return out;
}

namespace {
template <class T>
pb::TensorProto make_raw(const std::string& name, const std::vector<std::int64_t>& dims,
                         const T* values, std::int32_t type) {
  pb::TensorProto t;
  t.set_name(name);
  t.set_data_type(type);
  std::uint64_t count = 1;
  for (std::int64_t d : dims) {
    t.add_dims(d);
    count *= static_cast<std::uint64_t>(d);
  }
  std::string raw(static_cast<std::size_t>(count * sizeof(T)), '\0');
  for (std::uint64_t i = 0; i < count; ++i) {  // little-endian whatever the host
    std::uint8_t b[sizeof(T)];
    std::memcpy(b, &values[i], sizeof(T));
    if (!host_is_little_endian())
      for (std::size_t k = 0; k < sizeof(T) / 2; ++k) std::swap(b[k], b[sizeof(T) - 1 - k]);
    std::memcpy(&raw[i * sizeof(T)], b, sizeof(T));
  }
  t.set_raw_data(std::move(raw));
  return t;
}
}  // namespace

pb::TensorProto make_float_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const float* values) {
  return make_raw(name, dims, values, TensorProto::FLOAT);
}
pb::TensorProto make_floating_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                     std::int32_t type, const float* values) {
  std::uint64_t count = 1;
  for (std::int64_t d : dims) count *= static_cast<std::uint64_t>(d);
  switch (type) {
    case TensorProto::FLOAT:
      return make_raw(name, dims, values, TensorProto::FLOAT);
    case TensorProto::DOUBLE: {
      const std::vector<double> wide(values, values + count);
      return make_raw(name, dims, wide.data(), TensorProto::DOUBLE);
    }
    case TensorProto::FLOAT16: {  // round to nearest even, as Eigen::half does
      std::vector<std::uint16_t> bits(static_cast<std::size_t>(count));
      for (std::uint64_t i = 0; i < count; ++i) bits[i] = Eigen::half(values[i]).x;
      return make_raw(name, dims, bits.data(), TensorProto::FLOAT16);
    }
    case TensorProto::BFLOAT16: {
      std::vector<std::uint16_t> bits(static_cast<std::size_t>(count));
      for (std::uint64_t i = 0; i < count; ++i) bits[i] = Eigen::bfloat16(values[i]).value;
      return make_raw(name, dims, bits.data(), TensorProto::BFLOAT16);
    }
    default:
      throw qsl::error("make_floating_tensor: '" + name + "' is " + type_name(type) +
                       "; expected FLOAT, DOUBLE, FLOAT16 or BFLOAT16");
  }
}
pb::TensorProto make_uint8_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const std::uint8_t* values) {
  return make_raw(name, dims, values, TensorProto::UINT8);
}
pb::TensorProto make_int8_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                 const std::int8_t* values) {
  return make_raw(name, dims, values, TensorProto::INT8);
}
pb::TensorProto make_int32_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const std::int32_t* values) {
  return make_raw(name, dims, values, TensorProto::INT32);
}
pb::TensorProto make_int64_tensor(const std::string& name, const std::vector<std::int64_t>& dims,
                                  const std::int64_t* values) {
  return make_raw(name, dims, values, TensorProto::INT64);
}

}  // namespace qsl::onnx::detail
