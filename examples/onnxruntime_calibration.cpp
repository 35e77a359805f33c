// qsl-compress --calib in ONNX Runtime (onnxruntime_calibration.hpp).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include "onnxruntime_calibration.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>

namespace qsl::tools {
namespace {

std::string type_name(std::int32_t type) {
  const element_type* t = element_type_of(type);
  return t != nullptr ? t->name : "type " + std::to_string(type);
}

// Model input shapes: '?' for a symbolic size.
std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    out += (i ? ", " : "") + (shape[i] < 0 ? std::string("?") : std::to_string(shape[i]));
  return out + "]";
}

// PyPI onnxruntime's shared library: `${PYTHON:-python3}` says where the package is.
std::string python_onnxruntime() {
  const char* python = std::getenv("PYTHON");
  const std::string command =
      std::string(python != nullptr && *python ? python : "python3") +
      " -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))' 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {};
  std::array<char, 4096> line{};
  const bool read = std::fgets(line.data(), static_cast<int>(line.size()), pipe) != nullptr;
  pclose(pipe);
  if (!read) return {};
  std::string folder(line.data());
  while (!folder.empty() && (folder.back() == '\n' || folder.back() == '\r')) folder.pop_back();
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(folder + "/capi", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("libonnxruntime.so", 0) == 0) return e.path().string();
  }
  return {};
}

}  // namespace

const onnxruntime_library& onnxruntime_library::load(const std::string& path) {
  static std::mutex mutex;
  static std::unique_ptr<onnxruntime_library> loaded;
  const std::lock_guard<std::mutex> lock(mutex);
  if (loaded) {
    detail::require(path.empty() || path == loaded->path_,
                    "ONNX Runtime is already loaded from '" + loaded->path_ + "'");
    return *loaded;
  }
  std::vector<std::string> candidates;
  if (!path.empty()) {
    candidates.push_back(path);
  } else {
    if (const char* env = std::getenv("QSL_ONNXRUNTIME_LIBRARY"); env != nullptr && *env)
      candidates.push_back(env);
    candidates.push_back("libonnxruntime.so.1");
    candidates.push_back("libonnxruntime.so");
    candidates.push_back("");  // PyPI's, looked up only if the others fail
  }
  std::string tried;
  for (std::string candidate : candidates) {
    if (candidate.empty()) {
      candidate = python_onnxruntime();
      if (candidate.empty()) {
        tried += "\n  PyPI onnxruntime: not found by python3";
        continue;
      }
    }
    void* handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      tried += "\n  " + candidate + ": " + (why != nullptr ? why : "cannot be loaded");
      continue;
    }
    using get_api_base = const OrtApiBase* (*)();
    const auto get = reinterpret_cast<get_api_base>(dlsym(handle, "OrtGetApiBase"));
    if (get == nullptr) {
      tried += "\n  " + candidate + ": no OrtGetApiBase (not ONNX Runtime)";
      dlclose(handle);
      continue;
    }
    const OrtApiBase* base = get();
    const OrtApi* api = base->GetApi(ORT_API_VERSION);
    const std::string version = base->GetVersionString();
    if (api == nullptr) {
      dlclose(handle);
      throw qsl::error("ONNX Runtime " + version + " at '" + candidate +
                       "' is older than the API qsl-compress was built with (version " +
                       std::to_string(ORT_API_VERSION) + "); use a newer onnxruntime");
    }
    Ort::InitApi(api);  // the handle stays open for the process
    loaded.reset(new onnxruntime_library());
    loaded->path_ = candidate;
    loaded->version_ = version;
    return *loaded;
  }
  throw qsl::error("ONNX Runtime's shared library was not found; tried:" + tried +
                   "\n(pip install onnxruntime, or give its libonnxruntime.so with "
                   "--onnxruntime-library or QSL_ONNXRUNTIME_LIBRARY)");
}

