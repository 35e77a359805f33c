// The entry point ONNX Runtime calls when a session registers the library
// (SessionOptions.register_custom_ops_library(path), RegisterCustomOpsLibrary): it hands over the
// API, and the library adds its operators in the ai.qsl domain.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "decode_weights.hpp"
#include "ort_api.hpp"
#include "qsl/version.hpp"
#include "quantized_conv.hpp"
#include "quantized_conv_transpose.hpp"
#include "quantized_gather.hpp"
#include "quantized_matmul.hpp"
#include "quantized_twd.hpp"

namespace {

// Domains live as long as the library: every session that registered it uses them.
std::mutex domains_mutex;
std::vector<Ort::CustomOpDomain>& domains() {
  static std::vector<Ort::CustomOpDomain> all;
  return all;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {  // a runtime older than the headers this library was built with
    const std::string message =
        "libqsl_onnxruntime: this ONNX Runtime does not provide API "
        "version " +
        std::to_string(ORT_API_VERSION) + "; it needs ONNX Runtime 1." +
        std::to_string(ORT_API_VERSION) + " or later";
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
  }
  Ort::InitApi(api);
  try {
    Ort::CustomOpDomain domain("ai.qsl");
    domain.Add(qsl::ort::quantized_matmul_op());
    domain.Add(qsl::ort::quantized_conv_op());
    domain.Add(qsl::ort::quantized_conv_transpose_op());
    domain.Add(qsl::ort::quantized_twd_op());
    domain.Add(qsl::ort::quantized_gather_op());
    domain.Add(qsl::ort::decode_weights_op());
    domain.Add(qsl::ort::decode_factorized_op());
    Ort::UnownedSessionOptions(options).Add(domain);
    const std::lock_guard<std::mutex> lock(domains_mutex);
    domains().push_back(std::move(domain));
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  }
  return nullptr;
}

// So that a user can check which qsl a file of the library is ("0.1.0").
extern "C" __attribute__((visibility("default"))) const char* qsl_onnxruntime_version() {
  static const std::string version = std::to_string(QSL_VERSION_MAJOR) + "." +
                                     std::to_string(QSL_VERSION_MINOR) + "." +
                                     std::to_string(QSL_VERSION_PATCH);
  return version.c_str();
}
