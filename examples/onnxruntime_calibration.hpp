#pragma once
// qsl-compress --calib in ONNX Runtime: libonnxruntime loaded at run time (PyPI onnxruntime's,
// Debian's, or any release's), the model run with every compressed layer's input as an extra
// output, and those values handed to qsl::onnx::calibration_collector batch by batch (memory:
// one batch of layer inputs plus the layers' statistics, whatever the number of samples).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data_files.hpp"
#include "qsl/onnx.hpp"
#include "qsl/onnx_calibration.hpp"

namespace qsl::tools {

/// libonnxruntime, loaded once per process.
class onnxruntime_library {
 public:
  /// Loads `path`, or where it is empty: $QSL_ONNXRUNTIME_LIBRARY, the system's
  /// libonnxruntime.so(.1), then PyPI onnxruntime's (asking `${PYTHON:-python3}` where it
  /// is). Throws qsl::error naming every place tried, or a runtime older than the API headers
  /// qsl-compress was built with.
  static const onnxruntime_library& load(const std::string& path = "");
  const std::string& path() const { return path_; }
  const std::string& version() const { return version_; }

 private:
  onnxruntime_library() = default;
  std::string path_, version_;
};

struct onnxruntime_calibration_options {
  std::int64_t batch = 16;  ///< samples per run (a model's fixed batch size wins)
  int threads = 0;          ///< ORT's intra-op threads (0: its default)
  qsl::onnx::calibration_options statistics;  ///< its progress: (samples done, total)
};

/// Runs `m` in ONNX Runtime on the first `count` samples of `inputs` (first axis: samples)
/// and returns every layer's statistics. `inputs` holds one array per graph input, named as
/// the input (an .npz file's arrays); or one unnamed float array (a .npy or IDX file) for a
/// model with one input, whose values per sample must match that input's size. Throws
/// qsl::error naming the input and the value for a missing, extra or mistyped array, a shape
/// that does not match, or a failing run.
qsl::onnx::calibration_data calibrate_in_onnxruntime(const onnxruntime_library& runtime,
                                                     const qsl::onnx::model& m,
                                                     const std::vector<typed_array>& inputs,
                                                     std::int64_t count,
                                                     const onnxruntime_calibration_options& o);

/// A size budget's per-layer sensitivity measured in ONNX Runtime (compress_options::
/// sensitivity): the model's float outputs on the first `count` samples of `inputs` (as for
/// calibrate_in_onnxruntime), and for a weight replaced, the outputs' squared relative change
/// sum ||y' - y||^2 / sum ||y||^2 over every float output and sample. `m` and `inputs` must
/// outlive it; copies share one reference. Each call builds a session for the changed model:
/// its cost is one model load and `count` samples' inference.
class onnxruntime_output_change {
 public:
  onnxruntime_output_change(const onnxruntime_library& runtime, const qsl::onnx::model& m,
                            const std::vector<typed_array>& inputs, std::int64_t count,
                            const onnxruntime_calibration_options& o);
  double operator()(const std::string& weight, const std::vector<float>& values) const;
  /// The samples each measurement runs (count, bounded by the file and whole fixed batches).
  std::int64_t samples() const { return samples_; }

 private:
  struct state;
  std::shared_ptr<state> state_;
  std::int64_t samples_ = 0;
};

}  // namespace qsl::tools
