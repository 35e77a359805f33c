// Tests of the stored form of a quantized dense layer (qsl/serialize.hpp): round trips, the byte
// layout, corrupt and forged data, and the file helpers behind save() and load().

#include "qsl/serialize.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "qsl/quantized_dense.hpp"
#include "test_util.hpp"

namespace {

using bytes = std::vector<std::uint8_t>;
using testing::AllOf;
using testing::HasSubstr;
using testing::ThrowsMessage;

// ---- the byte layout of serialize.hpp ----------------------------------------------------

// Byte offsets of the header fields.
namespace at {
constexpr std::size_t magic = 0;
constexpr std::size_t version = 4;
constexpr std::size_t rows = 8;
constexpr std::size_t cols = 16;
constexpr std::size_t group_size = 24;
constexpr std::size_t bits = 32;
constexpr std::size_t basis = 33;
constexpr std::size_t activation_bits = 34;
constexpr std::size_t activation_mode = 35;
constexpr std::size_t activation_step = 36;
constexpr std::size_t activation_minimum = 40;
constexpr std::size_t has_bias = 44;
constexpr std::size_t arrays = 45;  // the first sign word
}  // namespace at
constexpr std::size_t checksum_bytes = 4;

// Where the arrays of a serialized layer start, from the parameters it was made from.
struct array_offsets {
  std::size_t signs, masks, coefficients, bias, checksum;
};

array_offsets offsets_of(const qsl::dense_parameters& p) {
  array_offsets o{};
  o.signs = at::arrays;
  o.masks = o.signs + p.code.signs.size() * sizeof(qsl::word);
  o.coefficients = o.masks + p.code.masks.size() * sizeof(qsl::word);
  o.bias = o.coefficients + p.code.coefficients.size() * sizeof(float);
  o.checksum = o.bias + p.bias.size() * sizeof(float);
  return o;
}

// The unsigned integer as wide as T.
template <class T>
using raw_t =
    std::conditional_t<sizeof(T) == 1, std::uint8_t,
                       std::conditional_t<sizeof(T) == 4, std::uint32_t,
                                          std::conditional_t<sizeof(T) == 8, std::uint64_t, void>>>;

// Writes `value` little-endian at `offset`, whatever the host's byte order.
template <class T>
void put_le(bytes& b, std::size_t offset, T value) {
  raw_t<T> raw;
  std::memcpy(&raw, &value, sizeof(T));
  for (std::size_t i = 0; i < sizeof(T); ++i)
    b.at(offset + i) = static_cast<std::uint8_t>(raw >> (8 * i));
}

// Reads a little-endian value at `offset`.
template <class T>
T get_le(const bytes& b, std::size_t offset) {
  raw_t<T> raw = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    raw = static_cast<raw_t<T>>(raw | static_cast<raw_t<T>>(b.at(offset + i)) << (8 * i));
  T value;
  std::memcpy(&value, &raw, sizeof(T));
  return value;
}

// zlib's CRC-32 of every byte but the stored checksum.
std::uint32_t crc_of(const bytes& b) {
  return static_cast<std::uint32_t>(
      ::crc32(::crc32(0L, Z_NULL, 0), b.data(), static_cast<uInt>(b.size() - checksum_bytes)));
}

// Stores a valid checksum, so that only the forged field can make the data invalid.
void reseal(bytes& b) { put_le(b, b.size() - checksum_bytes, crc_of(b)); }

// `b` with `value` written at `offset` and a valid checksum.
template <class T>
bytes forged(bytes b, std::size_t offset, T value) {
  put_le(b, offset, value);
  reseal(b);
  return b;
}

qsl::dense_parameters deserialize(const bytes& b) {
  return qsl::deserialize_dense(b.data(), b.size());
}

// Deserializing `b` throws qsl::error whose message contains `fragment`.
void expect_rejected(const bytes& b, const std::string& fragment) {
  EXPECT_THAT([&] { deserialize(b); }, ThrowsMessage<qsl::error>(HasSubstr(fragment)));
}

// ---- layers --------------------------------------------------------------------------------

enum class activations { none, per_vector, calibrated };

struct layer_spec {
  qsl::basis basis = qsl::basis::binary;
  int bits = 2;
  std::int64_t group_size = 0;
  bool with_bias = false;
  activations mode = activations::none;
  std::int64_t rows = 5;
  std::int64_t cols = 72;  // two words per plane, 56 padding bits in the second
  std::uint32_t seed = 1;
};

std::string describe(const layer_spec& s) {
  static const char* const modes[] = {"none", "per vector", "calibrated"};
  return std::string(s.basis == qsl::basis::binary ? "binary" : "ternary") + " bits " +
         std::to_string(s.bits) + " group " + std::to_string(s.group_size) +
         (s.with_bias ? " bias" : " no bias") + " activations " + modes[static_cast<int>(s.mode)] +
         " " + std::to_string(s.rows) + " x " + std::to_string(s.cols);
}

// A small random layer compressed as `s` says; checks that it got what it asked for.
qsl::quantized_dense make_layer(const layer_spec& s) {
  qsl::quantized_dense_options options;
  options.weights.bits = s.bits;
  options.weights.basis = s.basis;
  options.weights.group_size = s.group_size;
  options.weights.threads = 1;
  if (s.mode != activations::none) options.activation_bits = 4;
  if (s.mode == activations::per_vector) options.scaling = qsl::activation_scaling::per_vector;
  if (s.mode == activations::calibrated) {
    options.weights.calibration = qsl::test::gaussian(32, s.cols, s.seed + 100);
    options.scaling = qsl::activation_scaling::calibrated;
  }
  const Eigen::MatrixXf w = qsl::test::gaussian(s.rows, s.cols, s.seed);
  const Eigen::VectorXf b =
      s.with_bias ? Eigen::VectorXf(qsl::test::gaussian(s.rows, 1, s.seed + 1)) : Eigen::VectorXf();
  qsl::quantized_dense layer = qsl::quantized_dense::compress(w, b, options);
  EXPECT_EQ(layer.bias().empty(), !s.with_bias);
  EXPECT_EQ(layer.code().masks.empty(), s.basis == qsl::basis::binary);
  EXPECT_EQ(layer.activations().bits, s.mode == activations::none ? 0 : 4);
  EXPECT_EQ(layer.activations().calibrated, s.mode == activations::calibrated);
  return layer;
}

void expect_same_parameters(const qsl::dense_parameters& a, const qsl::dense_parameters& b) {
  EXPECT_EQ(a.code.rows, b.code.rows);
  EXPECT_EQ(a.code.cols, b.code.cols);
  EXPECT_EQ(a.code.bits, b.code.bits);
  EXPECT_EQ(a.code.basis, b.code.basis);
  EXPECT_EQ(a.code.group_size, b.code.group_size);
  EXPECT_EQ(a.code.signs, b.code.signs);
  EXPECT_EQ(a.code.masks, b.code.masks);
  EXPECT_EQ(a.code.coefficients, b.code.coefficients);
  EXPECT_EQ(a.code.offsets, b.code.offsets);
  EXPECT_EQ(a.bias, b.bias);
  EXPECT_EQ(a.activations.bits, b.activations.bits);
  EXPECT_EQ(a.activations.calibrated, b.activations.calibrated);
  EXPECT_EQ(a.activations.step, b.activations.step);
  EXPECT_EQ(a.activations.minimum, b.activations.minimum);
}

// serialize -> deserialize gives the same parameters and outputs, and serializes to the same
// bytes again.
void expect_round_trip(const layer_spec& s) {
  SCOPED_TRACE(describe(s));
  const qsl::quantized_dense layer = make_layer(s);
  const bytes stored = layer.serialize();
  const qsl::quantized_dense loaded =
      qsl::quantized_dense::deserialize(stored.data(), stored.size());
  expect_same_parameters(layer.parameters(), loaded.parameters());
  const qsl::row_matrix_f x = qsl::test::gaussian_rows(3, s.cols, s.seed + 2);
  EXPECT_EQ(layer.forward(x), loaded.forward(x));
  EXPECT_EQ(loaded.serialize(), stored);
}

void expect_round_trips(qsl::basis basis, activations mode, const std::vector<int>& bits,
                        const std::vector<std::int64_t>& group_sizes) {
  for (int k : bits)
    for (std::int64_t g : group_sizes)
      for (bool with_bias : {false, true}) {
        layer_spec s;
        s.basis = basis;
        s.bits = k;
        s.group_size = g;
        s.with_bias = with_bias;
        s.mode = mode;
        s.seed = static_cast<std::uint32_t>(10 * k + g + (with_bias ? 1000 : 0));
        expect_round_trip(s);
      }
}

// The small layers the corruption tests take apart: 3 x 40 (one word per plane, padding bits),
// three groups (the last one shorter), a bias and calibrated activations.
bytes small_layer(qsl::basis basis) {
  layer_spec s;
  s.basis = basis;
  s.bits = 2;
  s.group_size = 16;
  s.with_bias = true;
  s.mode = activations::calibrated;
  s.rows = 3;
  s.cols = 40;
  return make_layer(s).serialize();
}

// ---- files ---------------------------------------------------------------------------------

// A fresh folder under the system's temporary folder, removed with everything in it.
class temp_folder {
 public:
  temp_folder() {
    const testing::TestInfo* test = testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("qsl_serialize_test_" + std::to_string(::getpid()) + "_" + test->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directory(path_);
  }
  ~temp_folder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  temp_folder(const temp_folder&) = delete;
  temp_folder& operator=(const temp_folder&) = delete;

  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  /// Names of everything in the folder, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_))
      names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path path_;
};

bytes read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const bytes& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

// ---- round trips ---------------------------------------------------------------------------

TEST(Serialize, RoundTripBinaryGroups) {
  expect_round_trips(qsl::basis::binary, activations::none, {1, 2, 3, 4}, {0, 8, 16});
}

TEST(Serialize, RoundTripTernaryGroups) {
  expect_round_trips(qsl::basis::ternary, activations::none, {1, 2, 3, 4}, {0, 8, 16});
}

TEST(Serialize, RoundTripPerVectorActivations4) {
  expect_round_trips(qsl::basis::binary, activations::per_vector, {1, 2, 3, 4}, {0, 16});
  expect_round_trips(qsl::basis::ternary, activations::per_vector, {1, 2, 3, 4}, {0, 16});
}

TEST(Serialize, RoundTripCalibratedActivations4) {
  expect_round_trips(qsl::basis::binary, activations::calibrated, {1, 2, 3, 4}, {0, 16});
  expect_round_trips(qsl::basis::ternary, activations::calibrated, {1, 2, 3, 4}, {0, 16});
}

TEST(Serialize, RoundTripOneColumn) {
  layer_spec s;
  s.rows = 1;
  s.cols = 1;
  s.with_bias = true;
  expect_round_trip(s);
}

// One group per row when the column count is not a multiple of 8: group size = cols = 20.
TEST(Serialize, RoundTripOneGroupColsNotMultipleOf8) {
  layer_spec s;
  s.cols = 20;
  s.group_size = 0;
  expect_round_trip(s);
}

TEST(Serialize, RoundTripDoubleLayer) {
  const qsl::quantized_dense layer = make_layer(layer_spec{});
  const bytes stored = layer.serialize();
  const auto loaded = qsl::basic_quantized_dense<double>::deserialize(stored.data(), stored.size());
  expect_same_parameters(layer.parameters(), loaded.parameters());
  EXPECT_EQ(loaded.serialize(), stored);
}

// ---- the byte layout -----------------------------------------------------------------------

TEST(Serialize, HeaderMatchesDocumentedLayout) {
  layer_spec s;
  s.basis = qsl::basis::ternary;
  s.bits = 3;
  s.group_size = 16;
  s.with_bias = true;
  s.mode = activations::calibrated;
  const qsl::quantized_dense layer = make_layer(s);
  const qsl::dense_parameters& p = layer.parameters();
  const bytes b = layer.serialize();
  const array_offsets o = offsets_of(p);

  ASSERT_EQ(b.size(), o.checksum + checksum_bytes);
  EXPECT_EQ(std::string(b.begin(), b.begin() + 4), "QSLD");
  EXPECT_EQ(get_le<std::uint32_t>(b, at::version), 1U);
  EXPECT_EQ(get_le<std::uint64_t>(b, at::rows), 5U);
  EXPECT_EQ(get_le<std::uint64_t>(b, at::cols), 72U);
  EXPECT_EQ(get_le<std::uint64_t>(b, at::group_size), 16U);
  EXPECT_EQ(get_le<std::uint8_t>(b, at::bits), 3);
  EXPECT_EQ(get_le<std::uint8_t>(b, at::basis), 1);
  EXPECT_EQ(get_le<std::uint8_t>(b, at::activation_bits), 4);
  EXPECT_EQ(get_le<std::uint8_t>(b, at::activation_mode), 1);
  EXPECT_EQ(get_le<float>(b, at::activation_step), p.activations.step);
  EXPECT_EQ(get_le<float>(b, at::activation_minimum), p.activations.minimum);
  EXPECT_EQ(get_le<std::uint8_t>(b, at::has_bias), 1);
  for (std::size_t i = 0; i < p.code.signs.size(); ++i)
    EXPECT_EQ(get_le<qsl::word>(b, o.signs + 8 * i), p.code.signs[i]) << "sign word " << i;
  for (std::size_t i = 0; i < p.code.masks.size(); ++i)
    EXPECT_EQ(get_le<qsl::word>(b, o.masks + 8 * i), p.code.masks[i]) << "mask word " << i;
  for (std::size_t i = 0; i < p.code.coefficients.size(); ++i)
    EXPECT_EQ(get_le<float>(b, o.coefficients + 4 * i), p.code.coefficients[i]) << i;
  for (std::size_t i = 0; i < p.bias.size(); ++i)
    EXPECT_EQ(get_le<float>(b, o.bias + 4 * i), p.bias[i]) << "bias " << i;
  EXPECT_EQ(get_le<std::uint32_t>(b, o.checksum), crc_of(b));
}

TEST(Serialize, OneGroupStoresColumnCountAsGroupSize) {
  const bytes b = make_layer(layer_spec{}).serialize();
  EXPECT_EQ(get_le<std::uint64_t>(b, at::group_size), 72U);
  EXPECT_EQ(get_le<std::uint8_t>(b, at::has_bias), 0);
  EXPECT_EQ(get_le<std::uint8_t>(b, at::activation_bits), 0);
}

// The offsets are derived data: a forged coefficient loads, and the offset of its row follows.
TEST(Serialize, OffsetsAreRecomputedOnLoad) {
  const bytes original = small_layer(qsl::basis::binary);
  const qsl::dense_parameters p = deserialize(original);
  const float delta = 0.5f;
  const qsl::dense_parameters q =
      deserialize(forged(original, offsets_of(p).coefficients, p.code.coefficients[0] + delta));
  EXPECT_EQ(q.code.coefficients[0], p.code.coefficients[0] + delta);
  // Coefficient 0 weighs plane 0 of row 0 over group 0.
  int plane_sum = 0;
  for (std::int64_t c = p.code.group_begin(0); c < p.code.group_end(0); ++c)
    plane_sum += p.code.value(0, 0, c);
  EXPECT_NEAR(q.code.offsets[0], p.code.offsets[0] + delta * static_cast<float>(plane_sum), 1e-4f);
  EXPECT_EQ(std::vector<float>(q.code.offsets.begin() + 1, q.code.offsets.end()),
            std::vector<float>(p.code.offsets.begin() + 1, p.code.offsets.end()));
}

// ---- corrupt data --------------------------------------------------------------------------

TEST(Serialize, EveryTruncationThrows) {
  for (qsl::basis basis : {qsl::basis::binary, qsl::basis::ternary}) {
    const bytes full = small_layer(basis);
    ASSERT_NO_THROW(deserialize(full));
    for (std::size_t size = 0; size < full.size(); ++size) {
      const bytes prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(size));
      EXPECT_THROW(deserialize(prefix), qsl::error) << "prefix of " << size << " bytes";
    }
  }
}

TEST(Serialize, AppendedByteThrows) {
  const bytes full = small_layer(qsl::basis::ternary);
  for (std::uint8_t extra : {0x00, 0x5a, 0xff}) {
    bytes after_checksum = full;
    after_checksum.push_back(extra);
    EXPECT_THROW(deserialize(after_checksum), qsl::error) << "extra byte " << int{extra};
    bytes before_checksum = full;  // the checksum covers the extra byte
    before_checksum.insert(before_checksum.end() - checksum_bytes, extra);
    reseal(before_checksum);
    EXPECT_THAT(
        [&] { deserialize(before_checksum); },
        ThrowsMessage<qsl::error>(HasSubstr("needs exactly " + std::to_string(full.size()))));
  }
}

TEST(Serialize, NullDataThrows) {
  EXPECT_THROW(qsl::deserialize_dense(nullptr, 0), qsl::error);
  EXPECT_THAT([] { qsl::deserialize_dense(nullptr, 100); },
              ThrowsMessage<qsl::error>(HasSubstr("null")));
}

TEST(Serialize, EveryBitFlipThrows) {
  for (qsl::basis basis : {qsl::basis::binary, qsl::basis::ternary}) {
    const bytes original = small_layer(basis);
    for (std::size_t i = 0; i < original.size(); ++i)
      for (int bit = 0; bit < 8; ++bit) {
        bytes b = original;
        b[i] = static_cast<std::uint8_t>(b[i] ^ (1U << bit));
        EXPECT_THROW(deserialize(b), qsl::error) << "byte " << i << " bit " << bit;
      }
  }
}

TEST(Serialize, ChecksumMismatchThrows) {
  bytes b = small_layer(qsl::basis::binary);
  b[at::arrays] ^= 1;  // a sign bit inside the columns: only the checksum can tell
  expect_rejected(b, "checksum");
  reseal(b);
  EXPECT_NO_THROW(deserialize(b));
}

// ---- forged data with a valid checksum -----------------------------------------------------

TEST(Serialize, ForgedUnchangedDataLoads) {
  const bytes original = small_layer(qsl::basis::ternary);
  bytes b = original;
  reseal(b);
  EXPECT_EQ(b, original);
  EXPECT_NO_THROW(deserialize(b));
}

TEST(Serialize, ForgedMagicThrows) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::magic, std::uint8_t{'X'}), "QSLD");
}

