// qsl::onnx::collect_calibration: runs the model with a layer observer and accumulates, per
// layer, the Gram matrix of its inputs and a reservoir sample of them.
#include "qsl/onnx_calibration.hpp"

#include <Eigen/Cholesky>
#include <cmath>
#include <random>

#include "qsl/onnx_session.hpp"

namespace qsl::onnx {
namespace {

// Rows are summed into the double Gram matrix in float blocks of this many vectors: a float
// GEMM is several times faster, and a block this short keeps its relative rounding near
// 256 * 2^-24 before the double sum takes over.
constexpr std::int64_t gram_block_rows = 256;
constexpr std::uint64_t reservoir_seed = 0x9e3779b97f4a7c15ULL;

using row_map = Eigen::Map<const row_matrix_f>;

struct accumulator {
  layer_calibration stats;  // width and vectors; the values are below until finish()
  Eigen::MatrixXd gram;
  row_matrix_f samples;
  std::mt19937_64 rng{reservoir_seed};
  Eigen::MatrixXf block_gram;
  bool skipped = false;  // wider than max_width

  void add(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t max_samples,
           const std::string& weight) {
    if (stats.width == 0) {
      stats.width = cols;
      gram.setZero(cols, cols);
      samples.resize(std::min<std::int64_t>(max_samples, 1024), cols);
    }
    if (cols != stats.width)
      throw model_error("calibration: layer '" + weight + "' saw inputs of " +
                        std::to_string(cols) + " and " + std::to_string(stats.width) +
                        " values (the same weight used at two widths)");
    const row_map all(x, rows, cols);
    if (!all.allFinite())
      throw model_error("calibration: the input of layer '" + weight +
                        "' has NaN or Inf values (the model overflows on the calibration data)");
    for (std::int64_t r0 = 0; r0 < rows; r0 += gram_block_rows) {
      const std::int64_t n = std::min(gram_block_rows, rows - r0);
      block_gram.noalias() = all.middleRows(r0, n).transpose() * all.middleRows(r0, n);
      gram += block_gram.cast<double>();
    }
    // Reservoir sampling (Algorithm R): every vector seen so far is kept with equal chance.
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t seen = stats.vectors + r;
      if (seen < max_samples) {
        if (seen >= samples.rows())  // grow geometrically, up to max_samples rows
          samples.conservativeResize(std::min(max_samples, 2 * samples.rows()), cols);
        samples.row(seen) = all.row(r);
      } else {
        const auto j = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(seen + 1));
        if (j < max_samples) samples.row(j) = all.row(r);
      }
    }
    stats.vectors += rows;
  }

  // Moves the statistics into stats: the kept samples (the first min(vectors, max_samples)
  // rows) and the Gram matrix.
  layer_calibration finish(std::int64_t max_samples) {
    stats.sample_count = std::min(stats.vectors, max_samples);
    stats.gram_values.assign(gram.data(), gram.data() + gram.size());
    stats.sample_values.assign(samples.data(), samples.data() + stats.sample_count * stats.width);
    return std::move(stats);
  }
};

}  // namespace

void layer_calibration::factor(Eigen::Ref<Eigen::MatrixXf> out) const {
  qsl::detail::require(
      vectors > 0 && width > 0 && gram_values.size() == static_cast<std::size_t>(width * width),
      "layer_calibration::factor: no statistics (0 vectors)");
  qsl::detail::require(out.rows() == width && out.cols() == width,
                       "layer_calibration::factor: out is " + std::to_string(out.rows()) + " x " +
                           std::to_string(out.cols()) + "; expected " + std::to_string(width) +
                           " x " + std::to_string(width));
  const Eigen::MatrixXd h = gram() / static_cast<double>(vectors);
  const double mean = std::max(h.diagonal().mean(), 1e-30);
  // Fewer vectors than D (or dead inputs) make H singular, and the float blocks of the sum
  // leave it indefinite by ~1e-7 of its largest eigenvalue: a ridge, the smallest that lets
  // the Cholesky factorization through, starting at 1e-4 of the mean diagonal.
  for (double ridge = 1e-4; ridge <= 1.0; ridge *= 10) {
    Eigen::MatrixXd damped = h;
    damped.diagonal().array() += ridge * mean;
    const Eigen::LLT<Eigen::MatrixXd> llt(damped);
    if (llt.info() == Eigen::Success) {
      out = Eigen::MatrixXd(llt.matrixU()).cast<float>();
      return;
    }
  }
  throw error("layer_calibration::factor: the Gram matrix is not positive semi-definite "
              "(non-finite statistics)");
}

calibration_data collect_calibration(const model& m, const float* inputs, std::int64_t count,
                                     const calibration_options& o) {
  const std::string where = "collect_calibration: ";
  qsl::detail::require(count >= 1, where + "count is " + std::to_string(count) +
                                       "; expected at least one input");
  qsl::detail::require(inputs != nullptr, where + "inputs is null");
  qsl::detail::require(o.batch >= 1, where + "options.batch is " + std::to_string(o.batch) +
                                         "; expected >= 1");
  qsl::detail::require(o.max_samples >= 1, where + "options.max_samples is " +
                                               std::to_string(o.max_samples) + "; expected >= 1");
  qsl::detail::require(o.max_width >= 1, where + "options.max_width is " +
                                             std::to_string(o.max_width) + "; expected >= 1");

  std::map<std::string, accumulator> layers;
  session_options so;
  so.observer = [&](const std::string& weight, const float* x, std::int64_t rows,
                    std::int64_t cols) {
    accumulator& a = layers[weight];
    if (a.skipped || cols > o.max_width) {
      a.skipped = true;
      return;
    }
    a.add(x, rows, cols, o.max_samples, weight);
  };
  const session s(m, so);
  qsl::detail::require(s.input_names().size() == 1,
                       where + "the model has " + std::to_string(s.input_names().size()) +
                           " inputs; calibration feeds models with one");
  std::vector<std::int64_t> shape = s.input_shape(0);
  qsl::detail::require(!shape.empty(), where + "the model's input has no shape");
  std::int64_t per_input = 1;
  for (std::size_t d = 1; d < shape.size(); ++d) {
    qsl::detail::require(shape[d] > 0, where + "the model's input has a dynamic dimension "
                                               "besides the batch");
    per_input *= shape[d];
  }
  for (std::int64_t i = 0; i < count * per_input; ++i)
    if (!std::isfinite(inputs[i]))
      throw error(where + "input " + std::to_string(i / per_input) + " has " +
                  std::to_string(inputs[i]) + " at position " + std::to_string(i % per_input) +
                  "; expected finite values");

  for (std::int64_t first = 0; first < count; first += o.batch) {
    const std::int64_t n = std::min(o.batch, count - first);
    tensor t;
    t.shape = shape;
    t.shape[0] = n;
    t.data.assign(inputs + first * per_input, inputs + (first + n) * per_input);
    s.run({t});
    if (o.progress) o.progress(first + n, count);
  }
  calibration_data out;
  for (auto& [weight, a] : layers)
    if (!a.skipped && a.stats.vectors > 0) out[weight] = a.finish(o.max_samples);
  return out;
}

}  // namespace qsl::onnx
