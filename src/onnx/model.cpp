// Loading, validating, checking and saving ONNX models (qsl::onnx::model).
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/stubs/logging.h>
#include <onnx/checker.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <set>

#include "onnx/conformance.hpp"
#include "onnx/proto.hpp"
#include "qsl/serialize.hpp"

namespace qsl::onnx {
namespace {

namespace fs = std::filesystem;
using detail::check_tensor;
using detail::element_count;
using detail::element_size;

constexpr std::int64_t max_ir_version = 8;  // what Debian's libonnx 1.12 checker knows
constexpr std::int64_t max_opset = 17;

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

// Protobuf prints parse errors on stderr; qsl reports them as model_error instead.
void silence_protobuf_logging() {
  static const bool once = [] {
    google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int,
                                       const std::string&) {});
    return true;
  }();
  (void)once;
}

bool parse_uint64(const std::string& s, std::uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  out = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return true;
}

// True when `inner` (canonical) lies inside `folder` (canonical).
bool inside(const fs::path& inner, const fs::path& folder) {
  auto f = folder.begin(), i = inner.begin();
  for (; f != folder.end(); ++f, ++i)
    if (i == inner.end() || *i != *f) return false;
  return i != inner.end();
}

struct context {
  fs::path folder;          // where external data may live; empty: none allowed
  load_limits limits;
  std::uint64_t external_bytes = 0;
};