namespace {

// One graph input, matched with its array.
struct feed {
  std::string name;
  std::int32_t type = 0;
  std::vector<std::int64_t> shape;  // the array's, samples first
  const std::uint8_t* data = nullptr;
  std::size_t sample_bytes = 0;
};

// The session's inputs, each matched with its array of `inputs` (checked: names, dtypes,
// shapes, equal sample counts, finite floats), and the samples to run in batches of `batch`.
struct matched_feeds {
  std::vector<feed> feeds;
  std::vector<const char*> names;  // feeds' names, for Run
  std::int64_t count = 0;          // samples to run
  std::int64_t batch = 0;          // samples per run
};

matched_feeds match_feeds(Ort::Session& session, const std::vector<typed_array>& inputs,
                          std::int64_t count, std::int64_t batch_wanted, const std::string& where) {
  detail::require(batch_wanted >= 1,
                  where + "batch is " + std::to_string(batch_wanted) + "; expected >= 1");
  detail::require(!inputs.empty(), where + "no input arrays");
  Ort::AllocatorWithDefaultOptions allocator;
  matched_feeds out;
  std::vector<feed>& feeds = out.feeds;
  std::vector<std::string> graph_inputs;
  std::string input_list;
  const std::size_t input_count = session.GetInputCount();
  for (std::size_t i = 0; i < input_count; ++i) {
    graph_inputs.push_back(session.GetInputNameAllocated(i, allocator).get());
    input_list += (i ? ", '" : "'") + graph_inputs.back() + "'";
  }
  const bool unnamed = inputs.size() == 1 && inputs[0].name.empty();
  if (unnamed)
    detail::require(input_count == 1, where + "a .npy or IDX file feeds a model with one input; "
                                              "this one has " + std::to_string(input_count) +
                                              " (" + input_list + "): give an .npz with one "
                                              "array per input");
  for (const typed_array& a : inputs) {
    if (unnamed) break;
    const bool known = std::find(graph_inputs.begin(), graph_inputs.end(), a.name) !=
                       graph_inputs.end();
    detail::require(known, where + "array '" + a.name + "' names no input of the model (its "
                                   "inputs: " + input_list + ")");
  }
  std::int64_t samples = -1, fixed_batch = 0;
  for (std::size_t i = 0; i < input_count; ++i) {
    const std::string& name = graph_inputs[i];
    const Ort::TypeInfo type_info = session.GetInputTypeInfo(i);  // owns what info views
    const auto info = type_info.GetTensorTypeAndShapeInfo();
    const auto type = static_cast<std::int32_t>(info.GetElementType());
    const std::vector<std::int64_t> dims = info.GetShape();
    const typed_array* a = nullptr;
    for (const typed_array& candidate : inputs)
      if (unnamed || candidate.name == name) a = &candidate;
    detail::require(a != nullptr, where + "no array '" + name + "' for the model's input '" +
                                      name + "' (its inputs: " + input_list + ")");
    const std::string what = where + (unnamed ? "the file" : "array '" + name + "'");
    detail::require(a->type == type, what + " is " + type_name(a->type) + "; the model's input '" +
                                         name + "' takes " + type_name(type));
    feed f{name, type, a->shape, a->bytes.data(), 0};
    detail::require(!dims.empty() && !f.shape.empty(),
                    what + " has shape " + shape_text(f.shape) + "; the model's input '" + name +
                        "' is " + shape_text(dims) + " (calibration needs samples on the first axis)");
    if (unnamed && f.shape.size() != dims.size()) {  // IDX / flat .npy: the input's own shape
      std::int64_t per_file = 1, per_model = 1;
      for (std::size_t d = 1; d < f.shape.size(); ++d) per_file *= f.shape[d];
      for (std::size_t d = 1; d < dims.size(); ++d) per_model *= dims[d] > 0 ? dims[d] : -1;
      detail::require(per_model > 0 && per_model == per_file,
                      what + " has " + std::to_string(per_file) + " values per sample; the "
                          "model's input '" + name + "' is " + shape_text(dims));
      f.shape.assign(dims.begin(), dims.end());
      f.shape[0] = a->shape[0];
    }
    bool matches = f.shape.size() == dims.size();
    for (std::size_t d = 1; matches && d < dims.size(); ++d)
      matches = dims[d] <= 0 || dims[d] == f.shape[d];
    detail::require(matches, what + " has shape " + shape_text(f.shape) +
                                 "; the model's input '" + name + "' is " + shape_text(dims) +
                                 " (samples first)");
    if (samples >= 0)
      detail::require(f.shape[0] == samples, what + " has " + std::to_string(f.shape[0]) +
                                                 " samples; '" + feeds.front().name + "' has " +
                                                 std::to_string(samples));
    samples = f.shape[0];
    if (dims[0] > 0) {
      detail::require(fixed_batch == 0 || fixed_batch == dims[0],
                      where + "the model's inputs have fixed batch sizes " +
                          std::to_string(fixed_batch) + " and " + std::to_string(dims[0]));
      fixed_batch = dims[0];
    }
    f.sample_bytes = element_type_of(type)->bytes;  // a->type == type: a known type
    for (std::size_t d = 1; d < f.shape.size(); ++d)
      f.sample_bytes *= static_cast<std::size_t>(f.shape[d]);
    if (type == 1) {  // NaN / Inf would reach every layer after it: named here, by position
      const std::size_t per_sample = f.sample_bytes / 4;
      for (std::size_t k = 0; k * 4 < a->bytes.size(); ++k) {
        float v;
        std::memcpy(&v, a->bytes.data() + 4 * k, 4);
        if (!std::isfinite(v))
          throw qsl::error(what + ": sample " + std::to_string(k / per_sample) + " has " +
                           std::to_string(v) + " at position " +
                           std::to_string(k % per_sample) + "; expected finite values");
      }
    }
    feeds.push_back(std::move(f));
  }
  if (count <= 0 || count > samples) count = samples;
  if (fixed_batch > 0) {
    detail::require(count >= fixed_batch,
                    where + std::to_string(count) + " samples; the model takes batches of " +
                        std::to_string(fixed_batch));
    count -= count % fixed_batch;  // whole batches only
  }
  detail::require(count >= 1, where + "the file holds no samples");
  out.count = count;
  out.batch = fixed_batch > 0 ? fixed_batch : batch_wanted;
  for (const feed& f : feeds) out.names.push_back(f.name.c_str());
  return out;
}

std::unique_ptr<Ort::Session> open_session(const onnxruntime_library& runtime, Ort::Env& env,
                                           const std::vector<std::uint8_t>& bytes, int threads,
                                           const std::string& where) {
  Ort::SessionOptions options;
  if (threads > 0) options.SetIntraOpNumThreads(threads);
  try {
    return std::make_unique<Ort::Session>(env, bytes.data(), bytes.size(), options);
  } catch (const Ort::Exception& e) {
    throw qsl::error(where + "ONNX Runtime " + runtime.version() + " cannot run the model: " +
                     e.what());
  }
}

// Samples first..first+n-1 through the session; the requested outputs, in order.
std::vector<Ort::Value> run_batch(Ort::Session& session, const matched_feeds& in,
                                  const std::vector<const char*>& outputs, std::int64_t first,
                                  std::int64_t n, const std::string& where) {
  const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Ort::Value> values;
  for (const feed& f : in.feeds) {
    std::vector<std::int64_t> shape = f.shape;
    shape[0] = n;
    auto* data = const_cast<std::uint8_t*>(f.data) + first * f.sample_bytes;  // read only
    values.push_back(Ort::Value::CreateTensor(memory, data, n * f.sample_bytes, shape.data(),
                                              shape.size(),
                                              static_cast<ONNXTensorElementDataType>(f.type)));
  }
  try {
    return session.Run(Ort::RunOptions{nullptr}, in.names.data(), values.data(), values.size(),
                       outputs.data(), outputs.size());
  } catch (const Ort::Exception& e) {
    throw qsl::error(where + "ONNX Runtime failed on samples " + std::to_string(first) + ".." +
                     std::to_string(first + n - 1) + ": " + e.what());
  }
}

}  // namespace

