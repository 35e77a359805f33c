#include "onnx/sequential.hpp"

#include <algorithm>

#include "onnx/layer_weights.hpp"
#include "onnx/proto.hpp"

namespace qsl::onnx::detail {

sequential_calibration::sequential_calibration(const model& m, const compress_options& o,
                                               const std::vector<candidate>& layers)
    : o_(o), layers_(layers), group_(layers.size(), 0) {
  qsl::detail::require(o.sequential_passes >= 0,
                       "compress: sequential_passes is " + std::to_string(o.sequential_passes) +
                           "; expected >= 0 (0 or 1: off)");
  if (o.sequential_passes <= 1) return;
  qsl::detail::require(o.calibration != nullptr && static_cast<bool>(o.recalibrate),
                       "compress: sequential_passes " + std::to_string(o.sequential_passes) +
                           " needs calibration statistics and a recalibrate callback");
  if (layers.size() < 2) return;
  passes_ = static_cast<int>(
      std::min<std::size_t>(static_cast<std::size_t>(o.sequential_passes), layers.size()));
  for (std::size_t l = 0; l < layers.size(); ++l)  // near-equal counts, in graph order
    group_[l] = static_cast<int>(l * static_cast<std::size_t>(passes_) / layers.size());
  const std::vector<std::uint8_t> bytes = m.serialize();
  shadow_ = std::make_unique<model>(model::parse(bytes.data(), bytes.size(), m.internals().limits));
}

const layer_calibration* sequential_calibration::statistics(std::size_t l) {
  const candidate& c = layers_[l];
  if (!recalibrated(l)) return statistics_of(o_, c);
  if (group_[l] != current_group_) {
    current_group_ = group_[l];
    const std::string where = "compress: recalibrating (pass " +
                              std::to_string(current_group_ + 1) + " of " +
                              std::to_string(passes_) + ", from " + what_of(c) + "): ";
    try {
      current_ = o_.recalibrate(*shadow_);
    } catch (const model_error& e) {  // the model's fault stays a model_error
      throw model_error(where + e.what());
    } catch (const qsl::error& e) {
      throw qsl::error(where + e.what());
    }
  }
  return statistics_in(current_, c);
}

void sequential_calibration::compressed(std::size_t l, const weight_code& code) {
  if (runs_later(l)) replace(l, reconstruct(code));
}

void sequential_calibration::compressed(std::size_t l, const twd_code& code) {
  if (runs_later(l)) replace(l, reconstruct(code));
}

void sequential_calibration::replace(std::size_t l, const Eigen::MatrixXf& w_hat) {
  const candidate& c = layers_[l];
  pb::GraphProto& g = *shadow_->internals().proto.mutable_graph();
  pb::TensorProto& t = *constants(g).at(c.weight).tensor;
  const std::vector<std::int64_t> dims(t.dims().begin(), t.dims().end());
  const std::vector<float> values = as_tensor(c, w_hat);
  t = make_floating_tensor(t.name(), dims, t.data_type(), values.data());
}

}  // namespace qsl::onnx::detail