TEST(Serialize, ForgedVersion2Throws) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::version, std::uint32_t{2}),
                  "format version 2");
}

TEST(Serialize, ForgedBasis7Throws) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::basis, std::uint8_t{7}), "basis 7");
}

TEST(Serialize, ForgedActivationMode5Throws) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::activation_mode, std::uint8_t{5}),
                  "activation mode 5");
}

TEST(Serialize, ForgedBiasFlag2Throws) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::has_bias, std::uint8_t{2}),
                  "bias flag 2");
}

TEST(Serialize, ForgedBits0And9Throw) {
  const bytes original = small_layer(qsl::basis::binary);
  expect_rejected(forged(original, at::bits, std::uint8_t{0}), "bits is 0");
  expect_rejected(forged(original, at::bits, std::uint8_t{9}), "bits is 9");
}

TEST(Serialize, ForgedRows0Throws) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::rows, std::uint64_t{0}), "rows is 0");
}

// A reader that allocated from the header before checking it would run out of memory here.
TEST(Serialize, ForgedHugeShapeThrowsBeforeAllocating) {
  const bytes original = small_layer(qsl::basis::ternary);
  const std::uint64_t huge = std::uint64_t{1} << 40;
  expect_rejected(forged(original, at::rows, huge), "rows " + std::to_string(huge));
  expect_rejected(forged(original, at::cols, huge), "cols " + std::to_string(huge));
  expect_rejected(forged(original, at::rows, std::numeric_limits<std::uint64_t>::max()),
                  "out of range");
  bytes square = forged(original, at::rows, std::uint64_t{1} << 30);
  expect_rejected(forged(square, at::cols, std::uint64_t{1} << 30), "rows * cols");
  // Within every cap (2^31 - 1 rows of 128 columns): only the length check stops it.
  bytes largest = forged(original, at::rows, (std::uint64_t{1} << 31) - 1);
  largest = forged(largest, at::cols, std::uint64_t{128});
  expect_rejected(forged(largest, at::group_size, std::uint64_t{128}), "needs exactly");
}

