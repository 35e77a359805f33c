// qsl-compress: compresses the Gemm / MatMul / Conv weights of an ONNX model.
//
//   qsl-compress model.onnx -o model.qsl.onnx --bits 2 --group 128 [--format qsl|standard]
//                [--json report.json] [--skip PATTERN] [--override PATTERN=BITS[/GROUP]]
//
// Exit codes: 0 done, 1 a mistake in the command (bad option, output exists without --force,
// output = input), 2 the model is malformed, unsafe or unsupported. Nothing is written unless
// everything succeeded, and then atomically.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "qsl/onnx.hpp"
#include "tool_main.hpp"
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
  std::printf("%-28s %-7s %-16s %6s %22s %10s\n", "layer", "op", "weight shape", "bits/w",
              "bytes before -> after", "rel. error");
  for (const layer_report& l : r.layers) {
    if (l.compressed) {
      std::printf("%-28.28s %-7s %-16s %6.3f %10s -> %-9s %10.4f\n", l.node.c_str(),
                  l.op_type.c_str(), shape_text(l.shape).c_str(), l.bits_per_weight,
                  human_bytes(l.bytes_before).c_str(), human_bytes(l.bytes_after).c_str(),
                  l.relative_error);
    } else {
      std::printf("%-28.28s %-7s %-16s  (%s)\n", l.node.c_str(), l.op_type.c_str(),
                  shape_text(l.shape).c_str(), l.note.c_str());
    }
  }
  std::printf("\nmodel: %s -> %s (%.2f%% of the original), compressed layers: %s -> %s, "
              "%.3f bits per weight\n",
              human_bytes(r.model_bytes_before).c_str(), human_bytes(r.model_bytes_after).c_str(),
              100.0 * r.size_ratio(), human_bytes(r.weight_bytes_before).c_str(),
              human_bytes(r.weight_bytes_after).c_str(), r.bits_per_weight());
}

nlohmann::json to_json(const compress_report& r, const std::string& input,
                       const std::string& output, const std::string& format) {
  nlohmann::json layers = nlohmann::json::array();
  for (const layer_report& l : r.layers) {
    nlohmann::json j = {{"node", l.node},          {"op_type", l.op_type}, {"weight", l.weight},
                        {"shape", l.shape},        {"compressed", l.compressed}};
    if (l.compressed) {
      j["bits"] = l.bits;
      j["basis"] = l.basis == qsl::basis::ternary ? "ternary" : "binary";
      j["group_size"] = l.group_size;
      j["bytes_before"] = l.bytes_before;
      j["bytes_after"] = l.bytes_after;
      j["bits_per_weight"] = l.bits_per_weight;
      j["relative_error"] = l.relative_error;
    } else {
      j["note"] = l.note;
    }
    layers.push_back(j);
  }
  return {{"input", input},
          {"output", output},
          {"format", format},
          {"layers", layers},
          {"totals",
           {{"model_bytes_before", r.model_bytes_before},
            {"model_bytes_after", r.model_bytes_after},
            {"size_ratio", r.size_ratio()},
            {"weight_bytes_before", r.weight_bytes_before},
            {"weight_bytes_after", r.weight_bytes_after},
            {"bits_per_weight", r.bits_per_weight()}}}};
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

int run(int argc, char** argv) {
  CLI::App app{"qsl-compress: compress the Gemm/MatMul/Conv weights of an ONNX model"};
  std::string input, output, json_path, format = "qsl", basis = "binary", method = "multi_start";
  int bits = 2, edge_bits = 0, threads = 0;
  std::int64_t group = 128, min_weights = 4096;
  bool force = false, quiet = false;
  std::vector<std::string> skip, overrides;
  app.add_option("input", input, "the ONNX model to compress")->required();
  app.add_option("-o,--output", output, "where to write the compressed model")->required();
  app.add_option("--bits", bits, "planes per weight (1..8)")->check(CLI::Range(1, 8));
  app.add_option("--group", group, "columns per coefficient group (0: one group per row)");
  app.add_option("--basis", basis, "binary or ternary")
      ->check(CLI::IsMember({"binary", "ternary"}));
  app.add_option("--method", method, "greedy, alternating or multi_start")
      ->check(CLI::IsMember({"greedy", "alternating", "multi_start"}));
  app.add_option("--format", format, "qsl (compact, qsl runs it) or standard (any runtime)")
      ->check(CLI::IsMember({"qsl", "standard"}));
  app.add_option("--json", json_path, "also write the report as JSON to this file");
  app.add_option("--skip", skip, "leave layers whose node or weight name matches (glob)");
  app.add_option("--override", overrides, "PATTERN=BITS[/GROUP] for matching layers");
  app.add_option("--min-weights", min_weights, "leave smaller weights as they are");
  app.add_option("--edge-bits", edge_bits, "bits of the first and last compressed layer")
      ->check(CLI::Range(0, 8));
  app.add_option("--threads", threads, "threads for the decomposition (0: all)");
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
  qsl::detail::require(threads >= 0, "--threads must be >= 0");
  qsl::detail::require(min_weights >= 0, "--min-weights must be >= 0");
  for (const auto& text : overrides) options.overrides.push_back(parse_override(text, options.weights));
  options.skip = skip;
  options.min_weights = min_weights;
  options.edge_bits = edge_bits;
  options.format = format == "standard" ? qsl::onnx::output_format::standard
                                        : qsl::onnx::output_format::qsl;
  progress_bar bar(!quiet);
  options.progress = [&bar](std::size_t done, std::size_t total, const std::string& layer) {
    bar(done, total, layer);
  };

  qsl::onnx::model model = qsl::onnx::model::load(input);
  const compress_report report = qsl::onnx::compress(model, options);
  model.save(output, force);
  print_table(report);
  std::printf("wrote %s (%s format)\n", output.c_str(), format.c_str());
  if (!json_path.empty()) {
    qsl::tools::write_json(json_path, to_json(report, input, output, format));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return qsl::tools::tool_main("qsl-compress", [&] { return run(argc, argv); });
}
