#pragma once
// Internal: sequential calibration (compress_options::sequential_passes, GPTQ's sequential
// mode). The layers, in graph order, fall into contiguous groups; each group after the first
// is decomposed against statistics taken from the model as it runs at that point: an fp32
// shadow of it in which every layer compressed so far holds its decoded code.

#include <Eigen/Core>
#include <cstddef>
#include <memory>
#include <vector>

#include "onnx/layers.hpp"
#include "qsl/onnx.hpp"
#include "qsl/onnx_calibration.hpp"
#include "qsl/twd.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::onnx::detail {

class sequential_calibration {
 public:
  /// Off unless o.sequential_passes > 1 with o.calibration and o.recalibrate set and at least
  /// two layers. `m` is the model before any rewriting: the shadow starts as its copy. Throws
  /// qsl::error for sequential_passes < 0, or passes without calibration / recalibrate.
  sequential_calibration(const model& m, const compress_options& o,
                         const std::vector<candidate>& layers);
  bool active() const { return shadow_ != nullptr; }
  /// The groups the layers fall into (1 when off).
  int passes() const { return passes_; }

  /// The statistics layer l is decomposed against, or nullptr (statistics_of's rules): the
  /// first group's from o.calibration; a later group's from o.recalibrate on the shadow,
  /// called when its first layer asks. Layers must ask in order.
  const layer_calibration* statistics(std::size_t l);
  /// Whether layer l's statistics come from a recalibration (not o.calibration).
  bool recalibrated(std::size_t l) const { return active() && group_[l] > 0; }
  /// Layer l is now `code`: the shadow's weight holds it decoded from here on (only where a
  /// later group will run it).
  void compressed(std::size_t l, const weight_code& code);
  void compressed(std::size_t l, const twd_code& code);

 private:
  bool runs_later(std::size_t l) const { return active() && group_[l] < passes_ - 1; }
  void replace(std::size_t l, const Eigen::MatrixXf& w_hat);

  const compress_options& o_;
  const std::vector<candidate>& layers_;
  std::vector<int> group_;  // per layer
  int passes_ = 1;
  std::unique_ptr<model> shadow_;  // null when off
  calibration_data current_;       // the statistics of group `current_group_`
  int current_group_ = 0;
};

}  // namespace qsl::onnx::detail