TEST(Serialize, ForgedGroupSize12Throws) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::group_size, std::uint64_t{12}),
                  "group size 12");
}

TEST(Serialize, ForgedGroupSizeLargerThanColsThrows) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::group_size, std::uint64_t{48}),
                  "group size 48");
}

TEST(Serialize, ForgedGroupSize0Throws) {
  expect_rejected(forged(small_layer(qsl::basis::binary), at::group_size, std::uint64_t{0}),
                  "group size 0");
}

TEST(Serialize, ForgedPaddingBitsThrow) {
  for (qsl::basis basis : {qsl::basis::binary, qsl::basis::ternary}) {
    const bytes original = small_layer(basis);
    const array_offsets o = offsets_of(deserialize(original));
    std::vector<std::size_t> planes = {o.signs};
    if (basis == qsl::basis::ternary) planes.push_back(o.masks);
    for (std::size_t plane : planes)
      for (int col : {40, 63}) {  // the first column past the last, and the word's top bit
        SCOPED_TRACE("column " + std::to_string(col) + " at byte " + std::to_string(plane));
        const auto first_word = get_le<qsl::word>(original, plane);
        expect_rejected(forged(original, plane, first_word | qsl::word{1} << col), "padding bits");
      }
  }
}

TEST(Serialize, ForgedTernarySignUnderZeroMaskThrows) {
  const bytes original = small_layer(qsl::basis::ternary);
  const qsl::dense_parameters p = deserialize(original);
  const array_offsets o = offsets_of(p);
  int forged_count = 0;
  for (std::size_t w = 0; w < p.code.masks.size(); ++w) {
    const qsl::word zeros = ~p.code.masks[w] & qsl::range_mask(0, 0, p.code.cols);
    if (zeros == 0) continue;
    const qsl::word lowest = zeros & (~zeros + 1);
    expect_rejected(forged(original, o.signs + 8 * w, p.code.signs[w] | lowest),
                    "sign bit under a zero mask bit");
    ++forged_count;
  }
  EXPECT_GT(forged_count, 0) << "the ternary layer has no zero weight to forge a sign under";
}

