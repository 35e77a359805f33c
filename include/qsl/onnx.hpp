#pragma once
// qsl::onnx (find_package(qsl COMPONENTS onnx), target qsl::onnx): load ONNX models safely,
// compress their Gemm / MatMul / Conv weights into weight codes, and write them back either
// with qsl's custom operator (the compact form qsl runs) or with standard ONNX operators that
// unpack the codes (so any runtime runs the compressed model unchanged).
//
// Nothing in a file can crash the process: every problem is a qsl::onnx::model_error naming
// the tensor or node and the field. This header has no protobuf types.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qsl/activation_code.hpp"
#include "qsl/config.hpp"
#include "qsl/decompose.hpp"
#include "qsl/error.hpp"
#include "qsl/twd.hpp"
#include "qsl/weight_code.hpp"

namespace qsl::onnx {

/// The model file is malformed, unsafe or unsupported (the tools exit with code 2). Other
/// qsl::error exceptions are the caller's mistakes (exit code 1).
class QSL_API model_error : public qsl::error {
 public:
  using qsl::error::error;
};

/// The custom operator domain and the operator that decodes a weight code into a weight tensor.
inline constexpr const char* qsl_domain = "ai.qsl";
inline constexpr const char* decode_op = "DecodeWeights";
/// The fused layer: Y = X W^T + bias on qsl's kernels (docs/onnxruntime.md), written for MatMul
/// and Gemm layers; ONNX Runtime runs it with libqsl_onnxruntime.so, qsl-run with its executor.
inline constexpr const char* quantized_matmul_op = "QuantizedMatMul";
/// The fused convolution (1-D / 2-D, groups): ONNX Conv on a weight code (docs/onnxruntime.md).
inline constexpr const char* quantized_conv_op = "QuantizedConv";
/// The fused transposed convolution (1-D / 2-D, one group): ONNX ConvTranspose on a weight
/// code of W = its weight's transpose, a product over input pixels and a scatter
/// (docs/onnxruntime.md).
inline constexpr const char* quantized_conv_transpose_op = "QuantizedConvTranspose";
/// The fused TWD layer: Y = X W^T + bias with W = C^T M (qsl::twd_dense's arithmetic).
inline constexpr const char* quantized_twd_op = "QuantizedTwd";
/// The compressed embedding table: ONNX Gather along axis 0 of a weight code, decoding only
/// the rows it gathers (docs/onnxruntime.md).
inline constexpr const char* quantized_gather_op = "QuantizedGather";
/// The operator that rebuilds a weight tensor from a TWD factorization (ternary basis, mixing).
inline constexpr const char* decode_factorized_op = "DecodeFactorized";
/// Metadata keys (this prefix, then a number) of the qsl format's layers kept on the runtime's
/// own operator: their weight is rebuilt by standard ONNX operators, which ONNX Runtime folds
/// into a constant at load, and the entry tells qsl where the code is (docs/onnxruntime.md).
inline constexpr const char* decoded_weight_key = "ai.qsl.decoded_weight.";

struct load_limits {
  std::uint64_t max_file_bytes = (std::uint64_t{1} << 31) - 1;  ///< protobuf's own limit
  std::uint64_t max_tensor_bytes = std::uint64_t{1} << 32;      ///< any one tensor
  std::uint64_t max_external_bytes = std::uint64_t{1} << 36;    ///< all external data
  int max_recursion = 64;    ///< protobuf message nesting
  int max_graph_depth = 16;  ///< If/Loop subgraph nesting
};

/// A validated ONNX model held in memory (external data already read in).
class QSL_API model {
 public:
  /// Reads and validates `path`: qsl's own checks of every tensor and name, ONNX's checker, and
  /// ONNX's strict shape and type inference (a model ONNX Runtime would refuse on loading is
  /// refused, with ONNX's message naming the node). Throws model_error for anything wrong with
  /// the file, qsl::error when the file cannot be read.
  static model load(const std::string& path, const load_limits& limits = {});
  /// The same from bytes; external data is refused (there is no folder to resolve it in).
  static model parse(const std::uint8_t* data, std::size_t size, const load_limits& limits = {});

  model(model&&) noexcept;
  model& operator=(model&&) noexcept;
  ~model();

  std::int64_t ir_version() const;
  std::int64_t opset() const;  ///< of the default domain
  std::size_t node_count() const;
  /// The path it was loaded from (empty when parsed from bytes).
  const std::string& source() const;