qsl::onnx::calibration_data calibrate_in_onnxruntime(const onnxruntime_library& runtime,
                                                     const qsl::onnx::model& m,
                                                     const std::vector<typed_array>& inputs,
                                                     std::int64_t count,
                                                     const onnxruntime_calibration_options& o) {
  const std::string where = "--calib: ";
  qsl::onnx::calibration_collector collector(m, o.statistics);
  const std::vector<std::string>& probes = collector.tensors();
  Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "qsl-compress");
  const std::unique_ptr<Ort::Session> session = open_session(
      runtime, env, qsl::onnx::serialize_with_outputs(m, probes), o.threads, where);
  const matched_feeds in = match_feeds(*session, inputs, count, o.batch, where);
  const std::vector<feed>& feeds = in.feeds;

  // Layer inputs that are graph inputs come from the feeds; the rest are extra outputs.
  std::vector<std::string> outputs;
  std::vector<std::pair<std::string, std::size_t>> from_feeds;  // probe, feed index
  for (const std::string& t : probes) {
    std::size_t i = 0;
    while (i < feeds.size() && feeds[i].name != t) ++i;
    if (i < feeds.size()) {
      detail::require(feeds[i].type == 1, where + "a layer multiplies the model's " +
                                              type_name(feeds[i].type) + " input '" + t + "'");
      from_feeds.emplace_back(t, i);
    } else {
      outputs.push_back(t);
    }
  }
  std::vector<const char*> output_names;
  for (const std::string& t : outputs) output_names.push_back(t.c_str());

  for (std::int64_t first = 0; first < in.count; first += in.batch) {
    const std::int64_t n = std::min(in.batch, in.count - first);
    const std::vector<Ort::Value> results =
        run_batch(*session, in, output_names, first, n, where);
    for (std::size_t j = 0; j < results.size(); ++j) {
      const auto info = results[j].GetTensorTypeAndShapeInfo();
      const auto type = static_cast<std::int32_t>(info.GetElementType());
      detail::require(type == 1, where + "the layer input '" + outputs[j] + "' is " +
                                     type_name(type) + "; calibration reads float32 models");
      collector.add(outputs[j], info.GetShape(), results[j].GetTensorData<float>());
    }
    for (const auto& [t, i] : from_feeds) {
      std::vector<std::int64_t> shape = feeds[i].shape;
      shape[0] = n;
      collector.add(t, shape,
                    reinterpret_cast<const float*>(feeds[i].data + first * feeds[i].sample_bytes));
    }
    if (o.statistics.progress) o.statistics.progress(first + n, in.count);
  }
  return collector.finish();
}