TEST(Serialize, ForgedNanCoefficientThrows) {
  const bytes original = small_layer(qsl::basis::binary);
  const array_offsets o = offsets_of(deserialize(original));
  expect_rejected(
      forged(original, o.coefficients + 3 * sizeof(float), std::numeric_limits<float>::quiet_NaN()),
      "coefficient 3");
  expect_rejected(forged(original, o.coefficients, -std::numeric_limits<float>::infinity()),
                  "finite");
}

TEST(Serialize, ForgedInfBiasThrows) {
  const bytes original = small_layer(qsl::basis::binary);
  const array_offsets o = offsets_of(deserialize(original));
  expect_rejected(forged(original, o.bias + sizeof(float), std::numeric_limits<float>::infinity()),
                  "bias 1");
  expect_rejected(forged(original, o.bias, std::numeric_limits<float>::quiet_NaN()), "bias 0");
}

TEST(Serialize, ForgedActivationBits9Throws) {
  const bytes original = small_layer(qsl::basis::binary);
  expect_rejected(forged(original, at::activation_bits, std::uint8_t{9}), "activation bits is 9");
  const bytes per_vector = forged(original, at::activation_mode, std::uint8_t{0});
  ASSERT_NO_THROW(deserialize(per_vector));
  expect_rejected(forged(per_vector, at::activation_bits, std::uint8_t{9}), "activation bits is 9");
}

