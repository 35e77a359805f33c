// qsl-compress: compresses the weights of an ONNX model (Gemm / MatMul / Conv, Gather tables,
// LSTM / GRU / RNN, ConvTranspose).
//
//   qsl-compress model.onnx -o model.qsl.onnx --bits 2 --group 128 [--format qsl|standard]
//                [--budget BITS] [--max-size BYTES] [--sensitivity-samples 64]
//                [--json report.json] [--skip PATTERN] [--override PATTERN=BITS[/GROUP]]
//                [--calib samples.npz|inputs.npy|images.idx.gz [--calib-count N]
//                 [--calib-runtime auto|onnxruntime|qsl] [--no-error-feedback] [--damping 0.1]
//                 [--sequential PASSES]]
//                [--scheme bcq|twd] [--twd PATTERN] [--twd-k K | --twd-bits B]
//
// --calib runs the model (in ONNX Runtime, loaded at run time; qsl's executor where it is
// absent) on sample inputs first, and decomposes every layer
// against its output error on them; in the qsl format each layer also stores activation
// quantizers fitted on them, which qsl-run --activation-bits uses. --twd factorizes the
// matching layers with a ternary basis shared by all their outputs (TWD) instead.
//
// Exit codes: 0 done, 1 a mistake in the command (bad option, output exists without --force,
// output = input), 2 the model is malformed, unsafe or unsupported. Nothing is written unless
// everything succeeded, and then atomically.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "data_files.hpp"
#include "npz_file.hpp"
#include "qsl/onnx.hpp"
#include "qsl/onnx_calibration.hpp"
#include "qsl/onnx_session.hpp"
#include "tool_main.hpp"
#ifdef QSL_COMPRESS_WITH_ONNXRUNTIME
#include "onnxruntime_calibration.hpp"
#endif
#include "qsl/serialize.hpp"