// The reference: the model's float outputs on the samples, concatenated per output.
struct onnxruntime_output_change::state {
  const onnxruntime_library* runtime = nullptr;
  const qsl::onnx::model* model = nullptr;
  const std::vector<typed_array>* inputs = nullptr;
  std::int64_t count = 0;
  onnxruntime_calibration_options options;
  mutable Ort::Env env{ORT_LOGGING_LEVEL_ERROR, "qsl-compress"};  // sessions need it non-const
  std::vector<std::string> outputs;             // the float graph outputs
  std::vector<std::vector<float>> reference;    // per output, every sample's values
  double reference_energy = 0;                  // sum of the reference's squares

  // The model in `bytes` on the samples: each float output's values, concatenated.
  std::vector<std::vector<float>> run(const std::vector<std::uint8_t>& bytes,
                                      std::int64_t* samples) const {
    const std::string where = "--budget's sensitivity: ";
    const std::unique_ptr<Ort::Session> session =
        open_session(*runtime, env, bytes, options.threads, where);
    const matched_feeds in = match_feeds(*session, *inputs, count, options.batch, where);
    if (samples != nullptr) *samples = in.count;
    std::vector<const char*> names;
    for (const std::string& t : outputs) names.push_back(t.c_str());
    std::vector<std::vector<float>> out(outputs.size());
    for (std::int64_t first = 0; first < in.count; first += in.batch) {
      const std::int64_t n = std::min(in.batch, in.count - first);
      const std::vector<Ort::Value> results = run_batch(*session, in, names, first, n, where);
      for (std::size_t j = 0; j < results.size(); ++j) {
        const float* v = results[j].GetTensorData<float>();
        out[j].insert(out[j].end(), v, v + results[j].GetTensorTypeAndShapeInfo().GetElementCount());
      }
    }
    return out;
  }
};

onnxruntime_output_change::onnxruntime_output_change(const onnxruntime_library& runtime,
                                                     const qsl::onnx::model& m,
                                                     const std::vector<typed_array>& inputs,
                                                     std::int64_t count,
                                                     const onnxruntime_calibration_options& o)
    : state_(std::make_shared<state>()) {
  state& s = *state_;
  s.runtime = &runtime;
  s.model = &m;
  s.inputs = &inputs;
  s.count = count;
  s.options = o;
  const std::string where = "--budget's sensitivity: ";
  const std::vector<std::uint8_t> bytes = qsl::onnx::serialize_with_outputs(m, {});
  {
    const std::unique_ptr<Ort::Session> session =
        open_session(runtime, s.env, bytes, o.threads, where);
    Ort::AllocatorWithDefaultOptions allocator;
    for (std::size_t i = 0; i < session->GetOutputCount(); ++i) {
      const Ort::TypeInfo info = session->GetOutputTypeInfo(i);
      if (info.GetONNXType() == ONNX_TYPE_TENSOR &&
          info.GetTensorTypeAndShapeInfo().GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
        s.outputs.push_back(session->GetOutputNameAllocated(i, allocator).get());
    }
  }
  detail::require(!s.outputs.empty(),
                  where + "the model has no float32 output to measure a change on");
  s.reference = s.run(bytes, &samples_);
  for (const std::vector<float>& output : s.reference)
    for (float v : output) s.reference_energy += static_cast<double>(v) * v;
  detail::require(std::isfinite(s.reference_energy),
                  where + "the model's outputs on the samples are not finite");
}

double onnxruntime_output_change::operator()(const std::string& weight,
                                             const std::vector<float>& values) const {
  const state& s = *state_;
  const std::vector<std::vector<float>> changed =
      s.run(qsl::onnx::serialize_with_constant(*s.model, weight, values), nullptr);
  double change = 0;
  for (std::size_t j = 0; j < changed.size(); ++j) {
    detail::require(changed[j].size() == s.reference[j].size(),
                    "--budget's sensitivity: output '" + s.outputs[j] + "' has " +
                        std::to_string(changed[j].size()) + " values with '" + weight +
                        "' replaced; " + std::to_string(s.reference[j].size()) + " without");
    for (std::size_t k = 0; k < changed[j].size(); ++k) {
      const double d = static_cast<double>(changed[j][k]) - s.reference[j][k];
      change += d * d;
    }
  }
  // An all-zero reference: the absolute change (a zero output that moves is still measured).
  return s.reference_energy > 0 ? change / s.reference_energy : change;
}

}  // namespace qsl::tools