// Reads an external tensor's bytes into raw_data, refusing anything outside the folder.
void resolve_external(pb::TensorProto& t, context& ctx, const std::string& what) {
  if (t.data_location() != pb::TensorProto::EXTERNAL) {
    if (t.external_data_size() > 0)
      throw model_error(what + ": external_data is set but data_location is not EXTERNAL");
    return;
  }
  if (ctx.folder.empty())
    throw model_error(what + ": external data is not allowed in a model parsed from memory");
  std::string location;
  std::uint64_t offset = 0, length = 0;
  bool has_length = false;
  for (const auto& entry : t.external_data()) {
    if (entry.key() == "location") {
      location = entry.value();
    } else if (entry.key() == "offset") {
      if (!parse_uint64(entry.value(), offset))
        throw model_error(what + ": external offset " + in_quotes(entry.value()) +
                          " is not a non-negative integer");
    } else if (entry.key() == "length") {
      if (!parse_uint64(entry.value(), length))
        throw model_error(what + ": external length " + in_quotes(entry.value()) +
                          " is not a non-negative integer");
      has_length = true;
    } else if (entry.key() != "checksum") {
      throw model_error(what + ": unknown external_data key " + in_quotes(entry.key()));
    }
  }
  if (location.empty()) throw model_error(what + ": external data without a location");
  const fs::path relative(location);
  if (relative.is_absolute() || relative.has_root_name() || relative.has_root_directory())
    throw model_error(what + ": external location " + in_quotes(location) +
                      " is absolute; expected a path relative to the model's folder");
  for (const auto& part : relative)
    if (part == "..")
      throw model_error(what + ": external location " + in_quotes(location) +
                        " leaves the model's folder (..)");
  std::error_code ec;
  const fs::path folder = fs::canonical(ctx.folder, ec);
  const fs::path file = fs::canonical(ctx.folder / relative, ec);
  if (ec || !inside(file, folder))
    throw model_error(what + ": external location " + in_quotes(location) +
                      " does not resolve to a file inside the model's folder (missing, or a "
                      "symlink out)");
  if (!fs::is_regular_file(file, ec))
    throw model_error(what + ": external location " + in_quotes(location) + " is not a regular file");
  const std::uint64_t file_size = fs::file_size(file, ec);
  if (ec) throw model_error(what + ": cannot read the size of " + in_quotes(location));
  const std::uint64_t needed = element_count(t, ctx.limits.max_tensor_bytes, what) *
                               element_size(t.data_type());
  if (has_length && length != needed)
    throw model_error(what + ": external length " + std::to_string(length) + " but dims need " +
                      std::to_string(needed) + " bytes");
  if (offset > file_size || needed > file_size - offset)
    throw model_error(what + ": external offset " + std::to_string(offset) + " + " +
                      std::to_string(needed) + " bytes run past the end of " + in_quotes(location) +
                      " (" + std::to_string(file_size) + " bytes)");
  ctx.external_bytes += needed;
  if (ctx.external_bytes > ctx.limits.max_external_bytes)
    throw model_error(what + ": external data exceeds the limit of " +
                      std::to_string(ctx.limits.max_external_bytes) + " bytes");
  std::string raw(static_cast<std::size_t>(needed), '\0');
  std::ifstream in(file, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(raw.data(), static_cast<std::streamsize>(needed));
  if (!in || static_cast<std::uint64_t>(in.gcount()) != needed)
    throw model_error(what + ": cannot read " + std::to_string(needed) + " bytes of " +
                      in_quotes(location));
  t.clear_external_data();
  t.set_data_location(pb::TensorProto::DEFAULT);
  t.set_raw_data(std::move(raw));
}

void check_graph(pb::GraphProto& g, context* ctx, std::set<std::string> known, int depth,
                 const std::string& where);

void check_attributes(pb::NodeProto& n, context* ctx, const std::set<std::string>& known,
                      int depth, const std::string& where) {
  for (auto& a : *n.mutable_attribute()) {
    const std::string what = where + " attribute " + in_quotes(a.name());
    if (a.has_t()) {
      if (ctx != nullptr) resolve_external(*a.mutable_t(), *ctx, what);
      check_tensor(a.t(), ctx ? ctx->limits.max_tensor_bytes : UINT64_MAX, what);
    }
    for (int i = 0; i < a.tensors_size(); ++i) {
      if (ctx != nullptr) resolve_external(*a.mutable_tensors(i), *ctx, what);
      check_tensor(a.tensors(i), ctx ? ctx->limits.max_tensor_bytes : UINT64_MAX, what);
    }
    if (a.has_sparse_tensor() || a.sparse_tensors_size() > 0)
      throw model_error(what + ": sparse tensors are not supported");
    if (a.has_g()) check_graph(*a.mutable_g(), ctx, known, depth + 1, what);
    for (int i = 0; i < a.graphs_size(); ++i)
      check_graph(*a.mutable_graphs(i), ctx, known, depth + 1, what);
  }
}

// Every tensor checked, every name defined before use; `known` holds the outer scope's names.
void check_graph(pb::GraphProto& g, context* ctx, std::set<std::string> known, int depth,
                 const std::string& where) {
  const int max_depth = ctx ? ctx->limits.max_graph_depth : 16;
  if (depth > max_depth)
    throw model_error(where + ": subgraphs nest deeper than " + std::to_string(max_depth));
  if (g.sparse_initializer_size() > 0)
    throw model_error(where + ": sparse initializers are not supported");
  for (const auto& input : g.input()) known.insert(input.name());
  for (auto& t : *g.mutable_initializer()) {
    const std::string what = "initializer " + in_quotes(t.name());
    if (t.name().empty()) throw model_error(where + ": an initializer has no name");
    if (ctx != nullptr) resolve_external(t, *ctx, what);
    check_tensor(t, ctx ? ctx->limits.max_tensor_bytes : UINT64_MAX, what);
    known.insert(t.name());
  }
  for (int i = 0; i < g.node_size(); ++i) {
    pb::NodeProto& n = *g.mutable_node(i);
    const std::string what =
        "node " + (n.name().empty() ? "#" + std::to_string(i) : in_quotes(n.name())) + " (" +
        n.op_type() + ")";
    for (const auto& input : n.input())
      if (!input.empty() && known.count(input) == 0)
        throw model_error(what + ": input " + in_quotes(input) +
                          " is not a graph input, an initializer or an earlier node's output "
                          "(missing initializer?)");
    check_attributes(n, ctx, known, depth, what);
    for (const auto& output : n.output())
      if (!output.empty()) known.insert(output);
  }
  for (const auto& output : g.output())
    if (known.count(output.name()) == 0)
      throw model_error(where + ": graph output " + in_quotes(output.name()) + " is never produced");
}

void check_model(pb::ModelProto& m, context* ctx) {
  if (!m.has_graph()) throw model_error("the model has no graph");
  if (m.ir_version() < 3 || m.ir_version() > max_ir_version)
    throw model_error("ir_version is " + std::to_string(m.ir_version()) + "; qsl reads 3.." +
                      std::to_string(max_ir_version) + " (ONNX 1.12); re-export with opset <= 17");
  std::int64_t opset = 0;
  for (const auto& o : m.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
  if (opset < 1 || opset > max_opset)
    throw model_error("the default-domain opset is " + std::to_string(opset) +
                      "; qsl reads 1.." + std::to_string(max_opset) + " (ONNX 1.12)");
  if (m.graph().node_size() == 0) throw model_error("the graph is empty (no nodes)");
  if (m.functions_size() > 0) throw model_error("model-local functions are not supported");
  check_graph(*m.mutable_graph(), ctx, {}, 0, "graph " + in_quotes(m.graph().name()));
}

void run_onnx_checker(const pb::ModelProto& m) {
  try {
    ::onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    throw model_error(std::string("ONNX checker: ") + e.what());
  }
}

// Parses with protobuf's limits, then validates (resolving external data in `folder`).
std::unique_ptr<model::impl> parse_and_check(const std::uint8_t* data, std::size_t size,
                                             const load_limits& limits, const std::string& source,
                                             const fs::path& folder) {
  if (size > limits.max_file_bytes || size > static_cast<std::size_t>(INT_MAX))
    throw model_error("the model has " + std::to_string(size) + " bytes; the limit is " +
                      std::to_string(std::min<std::uint64_t>(limits.max_file_bytes, INT_MAX)));
  auto p = std::make_unique<model::impl>();
  p->limits = limits;
  p->source = source;
  silence_protobuf_logging();
  google::protobuf::io::ArrayInputStream raw(data, static_cast<int>(size));
  google::protobuf::io::CodedInputStream coded(&raw);
  coded.SetTotalBytesLimit(INT_MAX);
  coded.SetRecursionLimit(limits.max_recursion);
  if (!p->proto.ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage())
    throw model_error("not an ONNX model: the protobuf does not parse (truncated or corrupt)");
  context ctx{folder, limits, 0};
  check_model(p->proto, &ctx);
  run_onnx_checker(p->proto);
  detail::check_shapes(p->proto);  // what ONNX Runtime refuses on loading, refused here
  return p;
}

}  // namespace

model::model(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
model::model(model&&) noexcept = default;
model& model::operator=(model&&) noexcept = default;
model::~model() = default;

model model::parse(const std::uint8_t* data, std::size_t size, const load_limits& limits) {
  return model(parse_and_check(data, size, limits, "", {}));
}

model model::load(const std::string& path, const load_limits& limits) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw qsl::error("cannot read " + in_quotes(path) + ": not a regular file");
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) throw qsl::error("cannot read the size of " + in_quotes(path));
  if (size > limits.max_file_bytes)
    throw model_error(in_quotes(path) + " has " + std::to_string(size) + " bytes; the limit is " +
                      std::to_string(limits.max_file_bytes));
  const std::vector<std::uint8_t> bytes = read_file(path, static_cast<std::size_t>(size));
  try {
    return model(parse_and_check(bytes.data(), bytes.size(), limits, path,
                                 fs::absolute(path).parent_path()));
  } catch (const model_error& e) {
    throw model_error(in_quotes(path) + ": " + e.what());
  }
}