TEST(Serialize, ForgedCalibratedActivationsThrow) {
  const bytes original = small_layer(qsl::basis::binary);
  ASSERT_EQ(get_le<std::uint8_t>(original, at::activation_mode), 1);
  expect_rejected(forged(original, at::activation_bits, std::uint8_t{0}), "calibrated");
  expect_rejected(forged(original, at::activation_step, -1.0f), "calibrated");
  expect_rejected(forged(original, at::activation_step, std::numeric_limits<float>::quiet_NaN()),
                  "calibrated");
  expect_rejected(forged(original, at::activation_minimum, std::numeric_limits<float>::infinity()),
                  "calibrated");
}

// ---- validate ------------------------------------------------------------------------------

TEST(Serialize, ValidateRejectsBiasOfWrongLength) {
  layer_spec s;
  s.with_bias = true;
  qsl::dense_parameters p = make_layer(s).parameters();
  EXPECT_NO_THROW(qsl::validate(p));
  p.bias.push_back(0.0f);
  EXPECT_THAT([&] { qsl::validate(p); }, ThrowsMessage<qsl::error>(HasSubstr("bias has 6")));
  EXPECT_THROW(qsl::serialize(p), qsl::error);
  p.bias.resize(4);
  EXPECT_THAT([&] { qsl::validate(p); }, ThrowsMessage<qsl::error>(HasSubstr("bias has 4")));
  EXPECT_THROW(qsl::serialize(p), qsl::error);
  p.bias.clear();
  EXPECT_NO_THROW(qsl::validate(p));
}