namespace {

using qsl::onnx::compress_report;
using qsl::onnx::layer_report;

std::string human_bytes(std::uint64_t b) {
  char text[32];
  if (b >= (1U << 20))
    std::snprintf(text, sizeof text, "%.2f MiB", static_cast<double>(b) / (1 << 20));
  else if (b >= 1024)
    std::snprintf(text, sizeof text, "%.1f KiB", static_cast<double>(b) / 1024);
  else
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(b));
  return text;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s;
  for (std::int64_t d : shape) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

// A progress bar with ETA on stderr (one line per layer when stderr is not a terminal).
class progress_bar {
 public:
  explicit progress_bar(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO) != 0) {}
  void operator()(std::size_t done, std::size_t total, const std::string& layer) {
    if (!enabled_ || total == 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (done == 0) start_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double eta = done == 0 ? 0 : elapsed / done * (total - done);
    constexpr int width = 30;
    const int filled = static_cast<int>(width * done / total);
    std::string bar(filled, '#');
    bar += std::string(width - filled, '.');
    std::fprintf(stderr, "%s[%s] %zu/%zu layers  %5.1fs  ETA %5.1fs  %-30.30s%s",
                 tty_ ? "\r" : "", bar.c_str(), done, total, elapsed, eta,
                 done == total ? "done" : layer.c_str(), tty_ && done < total ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_;
};

void print_table(const compress_report& r) {
  std::printf("%-28s %-7s %-16s %6s %22s %10s %10s\n", "layer", "op", "weight shape", "bits/w",
              "bytes before -> after", "rel. error", "out. error");
  for (const layer_report& l : r.layers) {
    if (l.compressed) {
      char output_error[16] = "-";
      if (l.calibrated) std::snprintf(output_error, sizeof output_error, "%.4f", l.relative_output_error);
      std::printf("%-28.28s %-7s %-16s %6.3f %10s -> %-9s %10.4f %10s%s\n", l.node.c_str(),
                  l.op_type.c_str(), shape_text(l.shape).c_str(), l.bits_per_weight,
                  human_bytes(l.bytes_before).c_str(), human_bytes(l.bytes_after).c_str(),
                  l.relative_error, output_error,
                  l.factorized ? ("  TWD K=" + std::to_string(l.basis_vectors)).c_str() : "");
      if (!l.runs_as.empty()) std::printf("  runs as %s\n", l.runs_as.c_str());
      if (!l.budget_measurements.empty()) {  // what the budget chose from: bits:error
        std::string measured;
        for (const auto& m : l.budget_measurements) {
          char entry[48];
          const bool chosen = m.bits == l.bits && m.group_size == l.group_size;
          std::snprintf(entry, sizeof entry, " %s%d/%lld:%.4f", chosen ? "*" : "", m.bits,
                        static_cast<long long>(m.group_size), m.relative_error);
          measured += entry;
        }
        std::printf("  budget: bits/group:error%s\n", measured.c_str());
        if (l.sensitivity > 0) {  // the model's output change, measured at ^, scaled to others
          std::string changes;
          for (const auto& m : l.budget_measurements) {
            char entry[48];
            std::snprintf(entry, sizeof entry, " %s%d/%lld:%.3g", m.measured ? "^" : "", m.bits,
                          static_cast<long long>(m.group_size), m.output_change);
            changes += entry;
          }
          std::printf("  budget: model output change (^ measured)%s\n", changes.c_str());
        }
      }
    } else {
      std::printf("%-28.28s %-7s %-16s  (%s)\n", l.node.c_str(), l.op_type.c_str(),
                  shape_text(l.shape).c_str(), l.note.c_str());
    }
    if (!l.warning.empty()) std::printf("  warning: %s\n", l.warning.c_str());
  }
  if (r.opset_after != r.opset_before)
    std::printf("\nopset: converted the default-domain opset %lld -> %lld with ONNX's version "
                "converter (the standard format's decoding needs >= %lld)\n",
                static_cast<long long>(r.opset_before), static_cast<long long>(r.opset_after),
                static_cast<long long>(qsl::onnx::min_standard_opset));
  if (r.shape_reads_folded > 0)
    std::printf(
        "\nshapes: %d reads of static dimensions made constants (the runtime folds the "
        "shape arithmetic after them once, at load; --no-fold-shapes keeps them)\n",
        r.shape_reads_folded);
  std::printf("\nmodel: %s -> %s (%.2f%% of the original), compressed layers: %s -> %s, "
              "%.3f bits per weight\n",
              human_bytes(r.model_bytes_before).c_str(), human_bytes(r.model_bytes_after).c_str(),
              100.0 * r.size_ratio(), human_bytes(r.weight_bytes_before).c_str(),
              human_bytes(r.weight_bytes_after).c_str(), r.bits_per_weight());
  if (r.budget_code_bytes > 0)
    std::printf("budget: codes within %s (%s taken)\n", human_bytes(r.budget_code_bytes).c_str(),
                human_bytes(r.weight_bytes_after).c_str());
}

nlohmann::json to_json(const compress_report& r, const std::string& input,
                       const std::string& output, const std::string& format,
                       const std::string& coefficients) {
  nlohmann::json layers = nlohmann::json::array();
  for (const layer_report& l : r.layers) {
    nlohmann::json j = {{"node", l.node},          {"op_type", l.op_type}, {"weight", l.weight},
                        {"shape", l.shape},        {"compressed", l.compressed}};
    if (l.compressed) {
      j["scheme"] = l.factorized ? "twd" : "bcq";
      if (l.factorized) j["basis_vectors"] = l.basis_vectors;
      j["bits"] = l.bits;
      j["basis"] = l.basis == qsl::basis::ternary ? "ternary" : "binary";
      j["group_size"] = l.group_size;
      j["bytes_before"] = l.bytes_before;
      j["bytes_after"] = l.bytes_after;
      j["bits_per_weight"] = l.bits_per_weight;
      j["relative_error"] = l.relative_error;
      j["calibrated"] = l.calibrated;
      if (l.calibrated) {
        j["relative_output_error"] = l.relative_output_error;
        j["calibration_vectors"] = l.calibration_vectors;
      }
      j["runs_as"] = l.runs_as;
      j["rows_per_call"] = l.rows_per_call;
      if (!l.budget_measurements.empty()) {
        nlohmann::json measured = nlohmann::json::array();
        for (const auto& m : l.budget_measurements)
          measured.push_back({{"bits", m.bits},
                              {"group_size", m.group_size},
                              {"bytes", m.bytes},
                              {"relative_error", m.relative_error},
                              {"output_change", m.output_change},
                              {"measured", m.measured}});
        j["budget_measurements"] = measured;
        if (l.sensitivity > 0) j["sensitivity"] = l.sensitivity;
      }
    } else {
      j["note"] = l.note;
    }
    if (!l.warning.empty()) j["warning"] = l.warning;
    layers.push_back(j);
  }
  return {{"input", input},
          {"output", output},
          {"format", format},
          {"coefficients", coefficients},
          {"opset", {{"before", r.opset_before}, {"after", r.opset_after}}},
          {"shape_reads_folded", r.shape_reads_folded},
          {"layers", layers},
          {"totals",
           {{"model_bytes_before", r.model_bytes_before},
            {"model_bytes_after", r.model_bytes_after},
            {"size_ratio", r.size_ratio()},
            {"weight_bytes_before", r.weight_bytes_before},
            {"weight_bytes_after", r.weight_bytes_after},
            {"bits_per_weight", r.bits_per_weight()},
            {"budget_code_bytes", r.budget_code_bytes}}}};
}

// "PATTERN=BITS" or "PATTERN=BITS/GROUP" -> an override of the default options.
qsl::onnx::layer_override parse_override(const std::string& text,
                                         const qsl::decompose_options& defaults) {
  const auto eq = text.rfind('=');
  if (eq == std::string::npos || eq == 0)
    throw qsl::error("--override " + text + ": expected PATTERN=BITS or PATTERN=BITS/GROUP");
  qsl::onnx::layer_override o{text.substr(0, eq), defaults};
  const std::string spec = text.substr(eq + 1);
  const auto slash = spec.find('/');
  try {
    std::size_t used = 0;
    o.options.bits = std::stoi(spec.substr(0, slash), &used);
    if (used != spec.substr(0, slash).size()) throw std::invalid_argument(spec);
    if (slash != std::string::npos) {
      o.options.group_size = std::stoll(spec.substr(slash + 1), &used);
      if (used != spec.substr(slash + 1).size()) throw std::invalid_argument(spec);
    }
  } catch (const std::exception&) {
    throw qsl::error("--override " + text + ": BITS and GROUP must be integers");
  }
  qsl::detail::require(o.options.bits >= 1 && o.options.bits <= qsl::max_bits,
                       "--override " + text + ": bits must be 1.." + std::to_string(qsl::max_bits));
  qsl::detail::require(o.options.group_size == 0 ||
                           (o.options.group_size >= 8 && o.options.group_size % 8 == 0),
                       "--override " + text + ": group must be 0 or a positive multiple of 8");
  return o;
}

// Where and how --calib runs the model.
struct calib_settings {
  std::string path;
  std::int64_t count = 1024;
  std::string runtime = "auto";  // auto, onnxruntime, qsl
  std::string library;           // libonnxruntime.so (empty: looked up)
  std::int64_t batch = 16;
  int threads = 0;
  std::int64_t sensitivity_samples = 64;  // under a budget, in ONNX Runtime; 0: off
  int sequential = 0;                     // passes of sequential calibration (0: off)
};

// The calibration file's arrays: an .npz's by name, or one unnamed array (.npy of any dtype;
// IDX bytes scaled to [0, 1] floats).
std::vector<qsl::tools::typed_array> read_calibration_file(const std::string& path) {
  const auto ends_with = [&](const char* suffix) {
    const std::size_t n = std::strlen(suffix);
    return path.size() >= n && path.compare(path.size() - n, n, suffix) == 0;
  };
  if (ends_with(".npz")) return qsl::tools::read_npz(path);
  if (ends_with(".npy"))
    return {qsl::tools::parse_npy(qsl::read_file(path, std::size_t{1} << 34), "'" + path + "': ")};
  const qsl::tools::array idx = qsl::tools::read_idx(path);
  qsl::tools::typed_array a;
  a.type = 1;
  a.shape = idx.shape;
  a.bytes.resize(idx.bytes.size() * 4);
  for (std::size_t i = 0; i < idx.bytes.size(); ++i) {
    const float v = idx.bytes[i] / 255.0f;
    std::memcpy(a.bytes.data() + 4 * i, &v, 4);
  }
  return {std::move(a)};
}

// qsl's executor (no ONNX Runtime): a model with one float input, one unnamed array or one
// named after it.
qsl::onnx::calibration_data collect_in_qsl(const qsl::onnx::model& model,
                                           const std::vector<qsl::tools::typed_array>& arrays,
                                           std::int64_t count, qsl::onnx::calibration_options o) {
  const qsl::onnx::session plan(model);
  qsl::detail::require(plan.input_names().size() == 1 && arrays.size() == 1,
                       "--calib with qsl's executor feeds models with one input; this one has " +
                           std::to_string(plan.input_names().size()) +
                           " (ONNX Runtime feeds any: --calib-runtime onnxruntime)");
  const qsl::tools::typed_array& a = arrays.front();
  qsl::detail::require(a.name.empty() || a.name == plan.input_names()[0],
                       "--calib: array '" + a.name + "' names no input of the model (its input: '" +
                           plan.input_names()[0] + "')");
  qsl::detail::require(a.type == 1, "--calib with qsl's executor reads float32 arrays; this one "
                                    "is ONNX type " + std::to_string(a.type));
  std::int64_t per_input = 1;
  const auto& shape = plan.input_shape(0);
  for (std::size_t d = 1; d < shape.size(); ++d) per_input *= shape[d] > 0 ? shape[d] : 0;
  qsl::detail::require(!shape.empty() && per_input > 0,
                       "--calib: the model's input shape has a dynamic dimension besides the "
                       "batch; qsl-compress cannot tell how wide an input is");
  const std::int64_t samples = a.shape.empty() ? 0 : a.shape[0];
  qsl::detail::require(samples > 0, "--calib: the file holds no inputs");
  qsl::detail::require(static_cast<std::int64_t>(a.bytes.size() / 4) == samples * per_input,
                       "--calib: the file holds inputs of " +
                           std::to_string(a.bytes.size() / 4 / static_cast<std::size_t>(samples)) +
                           " values; the model's input takes " + std::to_string(per_input));
  if (count == 0 || count > samples) count = samples;
  o.batch = 64;
  return qsl::onnx::collect_calibration(model, reinterpret_cast<const float*>(a.bytes.data()),
                                        count, o);
}

// Runs the model on the calibration inputs (ONNX Runtime where it can be loaded, else qsl's
// executor) and returns each layer's statistics.
// What the calibration ran on, for the report.
struct calibration_run {
  std::string runner = "qsl's executor";
  std::int64_t samples = 0;
  bool in_onnxruntime = false;  // then a budget's sensitivity can be measured there too
  std::string pass;             // " (pass k of n)" while sequential calibration runs
};

qsl::onnx::calibration_data collect(const qsl::onnx::model& model, const calib_settings& s,
                                    const std::vector<qsl::tools::typed_array>& arrays,
                                    bool quiet, calibration_run& run) {
  std::string& runner = run.runner;
  qsl::onnx::calibration_options o;
  const auto start = std::chrono::steady_clock::now();
  std::int64_t shown = -1;  // the last whole second printed
  o.progress = [&](std::int64_t done, std::int64_t total) {
    run.samples = done;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (quiet || (done != total && static_cast<std::int64_t>(seconds) == shown)) return;
    shown = static_cast<std::int64_t>(seconds);
    std::fprintf(stderr, "calibration%s (%s): %lld/%lld samples  %.1fs\n", run.pass.c_str(),
                 runner.c_str(), static_cast<long long>(done), static_cast<long long>(total),
                 seconds);
  };
#ifdef QSL_COMPRESS_WITH_ONNXRUNTIME
  if (s.runtime != "qsl") {
    const qsl::tools::onnxruntime_library* ort = nullptr;
    try {
      ort = &qsl::tools::onnxruntime_library::load(s.library);
    } catch (const qsl::error& e) {
      if (s.runtime == "onnxruntime" || !s.library.empty()) throw;
      if (!quiet)
        std::fprintf(stderr, "qsl-compress: %s\ncalibrating with qsl's executor instead\n",
                     e.what());
    }
    if (ort != nullptr) {
      runner = "ONNX Runtime " + ort->version();
      run.in_onnxruntime = true;
      qsl::tools::onnxruntime_calibration_options ro;
      ro.batch = s.batch;
      ro.threads = s.threads;
      ro.statistics = o;
      return qsl::tools::calibrate_in_onnxruntime(*ort, model, arrays, s.count, ro);
    }
  }
#else
  qsl::detail::require(s.runtime != "onnxruntime",
                       "--calib-runtime onnxruntime: this qsl-compress was built without ONNX "
                       "Runtime's headers (tools/fetch-onnxruntime-headers.sh, then rebuild)");
#endif
  return collect_in_qsl(model, arrays, s.count, o);
}

int run(int argc, char** argv) {
  CLI::App app{
      "qsl-compress: compress the weights of an ONNX model (Gemm, MatMul, Conv, Gather tables, "
      "LSTM/GRU/RNN, ConvTranspose)"};
  std::string input, output, json_path, format = "qsl", basis = "binary", method = "multi_start";
  std::string coefficients = "f32";
  int bits = 2, edge_bits = 0, threads = 0;
  double budget_bits = 0;
  std::uint64_t max_size = 0;
  std::int64_t group = 128, min_weights = 4096;
  std::int64_t min_grouped_row_width = qsl::onnx::compress_options{}.min_grouped_row_width;
  bool force = false, quiet = false, error_feedback = true, no_fuse = false, no_fold_shapes = false;
  int activation_bits = 0;
  std::int64_t native_rows = qsl::onnx::compress_options{}.native_min_rows;
  std::int64_t int8_rows = qsl::onnx::compress_options{}.int8_min_rows;
  int small_batch_bits = qsl::onnx::compress_options{}.small_batch_bits;
  calib_settings calib;
  // Error feedback's ridge, relative to mean(diag H). qsl's default is GPTQ's 0.01; the tool
  // uses 0.1, which generalized better from 1,024 training images to the test images of the
  // bundled model (docs/benchmarks.md, "Calibration").
  float damping = 0.1f;
  std::vector<std::string> twd_layers;
  std::string scheme = "bcq";
  int twd_k = 0;
  double twd_bits = 0;
  std::vector<std::string> skip, overrides;
  app.add_option("input", input, "the ONNX model to compress")->required();
  app.add_option("-o,--output", output, "where to write the compressed model")->required();
  app.add_option("--bits", bits, "planes per weight (1..8)")->check(CLI::Range(1, 8));
  app.add_option("--group", group, "columns per coefficient group (0: one group per row)");
  app.add_option("--basis", basis, "binary or ternary")
      ->check(CLI::IsMember({"binary", "ternary"}));
  app.add_option("--method", method, "greedy, alternating or multi_start")
      ->check(CLI::IsMember({"greedy", "alternating", "multi_start"}));
  app.add_option("--format", format,
                 "qsl (compact: qsl-run, or ONNX Runtime with libqsl_onnxruntime.so) or "
                 "standard (any runtime)")
      ->check(CLI::IsMember({"qsl", "standard"}));
  app.add_option("--coefficients", coefficients,
                 "how the coefficients are stored: f32, or f16 (half the bytes: k = 2 in groups of "
                 "128 stores 2.25 bits per weight instead of 2.5; each coefficient rounded by at "
                 "most 2^-11 of itself)")
      ->check(CLI::IsMember({"f32", "f16"}));
  app.add_flag("--no-fuse", no_fuse,
               "qsl format: DecodeWeights nodes feeding the original MatMul/Gemm, not fused "
               "QuantizedMatMul layers");
  app.add_flag("--no-fold-shapes", no_fold_shapes,
               "keep Shape reads of static dimensions as nodes (by default they become "
               "constants, which the runtime folds with the arithmetic after them)");
  app.add_option("--activation-bits", activation_bits,
                 "activation mode of the fused layers in ONNX Runtime: 0 float, 1..8 encoded")
      ->check(CLI::Range(0, 8));
  app.add_option("--native-rows", native_rows,
                 "qsl format: layers with at least this many rows per call at batch 1 (tokens, "
                 "output pixels) stay on ONNX Runtime's own operator, their weight decoded at "
                 "load, where its fp32 GEMM is faster than qsl's kernels (0: never)")
      ->check(CLI::NonNegativeNumber);
  bool native_int8 = false;
  app.add_flag("--native-int8", native_int8,
               "qsl format: MatMul/Gemm layers kept on ONNX Runtime's operator run as its int8 "
               "product (activations quantized per call, the weight decoded and requantized to "
               "int8 at load: int8 GEMM speed, one byte per weight resident)");
  app.add_option("--int8-rows", int8_rows,
                 "qsl format: fused MatMul/Gemm layers multiply this many rows per call or more "
                 "with 8-bit activations on ONNX Runtime's integer GEMM, decoding the weight a "
                 "block at a time (only the packed code stays resident); MatMul/Gemm layers are "
                 "then fused at any size. 0: never (float activations at every row count)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--small-batch-bits", small_batch_bits,
                 "qsl format, with --int8-rows: calls of fewer rows encode each vector with this "
                 "many bits where the CPU has table kernels for them (x86 AVX2/AVX-512, NEON; "
                 "several times faster than float activations there), float activations "
                 "elsewhere. 0: float activations below --int8-rows on every CPU")
      ->check(CLI::Range(0, 8));
  app.add_option("--json", json_path, "also write the report as JSON to this file");
  app.add_option("--skip", skip, "leave layers whose node or weight name matches (glob)");
  app.add_option("--override", overrides, "PATTERN=BITS[/GROUP] for matching layers");
  app.add_option("--min-weights", min_weights, "leave smaller weights as they are");
  app.add_option("--min-grouped-row-width", min_grouped_row_width,
                 "leave grouped (depthwise) convolutions whose rows have fewer inputs as they "
                 "are (their coefficients would cost more than their planes), unless an "
                 "--override matches them; 0: compress them too")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--edge-bits", edge_bits, "bits of the first and last compressed layer")
      ->check(CLI::Range(0, 8));
  app.add_option("--budget", budget_bits,
                 "a size budget: the most stored bits per weight (planes and coefficients) on "
                 "average over the compressed layers; each layer's bits are chosen from 1, 2, 3, "
                 "4 (6, 8 for small layers) by its measured error (output error with --calib)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-size", max_size,
                 "the most bytes the whole output file may take (e.g. 5MB, 800KiB), by the same "
                 "allocation as --budget (both: the tighter wins)")
      ->transform(CLI::AsSizeValue(true));
  app.add_option("--threads", threads, "threads for the decomposition (0: all)")
      ->check(CLI::Range(0, qsl::max_threads));
  app.add_option("--calib", calib.path,
                 "calibration samples: an .npz with one array per graph input (samples first; "
                 "any dtype the input takes), or for a one-input model a .npy or IDX images "
                 "(scaled to [0, 1])");
  app.add_option("--calib-count", calib.count, "use the first N calibration samples (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--calib-runtime", calib.runtime,
                 "run the model for calibration in onnxruntime, in qsl's executor, or auto "
                 "(ONNX Runtime where its library loads)")
      ->check(CLI::IsMember({"auto", "onnxruntime", "qsl"}));
  app.add_option("--onnxruntime-library", calib.library,
                 "libonnxruntime.so for --calib (default: $QSL_ONNXRUNTIME_LIBRARY, the "
                 "system's, or PyPI onnxruntime's)");
  app.add_option("--calib-batch", calib.batch,
                 "samples per ONNX Runtime run during calibration (a fixed batch size wins)")
      ->check(CLI::PositiveNumber);
  app.add_option("--sensitivity-samples", calib.sensitivity_samples,
                 "with --budget / --max-size and --calib in ONNX Runtime: weigh each layer's "
                 "errors by the model's output change on this many calibration samples "
                 "(one run per layer; 0: off, the layers' own output errors)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--sequential", calib.sequential,
                 "with --calib: split the layers (graph order) into this many groups and "
                 "calibrate each group after the first on the model with the earlier groups "
                 "compressed (one more calibration run per group; 0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--error-feedback,!--no-error-feedback", error_feedback,
               "with --calib: push each column's error into the columns not yet coded "
               "(default on)");
  app.add_option("--scheme", scheme,
                 "bcq: per-row binary/ternary codes; twd: every layer factorized with a shared "
                 "ternary basis (the same as --twd '*')")
      ->check(CLI::IsMember({"bcq", "twd"}));
  app.add_option("--twd", twd_layers,
                 "factorize the layers whose node or weight name matches (glob; '*': all) with "
                 "a shared ternary basis (TWD)");
  auto* twd_k_opt = app.add_option("--twd-k", twd_k, "TWD: basis vectors per layer")
                        ->check(CLI::Range(1, 65535));
  auto* twd_bits_opt = app.add_option("--twd-bits", twd_bits,
                                      "TWD: the most stored bits per weight (chooses K per layer)")
                           ->check(CLI::PositiveNumber);
  twd_k_opt->excludes(twd_bits_opt);
  app.add_option("--damping", damping,
                 "with --calib and error feedback: ridge added to H, relative to its mean "
                 "diagonal (default 0.1)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--force", force, "overwrite the output file if it exists");
  app.add_flag("-q,--quiet", quiet, "no progress bar");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return e.get_exit_code() == 0 ? 0 : 1;
  }

  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(output, ec) && fs::exists(input, ec) && fs::equivalent(input, output, ec))
    throw qsl::error("refusing to write " + output + ": it is the input model");
  if (fs::exists(output, ec) && !force)
    throw qsl::error("refusing to overwrite " + output + " (use --force)");
  if (!json_path.empty() && fs::exists(json_path, ec) && !force)
    throw qsl::error("refusing to overwrite " + json_path + " (use --force)");
  // A path that cannot be written fails now, not after minutes of compression.
  qsl::check_writable(output);
  if (!json_path.empty()) qsl::check_writable(json_path);

  qsl::onnx::compress_options options;
  options.weights.bits = bits;
  options.weights.group_size = group;
  options.weights.basis = basis == "ternary" ? qsl::basis::ternary : qsl::basis::binary;
  options.weights.method = method == "greedy"        ? qsl::method::greedy
                           : method == "alternating" ? qsl::method::alternating
                                                     : qsl::method::multi_start;
  options.weights.threads = threads;
  qsl::detail::require(group == 0 || (group >= 8 && group % 8 == 0),
                       "--group " + std::to_string(group) + ": expected 0 or a multiple of 8");
  qsl::detail::require(min_weights >= 0, "--min-weights must be >= 0");
  for (const auto& text : overrides) options.overrides.push_back(parse_override(text, options.weights));
  options.skip = skip;
  if (scheme == "twd" && twd_layers.empty()) twd_layers = {"*"};
  options.twd_layers = twd_layers;
  qsl::detail::require(twd_layers.empty() || twd_k > 0 || twd_bits > 0,
                       "--twd / --scheme twd needs --twd-k K or --twd-bits B");
  qsl::detail::require(twd_layers.empty() || format == "qsl",
                       "--twd: TWD layers have no standard-format encoding yet; use --format qsl");
  options.twd.basis_vectors = twd_k;
  options.twd.bits_per_weight = twd_bits;
  options.twd.threads = threads;
  options.min_weights = min_weights;
  options.min_grouped_row_width = min_grouped_row_width;
  options.fuse = !no_fuse;
  options.fold_shapes = !no_fold_shapes;
  options.activation_bits = activation_bits;
  options.native_min_rows = native_rows;
  options.int8_min_rows = int8_rows;
  options.small_batch_bits = small_batch_bits;
  options.native_int8 = native_int8;
  options.edge_bits = edge_bits;
  options.budget_bits = budget_bits;
  options.max_model_bytes = max_size;
  options.format = format == "standard" ? qsl::onnx::output_format::standard
                                        : qsl::onnx::output_format::qsl;
  options.coefficients = coefficients == "f16" ? qsl::onnx::coefficient_storage::float16
                                               : qsl::onnx::coefficient_storage::float32;
  progress_bar bar(!quiet);
  options.progress = [&bar](std::size_t done, std::size_t total, const std::string& layer) {
    bar(done, total, layer);
  };

  qsl::onnx::model model = qsl::onnx::model::load(input);
  qsl::onnx::calibration_data calibration;
  calibration_run calibrated;
  std::vector<qsl::tools::typed_array> calib_arrays;  // kept: the sensitivity runs them again
  if (!calib.path.empty()) {
    calib.threads = threads;
    calib_arrays = read_calibration_file(calib.path);
    calibration = collect(model, calib, calib_arrays, quiet, calibrated);
    options.calibration = &calibration;
    options.weights.error_feedback = error_feedback;
    options.weights.damping = damping;
    for (auto& o : options.overrides) {
      o.options.error_feedback = error_feedback;
      o.options.damping = damping;
    }
    // Each later group of layers calibrated again, on the model with the earlier ones' codes.
    options.sequential_passes = calib.sequential;
    options.recalibrate = [&, pass = 1](const qsl::onnx::model& shadow) mutable {
      calibration_run again;
      again.pass = " (sequential pass " + std::to_string(++pass) + ")";
      return collect(shadow, calib, calib_arrays, quiet, again);
    };
  } else {
    qsl::detail::require(calib.sequential == 0, "--sequential needs --calib");
  }
  std::int64_t sensitivity_samples = 0;
#ifdef QSL_COMPRESS_WITH_ONNXRUNTIME
  // Under a budget, each layer's errors weighed by how far its code moves the model's outputs.
  if ((budget_bits > 0 || max_size > 0) && calibrated.in_onnxruntime &&
      calib.sensitivity_samples > 0) {
    qsl::tools::onnxruntime_calibration_options ro;
    ro.batch = calib.batch;
    ro.threads = threads;
    const qsl::tools::onnxruntime_output_change change(
        qsl::tools::onnxruntime_library::load(calib.library), model, calib_arrays,
        calib.sensitivity_samples, ro);
    sensitivity_samples = change.samples();
    options.sensitivity = change;
  }
#endif
  if ((budget_bits > 0 || max_size > 0) && !calib.path.empty() && !calibrated.in_onnxruntime &&
      calib.sensitivity_samples > 0 && !quiet)
    std::fprintf(stderr, "qsl-compress: the budget's per-layer sensitivity is measured in ONNX "
                         "Runtime only; the layers' own output errors weigh it instead\n");
  const compress_report report = qsl::onnx::compress(model, options);
  model.save(output, force);
  print_table(report);
  if (!calib.path.empty())
    std::printf("calibrated on %lld samples of %s (%s)\n",
                static_cast<long long>(calibrated.samples), calib.path.c_str(),
                calibrated.runner.c_str());
  if (calib.sequential > 1)
    std::printf("sequential calibration: %d groups of layers, each after the first calibrated "
                "on the model with the groups before it compressed\n", calib.sequential);
  if (sensitivity_samples > 0)
    std::printf("budget weighed by each layer's output change on %lld samples (ONNX Runtime)\n",
                static_cast<long long>(sensitivity_samples));
  std::printf("wrote %s (%s format)\n", output.c_str(), format.c_str());
  if (!json_path.empty()) {
    nlohmann::json j = to_json(report, input, output, format, coefficients);
    if (!calib.path.empty())
      j["calibration"] = {{"file", calib.path},
                          {"samples", calibrated.samples},
                          {"runtime", calibrated.runner},
                          {"sensitivity_samples", sensitivity_samples},
                          {"sequential_passes", calib.sequential}};
    qsl::tools::write_json(json_path, j);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return qsl::tools::tool_main("qsl-compress", [&] { return run(argc, argv); });
}