std::int64_t model::ir_version() const { return impl_->proto.ir_version(); }

std::int64_t model::opset() const {
  for (const auto& o : impl_->proto.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") return o.version();
  return 0;
}

std::size_t model::node_count() const {
  return static_cast<std::size_t>(impl_->proto.graph().node_size());
}

const std::string& model::source() const { return impl_->source; }

void model::check() const {
  pb::ModelProto copy = impl_->proto;  // check_graph may resolve (here: refuse) external data
  check_model(copy, nullptr);
  run_onnx_checker(impl_->proto);
  detail::check_shapes_of_copy(copy);
}

std::vector<std::uint8_t> model::serialize() const {
  const std::size_t size = impl_->proto.ByteSizeLong();
  if (size > static_cast<std::size_t>(INT_MAX))
    throw qsl::error("the model serializes to " + std::to_string(size) +
                     " bytes; ONNX protobuf files are limited to 2 GiB");
  std::vector<std::uint8_t> bytes(size);
  if (!impl_->proto.SerializeToArray(bytes.data(), static_cast<int>(size)))
    throw qsl::error("the model could not be serialized");
  return bytes;
}

void model::save(const std::string& path, bool overwrite) const {
  std::error_code ec;
  if (!impl_->source.empty() && fs::exists(path, ec) &&
      fs::equivalent(path, impl_->source, ec))
    throw qsl::error("refusing to write " + in_quotes(path) + ": it is the input model");
  if (!overwrite && fs::exists(path, ec))
    throw qsl::error("refusing to overwrite " + in_quotes(path) + " (use --force)");
  check();
  const std::vector<std::uint8_t> bytes = serialize();
  write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace qsl::onnx