// ---- files ---------------------------------------------------------------------------------

TEST(Serialize, SaveLoadRoundTrip) {
  const temp_folder folder;
  layer_spec s;
  s.basis = qsl::basis::ternary;
  s.group_size = 16;
  s.with_bias = true;
  s.mode = activations::calibrated;
  const qsl::quantized_dense layer = make_layer(s);
  const std::string path = folder.file("layer.qsl");
  layer.save(path);
  EXPECT_EQ(read_all(path), layer.serialize());
  const qsl::quantized_dense loaded = qsl::quantized_dense::load(path);
  expect_same_parameters(layer.parameters(), loaded.parameters());
  const qsl::row_matrix_f x = qsl::test::gaussian_rows(4, s.cols, 7);
  EXPECT_EQ(layer.forward(x), loaded.forward(x));
}

TEST(Serialize, SaveLeavesNoTemporaryFiles) {
  const temp_folder folder;
  const qsl::quantized_dense layer = make_layer(layer_spec{});
  layer.save(folder.file("layer.qsl"));
  layer.save(folder.file("layer.qsl"));
  EXPECT_EQ(folder.entries(), std::vector<std::string>{"layer.qsl"});
}

// The old file is replaced by a rename, never rewritten in place: a reader that opened it
// before the save still reads the old bytes, and the path names a new file.
TEST(Serialize, SaveReplacesExistingFileAtomically) {
  const temp_folder folder;
  const std::string path = folder.file("layer.qsl");
  layer_spec s;
  s.seed = 3;
  const bytes old_bytes = make_layer(s).serialize();
  write_all(path, old_bytes);
  const ino_t old_inode = inode_of(path);
  std::ifstream old_reader(path, std::ios::binary);
  ASSERT_TRUE(old_reader.good());

  s.seed = 4;
  s.bits = 3;
  const qsl::quantized_dense layer = make_layer(s);
  layer.save(path);

  EXPECT_NE(inode_of(path), old_inode);
  EXPECT_EQ(bytes(std::istreambuf_iterator<char>(old_reader), std::istreambuf_iterator<char>()),
            old_bytes);
  EXPECT_EQ(read_all(path), layer.serialize());
  EXPECT_EQ(qsl::quantized_dense::load(path).code().bits, 3);
  EXPECT_EQ(folder.entries(), std::vector<std::string>{"layer.qsl"});
}

