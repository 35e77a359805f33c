// qsl-run: runs an ONNX model (original, or compressed by qsl-compress in the qsl format) with
// qsl's executor and reports accuracy, latency and throughput.
//
//   qsl-run model.onnx [--images FILE --labels FILE | --npy FILE | --random N] [--batch 64]
//           [--threads N] [--backend cpu|cuda] [--activation-bits K] [--json report.json]
//           [--limit N] [--dump-outputs outputs.npy]
//
// IDX images (MNIST format, gzip or not) are scaled to [0, 1] and reshaped to the model's input
// shape. Exit codes: 0 done, 1 a mistake in the command or the data (missing file, wrong input
// shape), 2 the model is malformed or uses an operator qsl-run does not support.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "data_files.hpp"
#include "qsl/cpu.hpp"
#include "qsl/onnx_session.hpp"
#include "tool_main.hpp"
#if defined(QSL_RUN_WITH_CUDA)
#include "qsl/cuda.hpp"
#endif

namespace {

using qsl::onnx::tensor;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(pos);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

// --backend cuda: every compressed layer as a qsl::cuda layer fed from host memory (glue and
// uncompressed layers stay on the CPU). Named errors when this build or machine has no CUDA.
void use_cuda(qsl::onnx::session_options& options) {
#if defined(QSL_RUN_WITH_CUDA)
  qsl::detail::require(qsl::cuda::device_count() > 0,
                       "--backend cuda: no CUDA device is visible to this process");
  auto runner = [](std::shared_ptr<const qsl::cuda::layer> gpu) -> qsl::onnx::layer_runner {
    return [gpu](const float* x, std::int64_t batch, float* y) { gpu->forward_host(x, batch, y); };
  };
  options.accelerator = [runner](const qsl::quantized_dense& layer) {
    return runner(std::make_shared<qsl::cuda::quantized_dense>(layer));
  };
  options.twd_accelerator = [runner](const qsl::twd_dense& layer) {
    return runner(std::make_shared<qsl::cuda::twd_dense>(layer));
  };
#else
  (void)options;
  throw qsl::error("--backend cuda: this qsl-run was built without qsl::cuda (configure with "
                   "-DQSL_WITH_CUDA=ON where nvcc is installed; docs/cuda.md)");
#endif
}

int run(int argc, char** argv) {
  CLI::App app{"qsl-run: run an ONNX model with qsl and report accuracy and speed"};
  std::string model_path, images, labels, npy, json_path, dump, backend = "cpu";
  std::int64_t random = 0, batch = 64, limit = 0;
  int threads = 0, activation_bits = 0;
  app.add_option("model", model_path, "the ONNX model")->required();
  auto* images_opt = app.add_option("--images", images, "IDX images (gzip or not)");
  auto* labels_opt = app.add_option("--labels", labels, "IDX labels, for the accuracy");
  auto* npy_opt = app.add_option("--npy", npy, "a float32 .npy batch of inputs");
  auto* random_opt = app.add_option("--random", random, "this many random inputs");
  images_opt->excludes(npy_opt)->excludes(random_opt);
  npy_opt->excludes(random_opt);
  labels_opt->needs(images_opt);
  app.add_option("--batch", batch, "inputs per run")->check(CLI::Range(1, 65536));
  app.add_option("--limit", limit, "use only the first N inputs (0: all)");
  app.add_option("--threads", threads, "CPU threads (0: all)")
      ->check(CLI::Range(0, qsl::max_threads));
  app.add_option("--backend", backend, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--activation-bits", activation_bits, "encode the compressed layers' inputs")
      ->check(CLI::Range(0, 8));
  app.add_option("--json", json_path, "write the report as JSON");
  app.add_option("--dump-outputs", dump, "write the first output of every input (.npy)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return e.get_exit_code() == 0 ? 0 : 1;
  }
  qsl::detail::require(!images.empty() || !npy.empty() || random > 0,
                       "no inputs: give --images, --npy or --random N");
  qsl::detail::require(limit >= 0, "--limit must be >= 0");
  // Report files that cannot be written fail now, not after the whole run.
  if (!json_path.empty()) qsl::check_writable(json_path);
  if (!dump.empty()) qsl::check_writable(dump);
  if (threads > 0) qsl::set_cpu_threads(threads);

  const qsl::onnx::model model = qsl::onnx::model::load(model_path);
  qsl::onnx::session_options options;
  options.device = backend == "cuda" ? qsl::onnx::backend::cuda : qsl::onnx::backend::cpu;
  if (options.device == qsl::onnx::backend::cuda) use_cuda(options);
  options.activation_bits = activation_bits;
  const qsl::onnx::session session(model, options);
  qsl::detail::require(session.input_names().size() == 1,
                       "qsl-run feeds models with one input; this one has " +
                           std::to_string(session.input_names().size()));
  const std::vector<std::int64_t> declared = session.input_shape(0);
  qsl::detail::require(!declared.empty(), "the model's input has no shape");
  std::int64_t per_input = 1;  // values per input (all dims but the batch)
  for (std::size_t d = 1; d < declared.size(); ++d) {
    qsl::detail::require(declared[d] > 0, "the model's input shape has a dynamic dimension "
                                          "besides the batch; qsl-run cannot guess it");
    per_input *= declared[d];
  }

  // The inputs, as one float array of count x per_input.
  std::vector<float> data;
  std::vector<std::uint8_t> truth;
  std::int64_t count = 0;
  if (!images.empty() || !npy.empty()) {
    qsl::tools::model_inputs in = qsl::tools::read_model_inputs(images.empty() ? npy : images, per_input, !npy.empty());
    count = in.count;
    data = std::move(in.values);
    if (!labels.empty()) {
      const auto l = qsl::tools::read_idx(labels);
      qsl::detail::require(l.shape.size() == 1 && l.shape[0] == count,
                           "'" + labels + "' does not hold one label per image");
      truth = l.bytes;
    }
  } else {
    count = random;  // made batch by batch below: memory stays one batch, however many
  }
  if (limit > 0) count = std::min(count, limit);
  qsl::detail::require(count > 0, "no inputs to run");

  std::vector<double> latencies;
  std::vector<float> dumped;
  std::vector<std::int64_t> out_shape;
  std::int64_t correct = 0;
  std::mt19937 rng(1);  // --random: uniform [0, 1), the same values whatever the batch
  std::uniform_real_distribution<float> uniform(0, 1);
  const auto all_start = std::chrono::steady_clock::now();
  for (std::int64_t first = 0; first < count; first += batch) {
    const std::int64_t n = std::min(batch, count - first);
    tensor input;
    input.shape = declared;
    input.shape[0] = n;
    if (data.empty()) {
      input.data.resize(static_cast<std::size_t>(n * per_input));
      for (float& v : input.data) v = uniform(rng);
    } else {
      input.data.assign(data.begin() + first * per_input, data.begin() + (first + n) * per_input);
    }
    const auto start = std::chrono::steady_clock::now();
    const std::vector<tensor> outputs = session.run({input});
    latencies.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    const tensor& y = outputs.at(0);
    const std::int64_t classes = n > 0 ? y.elements() / n : 0;
    out_shape = y.shape;
    if (!dump.empty()) dumped.insert(dumped.end(), y.data.begin(), y.data.end());
    for (std::int64_t i = 0; i < n && !truth.empty(); ++i) {
      const float* row = y.data.data() + i * classes;
      const auto best = std::max_element(row, row + classes) - row;
      correct += best == truth[static_cast<std::size_t>(first + i)];
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - all_start).count();
  nlohmann::json report = {{"model", model_path},
                           {"inputs", count},
                           {"batch", batch},
                           {"threads", qsl::cpu_threads()},
                           {"backend", backend},
                           {"cpu_target", qsl::to_string(qsl::active_cpu_target())},
                           {"compressed_layers", session.compressed_layers()},
                           {"activation_bits", activation_bits},
                           {"latency_ms_median", percentile(latencies, 0.5)},
                           {"latency_ms_p90", percentile(latencies, 0.9)},
                           {"images_per_s", static_cast<double>(count) / seconds}};
  if (!truth.empty()) report["accuracy"] = static_cast<double>(correct) / static_cast<double>(count);
  std::printf("%s: %lld inputs in batches of %lld, %zu compressed layers on %s, %s x %d threads\n",
              model_path.c_str(), static_cast<long long>(count), static_cast<long long>(batch),
              session.compressed_layers(), backend.c_str(),
              qsl::to_string(qsl::active_cpu_target()), qsl::cpu_threads());
  if (!truth.empty())
    std::printf("accuracy: %.4f (%lld / %lld)\n", report["accuracy"].get<double>(),
                static_cast<long long>(correct), static_cast<long long>(count));
  std::printf("latency per batch: median %.3f ms, p90 %.3f ms; throughput %.1f inputs/s\n",
              report["latency_ms_median"].get<double>(), report["latency_ms_p90"].get<double>(),
              report["images_per_s"].get<double>());
  if (!dump.empty()) {  // batches stacked along the first dimension
    std::int64_t rest = 1;
    for (std::size_t d = 1; d < out_shape.size(); ++d) rest *= out_shape[d];
    out_shape[0] = rest > 0 ? static_cast<std::int64_t>(dumped.size()) / rest : 0;
    qsl::tools::write_npy(dump, out_shape, dumped);
  }
  if (!json_path.empty()) {
    qsl::tools::write_json(json_path, report);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return qsl::tools::tool_main("qsl-run", [&] { return run(argc, argv); });
}
