#include "kernel_support.hpp"

#include <algorithm>
#include <exception>
#include <thread>

#include "cpu/thread_pool.hpp"
#include "qsl/error.hpp"

namespace qsl::ort {

std::string ints_text(const std::vector<std::int64_t>& v) {
  std::string text = "[";
  for (std::size_t i = 0; i < v.size(); ++i) text += (i ? ", " : "") + std::to_string(v[i]);
  return text + "]";
}
namespace {

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

std::string dims_text(const std::vector<std::int64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

const char* type_text(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return "float";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return "int64";
    default:
      return "another type";
  }
}

// Status of an attribute read: true when present; the status is released either way.
bool read_status(OrtStatus* status) {
  if (status == nullptr) return true;
  Ort::GetApi().ReleaseStatus(status);
  return false;
}

}  // namespace

node_reader::node_reader(const OrtKernelInfo* info, const char* op) : info_(info) {
  std::string name;
  try {
    name = info_.GetNodeName();
  } catch (const Ort::Exception&) {
  }
  what_ = std::string(op) + " node " + in_quotes(name);
}

bool node_reader::has_attribute(const char* name) const {
  std::int64_t i = 0;
  float f = 0;
  return read_status(Ort::GetApi().KernelInfoGetAttribute_int64(info_, name, &i)) ||
         read_status(Ort::GetApi().KernelInfoGetAttribute_float(info_, name, &f));
}

std::int64_t node_reader::int_attribute(const char* name) const {
  std::int64_t v = 0;
  if (!read_status(Ort::GetApi().KernelInfoGetAttribute_int64(info_, name, &v)))
    throw qsl::error("integer attribute " + in_quotes(name) + " is missing");
  return v;
}

std::int64_t node_reader::int_attribute(const char* name, std::int64_t fallback) const {
  std::int64_t v = 0;
  return read_status(Ort::GetApi().KernelInfoGetAttribute_int64(info_, name, &v)) ? v : fallback;
}

float node_reader::float_attribute(const char* name) const {
  float v = 0;
  if (!read_status(Ort::GetApi().KernelInfoGetAttribute_float(info_, name, &v)))
    throw qsl::error("float attribute " + in_quotes(name) + " is missing");
  return v;
}

std::vector<std::int64_t> node_reader::ints_attribute(const char* name) const {
  try {
    return info_.GetAttributes<std::int64_t>(name);
  } catch (const Ort::Exception&) {
    throw qsl::error("ints attribute " + in_quotes(name) + " is missing");
  }
}

std::string node_reader::string_attribute(const char* name, const std::string& fallback) const {
  try {
    return info_.GetAttribute<std::string>(name);
  } catch (const Ort::Exception&) {
    return fallback;
  }
}

std::vector<std::int64_t> node_reader::ints_attribute(
    const char* name, const std::vector<std::int64_t>& fallback) const {
  try {
    return info_.GetAttributes<std::int64_t>(name);
  } catch (const Ort::Exception&) {
    return fallback;
  }
}

std::vector<float> node_reader::floats_attribute(const char* name) const {
  try {
    return info_.GetAttributes<float>(name);
  } catch (const Ort::Exception&) {
    return {};
  }
}

const void* node_reader::constant(std::size_t index, const char* name,
                                  ONNXTensorElementDataType type,
                                  const std::vector<std::int64_t>& dims, bool optional) const {
  return constant_of(index, name, {type}, dims, optional, nullptr);
}

const void* node_reader::constant(std::size_t index, const char* name,
                                  const std::vector<ONNXTensorElementDataType>& types,
                                  const std::vector<std::int64_t>& dims,
                                  ONNXTensorElementDataType* found) const {
  return constant_of(index, name, types, dims, false, found);
}

const void* node_reader::constant_of(std::size_t index, const char* name,
                                     const std::vector<ONNXTensorElementDataType>& types,
                                     const std::vector<std::int64_t>& dims, bool optional,
                                     ONNXTensorElementDataType* found) const {
  const bool absent = index >= info_.GetInputCount() || info_.GetInputName(index).empty();
  if (absent) {
    if (optional) return nullptr;
    throw qsl::error("input " + std::to_string(index) + " (" + name + ") is missing");
  }
  int is_constant = 0;
  const Ort::ConstValue value = info_.GetTensorConstantInput(index, &is_constant);
  if (!is_constant || value == nullptr)
    throw qsl::error(
        "input " + std::to_string(index) + " (" + name + ", " +
        in_quotes(info_.GetInputName(index)) +
        ") must be an initializer: the layer is packed once, when the session is made");
  const auto info = value.GetTensorTypeAndShapeInfo();
  const std::vector<std::int64_t> have = info.GetShape();
  const ONNXTensorElementDataType type = info.GetElementType();
  if (std::find(types.begin(), types.end(), type) == types.end() || have != dims) {
    std::string expected;
    for (ONNXTensorElementDataType t : types)
      expected += (expected.empty() ? "" : " or ") + std::string(type_text(t));
    throw qsl::error("input " + std::to_string(index) + " (" + name + ") is " + type_text(type) +
                     " " + dims_text(have) + "; expected " + expected + " " + dims_text(dims));
  }
  if (found != nullptr) *found = type;
  return value.GetTensorRawData();
}

// ---------------------------------------------------------------------------------------------

struct session_threads::impl {
  OrtKernelContext* context;
  detail::cpu::external_executor executor;
  detail::cpu::scoped_executor scope;

  struct call {
    void (*task)(void*, std::int64_t);
    void* task_context;
  };
  static void part(void* c, std::size_t i) {
    const auto& k = *static_cast<call*>(c);
    k.task(k.task_context, static_cast<std::int64_t>(i));
  }
  static void run(void* self, std::int64_t parts, void (*task)(void*, std::int64_t),
                  void* task_context) {
    call k{task, task_context};
    // ORT splits `parts` over its intra-op threads itself (num_batch 0: no limit).
    Ort::ThrowOnError(Ort::GetApi().KernelContext_ParallelFor(
        static_cast<impl*>(self)->context, part, static_cast<std::size_t>(parts), 0, &k));
  }

  explicit impl(OrtKernelContext* c)
      : context(c),
        // The hardware's threads: only how finely the work is split (ORT decides how many run).
        executor{static_cast<int>(std::max(1U, std::thread::hardware_concurrency())), run, this},
        scope(executor) {}
};

session_threads::session_threads(OrtKernelContext* context) : impl_(new impl(context)) {}
session_threads::~session_threads() { delete impl_; }

}  // namespace qsl::ort