TEST(Serialize, SaveOntoDirectoryThrowsAndLeavesNoTemporary) {
  const temp_folder folder;
  std::filesystem::create_directory(folder.file("taken"));
  write_all(folder.file("taken/inside"), bytes{1, 2, 3});
  const qsl::quantized_dense layer = make_layer(layer_spec{});
  EXPECT_THAT([&] { layer.save(folder.file("taken")); },
              ThrowsMessage<qsl::error>(HasSubstr(folder.file("taken"))));
  EXPECT_EQ(folder.entries(), std::vector<std::string>{"taken"});
}

TEST(Serialize, LoadMissingFileThrows) {
  const temp_folder folder;
  const std::string path = folder.file("missing.qsl");
  EXPECT_THAT([&] { qsl::quantized_dense::load(path); },
              ThrowsMessage<qsl::error>(HasSubstr(path)));
}

TEST(Serialize, LoadDirectoryThrows) {
  const temp_folder folder;
  EXPECT_THAT([&] { qsl::quantized_dense::load(folder.path()); },
              ThrowsMessage<qsl::error>(HasSubstr(folder.path())));
}

TEST(Serialize, LoadEmptyFileThrows) {
  const temp_folder folder;
  const std::string path = folder.file("empty.qsl");
  write_all(path, bytes{});
  ASSERT_TRUE(std::filesystem::exists(path));
  EXPECT_THROW(qsl::quantized_dense::load(path), qsl::error);
}

