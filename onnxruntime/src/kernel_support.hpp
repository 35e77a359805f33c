#pragma once
// What every qsl operator in ONNX Runtime needs: attributes and constant inputs read with named
// errors, C++ exceptions turned into OrtStatus (never thrown into the runtime), and qsl's
// parallel loops run on the session's own intra-op threads.
#include <cstdint>
#include <string>
#include <vector>

#include "ort_api.hpp"

namespace qsl::ort {

/// "[1, 2, 3]": a list of ints as the operators' error messages quote an attribute.
std::string ints_text(const std::vector<std::int64_t>& v);

/// Reads a node's attributes and constant inputs; every error names the node.
class node_reader {
 public:
  node_reader(const OrtKernelInfo* info, const char* op);
  const std::string& what() const { return what_; }  ///< "QuantizedMatMul node 'fc1'"

  std::int64_t int_attribute(const char* name) const;  ///< required
  std::int64_t int_attribute(const char* name, std::int64_t fallback) const;
  bool has_attribute(const char* name) const;
  float float_attribute(const char* name) const;  ///< required
  std::vector<std::int64_t> ints_attribute(const char* name) const;  ///< required
  /// An optional string; `fallback` when absent.
  std::string string_attribute(const char* name, const std::string& fallback) const;
  /// An optional list of ints; `fallback` when absent.
  std::vector<std::int64_t> ints_attribute(const char* name,
                                           const std::vector<std::int64_t>& fallback) const;
  /// An optional list of floats; empty when absent.
  std::vector<float> floats_attribute(const char* name) const;

  /// Constant input `index`: an initializer of type `type` and exactly `dims`; returns its
  /// data. Optional inputs that are absent return nullptr when `optional`.
  const void* constant(std::size_t index, const char* name, ONNXTensorElementDataType type,
                       const std::vector<std::int64_t>& dims, bool optional = false) const;
  /// The same for an input of any of `types`; `found` gets the tensor's type.
  const void* constant(std::size_t index, const char* name,
                       const std::vector<ONNXTensorElementDataType>& types,
                       const std::vector<std::int64_t>& dims,
                       ONNXTensorElementDataType* found) const;

 private:
  const void* constant_of(std::size_t index, const char* name,
                          const std::vector<ONNXTensorElementDataType>& types,
                          const std::vector<std::int64_t>& dims, bool optional,
                          ONNXTensorElementDataType* found) const;
  Ort::ConstKernelInfo info_;
  std::string what_;
};

/// Runs qsl's CPU work under `context`'s intra-op thread pool (ParallelFor): a session never
/// gets more threads than it asked for. Construct it around the call to qsl.
class session_threads {
 public:
  explicit session_threads(OrtKernelContext* context);
  ~session_threads();
  session_threads(const session_threads&) = delete;
  session_threads& operator=(const session_threads&) = delete;

 private:
  struct impl;
  impl* impl_;
};

/// `body()` with any exception turned into an OrtStatus whose message starts with `what`.
template <class Body>
OrtStatusPtr guarded(const std::string& what, Body&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), (what + ": " + e.what()).c_str());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, (what + ": " + e.what()).c_str());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, (what + ": unknown error").c_str());
  }
}

/// `*kernel = new Kernel(info)`, with any error an OrtStatus naming the node (`op` and its
/// name, read apart so that a node whose name cannot be read still gets a message).
template <class Kernel>
OrtStatusPtr create_kernel(const OrtKernelInfo* info, const char* op, void** kernel) noexcept {
  *kernel = nullptr;
  std::string what = std::string(op) + " node";
  try {
    what = node_reader(info, op).what();
  } catch (...) {
  }
  return guarded(what, [&] { *kernel = new Kernel(info); });
}

}  // namespace qsl::ort