  /// Validates the in-memory model as the loader would, then runs ONNX's checker and its strict
  /// shape inference on it (what ONNX Runtime refuses, this refuses).
  void check() const;
  /// The serialized model.
  std::vector<std::uint8_t> serialize() const;
  /// Writes the model atomically (temporary file + rename). Refuses the path the model was
  /// loaded from, and an existing file unless `overwrite`. Throws qsl::error.
  void save(const std::string& path, bool overwrite = false) const;

  struct impl;
  impl& internals() { return *impl_; }
  const impl& internals() const { return *impl_; }

 private:
  explicit model(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

enum class output_format : std::uint8_t {
  qsl = 0,       ///< one ai.qsl DecodeWeights node per layer: packed planes + coefficients
  standard = 1,  ///< the same codes unpacked by standard operators (opset 11..17)
};

/// How a written file stores each code's coefficients (alpha per row, group and plane).
enum class coefficient_storage : std::uint8_t {
  float32 = 0,  ///< as decomposed
  /// IEEE half precision, rounded to nearest before the layer's errors are measured (the report
  /// and a size budget see the code as stored): 16 bits instead of 32 per coefficient, so
  /// k = 2 in groups of 128 stores 2.25 bits per weight instead of 2.5. Each coefficient moves
  /// by at most 2^-11 of itself (docs/design.md, "Half-precision coefficients"). A layer whose
  /// coefficients do not fit half's range (above 65504) is a named error.
  float16 = 1,
};

/// The oldest default-domain opset the standard format's decoding runs in (BitShift). Older
/// models are converted to it with ONNX's version converter when compressed in that format.
inline constexpr std::int64_t min_standard_opset = 11;

/// Statistics of each layer's inputs by weight name (qsl/onnx_calibration.hpp).
struct layer_calibration;
using calibration_data = std::map<std::string, layer_calibration>;

/// Options for the layers whose node or weight name matches a glob pattern (* and ?).
struct layer_override {
  std::string pattern;
  decompose_options options;
};

struct compress_options {
  decompose_options weights;              ///< the default for every layer
  std::vector<layer_override> overrides;  ///< first match wins
  std::vector<std::string> skip;          ///< glob patterns of layers left as they are
  std::int64_t min_weights = 4096;        ///< smaller weights are left as they are
  /// Grouped convolutions (depthwise ones above all) whose rows have fewer inputs (W's
  /// columns: a depthwise 5x5 convolution's 25) are left as they are unless an override
  /// matches them: each row's coefficients (32 bits per plane) cost more than its planes, a
  /// code of such rows stores 5-8 bits per weight at 2-3 planes, and a depthwise layer's
  /// handful of weights per channel are the ones whose errors collapse deep mobile networks.
  /// They hold a few percent of such a network's weights. 0: compress them too.
  std::int64_t min_grouped_row_width = 32;
  int edge_bits = 0;  ///< > 0: the first and the last compressed layer use this many bits
  output_format format = output_format::qsl;
  coefficient_storage coefficients = coefficient_storage::float32;
  /// qsl format: MatMul and Gemm layers become one QuantizedMatMul node each where they can
  /// (docs/onnxruntime.md); false keeps DecodeWeights nodes feeding the original operators.
  bool fuse = true;
  /// Reads of dimensions that are static (a Shape node, or a Gather / Slice of one, whose
  /// dimensions ONNX's shape inference fixes from the graph inputs' declared shapes and the
  /// initializers alone, the file's value_info ignored) become constants, so that the runtime's
  /// constant folding computes once, at load, the shape arithmetic exporters write as per-run
  /// nodes (a ViT's position-embedding interpolation: a cubic Resize on every run). A symbolic
  /// dimension (the batch) is never folded, so the file takes every input the original takes.
  /// compress_report::shape_reads_folded counts them. Both formats.
  bool fold_shapes = true;
  /// The activation mode written into QuantizedMatMul nodes: 0 float, 1..8 encoded (with the
  /// layer's calibrated quantizer when calibration statistics were given).
  int activation_bits = 0;
  /// Layers whose node or weight name matches one of these globs are factorized with the
  /// shared ternary basis (TWD, qsl/twd.hpp) and `twd` instead of per-row codes; qsl format
  /// only. edge_bits does not apply to them.
  std::vector<std::string> twd_layers;
  twd_options twd;
  /// Statistics from collect_calibration (may be null). A layer found in it is decomposed
  /// against its output error on those inputs (its options' calibration is set from them; the
  /// options' error_feedback decides how the codes are chosen), and, in the qsl format, gets
  /// calibrated activation quantizers for 1..8 bits stored with its code.
  const calibration_data* calibration = nullptr;
  /// qsl format: a MatMul / Gemm / Conv layer that runs at least this many rows per call at
  /// batch 1 (tokens, output pixels; from ONNX's shape inference) stays on the runtime's own
  /// operator (as does one whose sequence length or output size is symbolic), its weight
  /// rebuilt by standard operators that ONNX Runtime folds into a
  /// constant at load: there its fp32 GEMM, on packed weights, is faster than qsl's kernels
  /// (bench/onnxruntime_compare.py --shapes). The file stays compact; the runtime holds the
  /// layer in fp32. 0: never. Needs opset >= min_standard_opset (else the layer is fused).
  std::int64_t native_min_rows = 16;
  /// qsl format: a MatMul / Gemm layer kept on the runtime's operator (native_min_rows) runs
  /// as the runtime's int8 product instead of its fp32 one: DynamicQuantizeLinear (per call,
  /// per tensor, as quantize_dynamic does) -> MatMulInteger on the weight decoded from its
  /// code and requantized to int8 per output at load -> the two scales (and the bias). ONNX
  /// Runtime folds the weight and fuses the rest into its DynamicQuantizeMatMul: int8 GEMM
  /// speed and one byte per weight resident, for the activations' int8 rounding
  /// (docs/onnxruntime.md gives the bound). Layers it cannot take (the weight on the left,
  /// Gemm's transA, alpha or a C that is not a per-output bias) keep the fp32 form.
  bool native_int8 = false;
  /// qsl format: fused QuantizedMatMul nodes multiply this many rows per call or more with 8-bit
  /// activations (their `int8_min_rows` attribute): per vector and per weight row symmetric
  /// int8 grids, exact integer sums on the runtime's integer GEMM (ORT's MatMulInteger) from
  /// weights decoded a block at a time, so only the packed code stays resident
  /// (qsl/cpu.hpp, cpu_forward_int8). Fewer rows keep qsl's float kernels. With it, MatMul /
  /// Gemm layers are fused whatever their rows per call (native_min_rows then applies to
  /// convolutions only); layers of more than cpu_int8_max_cols inputs keep float activations.
  /// On by default (16 rows: below it qsl's tables are faster, bench/onnxruntime_compare.py
  /// --shapes) because without it fused layers of many rows run slower than the runtime's
  /// fp32 GEMM; it changes results only within int8_rows_bound (tests/onnxruntime). 0: never
  /// (float activations at every batch, results independent of the call's row count).
  std::int64_t int8_min_rows = 16;
  /// qsl format, with int8_min_rows > 0: calls of fewer rows than int8_min_rows encode each
  /// vector with this many bits on its own grid (per-vector minimum and step, qsl's encoded
  /// kernels) where the CPU has byte-table kernels for that many bits (x86 with AVX2 or
  /// AVX-512: cpu_byte_tables_min_bits()), float activations elsewhere: the QuantizedMatMul's
  /// `small_batch_bits` attribute. On AVX2 the byte tables run 8-bit activations about 5x
  /// faster than the float look-up tables at batch 1 (docs/benchmarks.md), for the rounding of
  /// the activations to 256 levels per vector (docs/onnxruntime.md gives the bound). 0: float
  /// activations below int8_min_rows on every CPU.
  int small_batch_bits = 8;
  /// > 0: a size budget, the most stored bits per weight (planes, masks and coefficients) on
  /// average over the compressed layers. Each layer's bit count is then chosen from
  /// `budget_choices` by measurement: the layer is decomposed at each, and its error (with
  /// calibration statistics, the squared relative output error on them; without, the squared
  /// relative weight error) and stored bytes go into an allocation that minimizes the summed
  /// error within the budget (docs/design.md, "A size budget"). A layer an override matches
  /// keeps the override's bits. Not with edge_bits or TWD layers.
  double budget_bits = 0;
  /// > 0: the whole output file at most this many bytes (alone, or with budget_bits: the
  /// tighter wins), by the same allocation.
  std::uint64_t max_model_bytes = 0;
  /// The bit counts a budget chooses from; those above 4 only for layers of at most
  /// budget_high_bits_max_weights weights (cheap to measure, and only small layers can afford
  /// them under a budget of a few bits).
  std::vector<int> budget_choices = {1, 2, 3, 4, 6, 8};
  std::int64_t budget_high_bits_max_weights = std::int64_t{1} << 18;
  /// Under a size budget, optional: how much the model's output moves when one weight is
  /// replaced (its name; the replacement in the tensor's own shape and layout, row-major),
  /// e.g. the outputs' squared relative change on calibration inputs in a runtime
  /// (serialize_with_constant gives the model to run). Called once per layer with its code at
  /// `sensitivity_bits` (the options' group); the layer's measured errors are then scaled so
  /// that this code's error equals the change, and the allocation minimizes the summed
  /// estimate of the model's output change instead of the summed layer errors.
  std::function<double(const std::string& weight, const std::vector<float>& values)> sensitivity;
  int sensitivity_bits = 2;
  /// Sequential calibration (GPTQ's sequential mode), with `calibration`: the layers, in
  /// graph order, fall into this many contiguous groups of near-equal counts (at most one per
  /// layer; 0 or 1: off). The first group is decomposed against `calibration`; before each
  /// later one, `recalibrate` is called with the model as it runs at that point (fp32, every
  /// layer compressed so far holding its decoded code) and the group is decomposed against the
  /// statistics it returns (collect_calibration, or a runtime's run through
  /// calibration_collector), so that a layer's code makes up for the errors before it instead
  /// of compounding them. Its activation quantizers are fitted on those inputs too. Under a
  /// size budget the codes are allocated first, on `calibration`; the later groups' codes are
  /// then decomposed anew at the bits and group chosen (the same bytes).
  int sequential_passes = 0;
  std::function<calibration_data(const model&)> recalibrate;
  /// Called before each layer with (layers done, layers to compress, layer name).
  std::function<void(std::size_t, std::size_t, const std::string&)> progress;
};

struct layer_report {
  std::string node, op_type, weight;
  std::vector<std::int64_t> shape;  ///< of the weight tensor
  bool compressed = false;
  std::string note;  ///< why a layer was skipped
  /// Set for a layer left as it is whose weight has NaN or Inf values ("has nan at row 5, col
  /// 7"): qsl leaves it to the runtime. (A layer qsl would compress refuses them: model_error.)
  std::string warning;
  /// How a compressed layer runs: "QuantizedMatMul" (fused: X in, Y out, on qsl's kernels in
  /// ONNX Runtime and qsl-run), or "DecodeWeights" / "DecodeFactorized" feeding the original
  /// operator, then with the reason it was not fused; "standard" in the standard format; the
  /// op type and "on the runtime's kernel" with the reason for a layer kept there
  /// (compress_options::native_min_rows).
  std::string runs_as;
  /// Rows the layer multiplies per call at batch 1, as shape inference found them: -1 where a
  /// size that multiplies them is unknown (a sequence length after the batch, a convolution's
  /// output size: counted as many), 0 where nothing is known.
  std::int64_t rows_per_call = 0;
  bool factorized = false;     ///< TWD (basis_vectors is K) rather than per-row codes (bits...)
  std::int64_t basis_vectors = 0;
  int bits = 0;
  qsl::basis basis = qsl::basis::binary;
  std::int64_t group_size = 0;
  std::uint64_t bytes_before = 0, bytes_after = 0;
  double bits_per_weight = 0;
  double relative_error = 0;  ///< ||W - W_hat||_F / ||W||_F
  bool calibrated = false;    ///< decomposed against calibration statistics
  /// ||(W - W_hat) X^T||_F / ||W X^T||_F on the calibration inputs (calibrated layers only).
  double relative_output_error = 0;
  /// Input vectors the calibration statistics hold (calibrated layers only). Fewer than the
  /// layer's inputs leave its Gram matrix rank-deficient: `warning` then says so.
  std::int64_t calibration_vectors = 0;
  /// Under a size budget: every code measured for the layer (bit count and group size: the
  /// options' groups, and one group per row where that is wider), with its stored bytes and
  /// relative error (output error where calibrated, else weight error); `bits` and
  /// `group_size` are the choice.
  struct budget_measurement {
    int bits = 0;
    std::int64_t group_size = 0;  ///< as the code has it (cols for one group per row)
    std::uint64_t bytes = 0;
    double relative_error = 0;
    /// With compress_options::sensitivity: the model's relative output change with this
    /// layer alone at this code (the square root of the sensitivity's measure); measured for
    /// the reference code (`measured`), scaled from it by the layer's errors for the others.
    /// 0 without.
    double output_change = 0;
    bool measured = false;
  };
  std::vector<budget_measurement> budget_measurements;
  /// Under a size budget with compress_options::sensitivity: the model's output change with
  /// this layer alone at its reference code (sensitivity_bits), as measured (0 when not measured).
  double sensitivity = 0;
};

struct QSL_API compress_report {
  std::vector<layer_report> layers;
  /// The default-domain opset of the input model and of the output: they differ when the
  /// standard format needed a newer one (min_standard_opset) and ONNX's version converter
  /// made it.
  std::int64_t opset_before = 0, opset_after = 0;
  std::uint64_t model_bytes_before = 0, model_bytes_after = 0;  ///< serialized sizes
  std::uint64_t weight_bytes_before = 0, weight_bytes_after = 0;  ///< compressed layers only
  /// Under a size budget: the most bytes the codes could take (from budget_bits and
  /// max_model_bytes), 0 without one.
  std::uint64_t budget_code_bytes = 0;
  /// Shape reads made constants (compress_options::fold_shapes).
  int shape_reads_folded = 0;
  double size_ratio() const {
    return model_bytes_before == 0 ? 0
                                   : static_cast<double>(model_bytes_after) / model_bytes_before;
  }
  /// Stored bits per weight over the compressed layers, coefficients included.
  double bits_per_weight() const;
};

/// Compresses the model in place. For the standard format a model older than
/// min_standard_opset is first converted to it (compress_report::opset_after). Throws
/// model_error for weights that cannot be compressed (NaN/Inf) or a model the version
/// converter cannot convert, and qsl::error for bad options. After a throw the model may be
/// partly rewritten: load it again (qsl-compress then writes nothing).
QSL_API compress_report compress(model& m, const compress_options& options);

/// A constant of the main graph (an initializer, or the value of a Constant node) as floats.
struct float_tensor {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};
/// Throws qsl::error if there is no such constant, model_error if it is not floating point.
QSL_API float_tensor read_constant(const model& m, const std::string& name);

/// A layer compressed in the qsl format, read back.
struct compressed_layer {
  /// The tensor the DecodeWeights node produces; for a QuantizedMatMul / QuantizedConv, the
  /// weight it replaced (its `weight_name` attribute)
  std::string weight;
  std::string node;                    ///< the fused node (empty for DecodeWeights)
  std::string output;                  ///< the fused node's output (Y)
  /// A product kept as the runtime's int8 MatMul (compress_options::native_int8): its
  /// activation input X, and `node` / `output` its last node; empty otherwise.
  std::string input;
  std::vector<float> bias;             ///< the fused node's bias input (may be empty)
  /// A QuantizedMatMul's `int8_min_rows`: calls of this many rows or more take 8-bit
  /// activations (compress_options::int8_min_rows); 0: never.
  std::int64_t int8_min_rows = 0;
  /// A QuantizedMatMul's `small_batch_bits` (compress_options::small_batch_bits): fewer rows
  /// than int8_min_rows run with activations encoded with this many bits per vector where the
  /// CPU has byte tables for them; 0: float activations.
  int small_batch_bits = 0;
  std::vector<std::int64_t> shape;     ///< its shape
  bool transposed = false;             ///< true: the tensor is W^T (MatMul, Gemm transB = 0)
  weight_code code;                    ///< W (outputs x inputs), validated (BCQ layers)
  bool factorized = false;             ///< true: a TWD layer, held in `twd` (code is empty)
  /// true: a QuantizedGather, whose rows are looked up by index (an embedding), not multiplied
  bool table = false;
  twd_code twd;                        ///< W ~ C^T M^T, validated (TWD layers)
  /// Calibrated activation quantizers, entry b - 1 for b bits (1..8), or empty.
  std::vector<activation_quantizer> activations;
};

/// Every DecodeWeights, DecodeFactorized, QuantizedMatMul, QuantizedConv,
/// QuantizedConvTranspose, QuantizedTwd and QuantizedGather node of the main graph, and every layer
/// kept on the runtime's operator (its metadata entry), decoded (throws model_error if malformed).
QSL_API std::vector<compressed_layer> compressed_layers(const model& m);

}  // namespace qsl::onnx