TEST(Serialize, LoadFileLargerThanMaxBytesThrows) {
  const temp_folder folder;
  const std::string path = folder.file("layer.qsl");
  const qsl::quantized_dense layer = make_layer(layer_spec{});
  layer.save(path);
  const std::size_t size = layer.serialize().size();
  EXPECT_THAT([&] { qsl::quantized_dense::load(path, size - 1); },
              ThrowsMessage<qsl::error>(HasSubstr("limit is " + std::to_string(size - 1))));
  EXPECT_THROW(qsl::quantized_dense::load(path, 0), qsl::error);
  EXPECT_NO_THROW(qsl::quantized_dense::load(path, size));
}

TEST(Serialize, WriteIntoMissingFolderThrows) {
  const temp_folder folder;
  const std::string path = folder.file("missing/layer.qsl");
  const bytes b{1, 2, 3};
  EXPECT_THAT([&] { qsl::write_file_atomically(path, b.data(), b.size()); },
              ThrowsMessage<qsl::error>(HasSubstr(path)));
  EXPECT_TRUE(folder.entries().empty());
}

TEST(Serialize, CheckWritableAcceptsANewFileAndLeavesNothing) {
  const temp_folder folder;
  EXPECT_NO_THROW(qsl::check_writable(folder.file("new.qsl")));
  EXPECT_TRUE(folder.entries().empty());
  write_all(folder.file("old.qsl"), bytes{1, 2, 3});
  EXPECT_NO_THROW(qsl::check_writable(folder.file("old.qsl")));  // replaced later, atomically
  EXPECT_EQ(read_all(folder.file("old.qsl")), (bytes{1, 2, 3}));
  EXPECT_EQ(folder.entries(), std::vector<std::string>{"old.qsl"});
}

TEST(Serialize, CheckWritableRefusesAMissingFolderAFolderAndNoPath) {
  const temp_folder folder;
  const std::string missing = folder.file("missing/layer.qsl");
  EXPECT_THAT([&] { qsl::check_writable(missing); },
              ThrowsMessage<qsl::error>(AllOf(HasSubstr(missing), HasSubstr("No such file"))));
  std::filesystem::create_directory(folder.file("taken"));
  EXPECT_THAT([&] { qsl::check_writable(folder.file("taken")); },
              ThrowsMessage<qsl::error>(
                  HasSubstr("'" + folder.file("taken") + "': it is a folder")));
  EXPECT_THAT([&] { qsl::check_writable(""); }, ThrowsMessage<qsl::error>(HasSubstr("empty")));
  EXPECT_EQ(folder.entries(), std::vector<std::string>{"taken"});
}

TEST(Serialize, WriteFileAtomicallyWritesExactBytes) {
  const temp_folder folder;
  const std::string path = folder.file("raw.bin");
  bytes b(1000);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i * 7);
  qsl::write_file_atomically(path, b.data(), b.size());
  EXPECT_EQ(qsl::read_file(path, b.size()), b);
  qsl::write_file_atomically(path, nullptr, 0);
  EXPECT_TRUE(qsl::read_file(path, 0).empty());
  EXPECT_EQ(folder.entries(), std::vector<std::string>{"raw.bin"});
}

}  // namespace
