// The per-lane math of the CUDA kernels (cuda/src/row_math.hpp), run on the host lane by lane
// with the kernels' loop structure, against the scalar reference. This runs everywhere, GPU
// or not; tests/cuda_test.cpp runs the kernels themselves when a GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "kernels.hpp"
#include "pack.hpp"
#include "qsl/quantized_dense.hpp"
#include "row_math.hpp"
#include "test_util.hpp"

namespace {

using namespace qsl::cuda::detail;
using qsl::row_matrix_f;

double gamma_bound(double m) {
  const double u = std::numeric_limits<float>::epsilon() / 2;
  return m * u / (1 - m * u);
}

// The column splits of a GEMV as the kernels walk them: `splits` ranges of whole chunks, each
// walked in column tiles of `tile` chunks, the parts summed in split order.
std::vector<std::pair<std::int64_t, std::int64_t>> split_ranges(const layer_view& w,
                                                                std::int64_t splits) {
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  const std::int64_t len = (w.chunks + splits - 1) / splits;
  for (std::int64_t c = 0; c < w.chunks; c += len) out.emplace_back(c, std::min(c + len, w.chunks));
  return out;
}

// z[row] = the sum, in split order, of part(tile, lane, begin, end) over the splits: what each
// lane of the GEMV kernels computes, and what the last block of a row block adds up.
template <class Part>
std::vector<float> split_sums(const layer_view& w, std::int64_t splits, Part part) {
  std::vector<float> z(static_cast<std::size_t>(w.rows));
  for (std::int64_t tile = 0; tile < w.tiles; ++tile)
    for (int lane = 0; lane < 32 && tile * 32 + lane < w.rows; ++lane) {
      float sum = 0;
      for (const auto& [begin, end] : split_ranges(w, splits)) sum += part(tile, lane, begin, end);
      z[static_cast<std::size_t>(tile * 32 + lane)] = sum;
    }
  return z;
}

// y = z + bias, the float kernels' epilogue.
std::vector<float> plus_bias(const layer_view& w, std::vector<float> z) {
  if (w.bias != nullptr)
    for (std::int64_t n = 0; n < w.rows; ++n) z[static_cast<std::size_t>(n)] += w.bias[n];
  return z;
}

// The float-activation kernels on the host: tables for every nibble (lut_gemv), or the sums
// of up to 4 inputs (decode_gemv); each lane walks its split in tiles with walk_float.
template <int P, bool Ternary>
std::vector<float> float_gemv(const layer_view& w, const float* x, std::int64_t splits,
                              std::int64_t tile_chunks, bool tables) {
  const std::int64_t nibbles = w.chunks * 8;
  std::vector<float> xs(static_cast<std::size_t>(w.chunks * 32), 0.0f), table(static_cast<std::size_t>(nibbles * 16));
  std::copy(x, x + w.cols, xs.begin());
  for (std::int64_t s = 0; s < nibbles; ++s)
    for (std::uint32_t b = 0; b < 16; ++b)
      table[static_cast<std::size_t>(s * 16 + b)] = table_entry<Ternary>(&xs[4 * s], b);
  const lut_tables lookup{table.data(), 0};
  const decoded_tables<Ternary> decode{xs.data(), 0};
  return plus_bias(w, split_sums(w, splits, [&](std::int64_t tile, int lane, std::int64_t begin,
                                                  std::int64_t end) {
    row_walk<P, float> r;
    for (std::int64_t t0 = begin; t0 < end; t0 += tile_chunks) {
      const std::int64_t t1 = std::min(t0 + tile_chunks, end);
      if (tables)
        walk_float<P, Ternary>(w, tile, lane, t0, t1, lookup, r);
      else
        walk_float<P, Ternary>(w, tile, lane, t0, t1, decode, r);
    }
    finish_float<P, Ternary>(r);
    return r.out;
  }));
}

// The float walk written plainly, nibble by nibble (no prefetch, no whole-chunk fast path):
// walk_float must give exactly these bits, since it adds the same numbers in the same order.
template <int P, bool Ternary>
std::vector<float> plain_float_walk(const layer_view& w, const float* x, std::int64_t splits) {
  std::vector<float> xs(static_cast<std::size_t>(w.chunks * 32), 0.0f);
  std::copy(x, x + w.cols, xs.begin());
  const std::int64_t nibbles = (w.cols + 3) / 4;
  return plus_bias(w, split_sums(w, splits, [&](std::int64_t tile, int lane, std::int64_t begin,
                                                  std::int64_t end) {
    row_walk<P, float> r;
    for (std::int64_t s = begin * 8; s < std::min(end * 8, nibbles); ++s) {
      if (4 * s >= w.group_end(r.group)) {
        finish_float<P, Ternary>(r);
        start_group<P, Ternary>(w, tile, lane, 4 * s / w.group_size, r);
      }
      for (int p = 0; p < P; ++p)
        r.acc[p] += table_entry<Ternary>(&xs[static_cast<std::size_t>(4 * s)],
                                         (w.word(tile, s / 8, p, lane) >> (4 * (s % 8))) & 15U);
      r.open = true;
    }
    finish_float<P, Ternary>(r);
    return r.out;
  }));
}

// The encoder and the popcount kernel on the host (the encoder's ballots are bit gathers).
template <int P, bool Ternary>
std::vector<float> popcount_gemv(const layer_view& w, const float* x, int bits,
                                 std::int64_t splits) {
  const float top = static_cast<float>((1 << bits) - 1);
  const auto [lo, hi] = std::minmax_element(x, x + w.cols);
  const float minimum = *lo, step = (*hi - *lo) / top;
  const float inv_step = step == 0 ? 0.0f : 1.0f / step;
  std::vector<std::uint32_t> act(static_cast<std::size_t>(bits * w.chunks), 0);
  for (std::int64_t c = 0; c < w.cols; ++c) {
    const std::uint32_t q = encode_level(x[c], minimum, inv_step, top);
    for (int i = 0; i < bits; ++i) act[i * w.chunks + c / 32] |= ((q >> i) & 1U) << (c % 32);
  }
  std::vector<float> y = split_sums(w, splits, [&](std::int64_t tile, int lane,
                                                   std::int64_t begin, std::int64_t end) {
    row_walk<P, std::int64_t> r;
    walk_encoded<P, Ternary>(w, tile, lane, begin, end, act.data(), bits, r);
    finish_encoded<P, Ternary>(r);
    return r.out;
  });
  for (std::int64_t row = 0; row < w.rows; ++row) {
    float& value = y[static_cast<std::size_t>(row)];
    value = step * value + minimum * w.offsets[row] + (w.bias ? w.bias[row] : 0.0f);
  }
  return y;
}

template <class Case>
void for_planes(const qsl::weight_code& code, Case&& run) {
  const bool t = code.basis == qsl::basis::ternary;
  switch (code.bits) {
    case 1:
      return t ? run(std::integral_constant<int, 2>{}, std::true_type{})
               : run(std::integral_constant<int, 1>{}, std::false_type{});
    case 2:
      return t ? run(std::integral_constant<int, 4>{}, std::true_type{})
               : run(std::integral_constant<int, 2>{}, std::false_type{});
    default:
      return t ? run(std::integral_constant<int, 6>{}, std::true_type{})
               : run(std::integral_constant<int, 3>{}, std::false_type{});
  }
}

// The GEMM's weights: load_byte then decode_loaded give qsl::reconstruct exactly (the same
// sums in the same order), and zeros past the last row or column.
template <int P, bool Ternary>
void expect_bytes_are_reconstruct(const qsl::weight_code& code) {
  const auto packed = pack(code, {});
  const layer_view w = packed.view();
  const Eigen::MatrixXf expected = qsl::reconstruct(code);
  for (std::int64_t r = 0; r < code.rows + 3; ++r)
    for (std::int64_t c8 = 0; c8 < code.cols + 8; c8 += 8) {
      byte_source<P, Ternary> source;
      load_byte(w, r, c8, source);
      float decoded[8];
      decode_loaded(w, r, c8, source, decoded);
      for (std::int64_t c = c8; c < c8 + 8; ++c)
        ASSERT_EQ(decoded[c - c8], r < code.rows && c < code.cols ? expected(r, c) : 0.0f)
            << code.rows << "x" << code.cols << " k " << code.bits << " at " << r << ", " << c;
    }
}

TEST(CudaRowMath, DecodedBytesAreReconstruct) {
  for (auto basis : {qsl::basis::binary, qsl::basis::ternary})
    for (int bits : {1, 2, 3})
      for (std::int64_t cols : {1, 31, 32, 33, 100, 257}) {
        const auto code = qsl::test::random_code(45, cols, bits, basis, cols > 64 ? 64 : 0, 3);
        const bool t = basis == qsl::basis::ternary;
        if (bits == 1) t ? expect_bytes_are_reconstruct<2, true>(code) : expect_bytes_are_reconstruct<1, false>(code);
        if (bits == 2) t ? expect_bytes_are_reconstruct<4, true>(code) : expect_bytes_are_reconstruct<2, false>(code);
        if (bits == 3) t ? expect_bytes_are_reconstruct<6, true>(code) : expect_bytes_are_reconstruct<3, false>(code);
      }
}

// Float path: both sides sum D + groups*k + a few terms, and each split cuts at most one
// more group in two (k more terms); 2A - B triples magnitudes (see
// tests/cpu_kernels_test.cpp): tolerance 6 gamma_m S.
TEST(CudaRowMath, LookUpKernelMatchesReference) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const std::int64_t rows = 1 + rng() % 70, cols = 1 + rng() % 300;
    const std::int64_t groups[] = {0, 8, 16, 24, 32, 64, 128};
    const int bits = 1 + static_cast<int>(rng() % 3);
    const auto basis = rng() % 3 == 0 ? qsl::basis::ternary : qsl::basis::binary;
    const auto code = qsl::test::random_code(rows, cols, bits, basis, groups[rng() % 7], rng());
    const std::vector<float> bias(static_cast<std::size_t>(rows), 0.5f);
    const auto packed = pack(code, bias);
    const row_matrix_f x = qsl::test::gaussian_rows(1, cols, rng());
    std::vector<float> expected(static_cast<std::size_t>(rows));
    qsl::reference::forward_float<float>(code, x.data(), 1, bias.data(), expected.data());
    // Any split count and column tile: the walk must not depend on where the ranges end.
    const std::int64_t splits = 1 + rng() % 4, tile_chunks = 1 + rng() % 3;
    std::vector<float> y, decoded, plain;
    for_planes(code, [&](auto p, auto t) {
      constexpr int P = decltype(p)::value;
      constexpr bool T = decltype(t)::value;
      y = float_gemv<P, T>(packed.view(), x.data(), splits, tile_chunks, true);
      decoded = float_gemv<P, T>(packed.view(), x.data(), splits, tile_chunks, false);
      plain = plain_float_walk<P, T>(packed.view(), x.data(), splits);
    });
    ASSERT_EQ(y, decoded) << "trial " << trial << ": decode_gemv's sums differ from the tables'";
    ASSERT_EQ(y, plain) << "trial " << trial << ": walk_float differs from the plain walk";
    const double m = static_cast<double>(cols + (code.groups() + splits) * bits + 8);
    for (std::int64_t n = 0; n < rows; ++n) {
      double size = 0.5;
      for (std::int64_t c = 0; c < cols; ++c)
        for (int j = 0; j < bits; ++j)
          size += code.coefficient(n, c / code.group_size, j) * std::abs(double{x(0, c)});
      ASSERT_NEAR(y[n], expected[n], 6 * gamma_bound(m) * size) << "trial " << trial << " row " << n;
    }
  }
}

// Encoded path: with dyadic coefficients and integer inputs in [0, 2^kx) (step 1, minimum 0)
// every partial sum is exact, so the kernel math must give W_hat x exactly.
TEST(CudaRowMath, PopcountKernelIsExactOnIntegers) {
  std::mt19937 rng(12);
  for (int trial = 0; trial < 300; ++trial) {
    const std::int64_t rows = 1 + rng() % 70, cols = 2 + rng() % 300;
    const std::int64_t groups[] = {0, 8, 16, 24, 32, 64, 128};
    const int bits = 1 + static_cast<int>(rng() % 3), kx = 1 + static_cast<int>(rng() % 8);
    const auto basis = rng() % 3 == 0 ? qsl::basis::ternary : qsl::basis::binary;
    auto code = qsl::test::random_code(rows, cols, bits, basis, groups[rng() % 7], rng());
    const float dyadic[] = {0.5f, 1.0f, 2.0f, 4.0f};
    for (float& a : code.coefficients) a = dyadic[rng() % 4];
    qsl::compute_offsets(code);
    const auto packed = pack(code, {});
    row_matrix_f x(1, cols);
    for (std::int64_t c = 0; c < cols; ++c) x(0, c) = static_cast<float>(rng() % (1U << kx));
    x(0, 0) = 0;                                             // the minimum is 0 ...
    x(0, 1) = static_cast<float>((1 << kx) - 1);             // ... and the step 1
    const std::int64_t splits = 1 + rng() % 4;
    std::vector<float> y;
    for_planes(code, [&](auto p, auto t) {
      y = popcount_gemv<decltype(p)::value, decltype(t)::value>(packed.view(), x.data(), kx, splits);
    });
    const Eigen::VectorXd exact = qsl::reconstruct(code).cast<double>() * x.row(0).transpose().cast<double>();
    for (std::int64_t n = 0; n < rows; ++n)
      ASSERT_EQ(double{y[n]}, exact[n]) << "trial " << trial << " row " << n << " kx " << kx;
  }
}

// The split-K plan: every chunk in exactly one split, splits of at least min_split_chunks
// (unless the row is shorter), never more blocks than one wave holds (resident per
// multiprocessor), scratch for the partial sums of every split.
TEST(CudaRowMath, GemvPlanCoversEveryChunkOnce) {
  for (std::int64_t rows : {1, 31, 256, 4096, 100000})
    for (std::int64_t cols : {1, 33, 255, 256, 4096, 8192, 100003})
      for (std::int64_t batch : {1, 3, 64})
        for (int sms : {0, 8, 132})
          for (int resident : {1, 3, 4}) {
          layer_view w{};
          w.rows = rows;
          w.cols = cols;
          w.tiles = (rows + 31) / 32;
          w.chunks = (cols + 31) / 32;
          const gemv_plan plan = plan_gemv(w, batch, sms, resident);
          const std::string at = std::to_string(rows) + "x" + std::to_string(cols) + " batch " +
                                 std::to_string(batch) + " sms " + std::to_string(sms) +
                                 " resident " + std::to_string(resident);
          ASSERT_EQ(plan.row_blocks, (w.tiles + 7) / 8) << at;
          ASSERT_GE(plan.splits, 1) << at;
          ASSERT_GE(plan.splits * plan.split_chunks, w.chunks) << at;
          ASSERT_LT((plan.splits - 1) * plan.split_chunks, w.chunks) << at;
          ASSERT_GE(plan.split_chunks, std::min<std::int64_t>(min_split_chunks, w.chunks)) << at;
          const std::int64_t blocks = plan.row_blocks * plan.splits * batch;
          const std::int64_t wanted = std::int64_t{resident} * std::max(sms, 1);
          if (plan.splits > 1) {
            EXPECT_LE(blocks, wanted) << at;  // one wave
            EXPECT_GE(plan.scratch_bytes(),
                      static_cast<std::size_t>(plan.splits * batch * w.tiles * 32 * 4)) << at;
          } else {
            EXPECT_EQ(plan.scratch_bytes(), 0U) << at;
          }
          // The GEMM: tiles of 64 rows x 64 vectors, the same rules for the splits.
          const gemv_plan gemm = plan_gemm(w, batch, sms, resident);
          ASSERT_EQ(gemm.row_blocks, (rows + 63) / 64) << at;
          ASSERT_GE(gemm.splits * gemm.split_chunks, w.chunks) << at;
          ASSERT_LT((gemm.splits - 1) * gemm.split_chunks, w.chunks) << at;
          ASSERT_GE(gemm.split_chunks, std::min<std::int64_t>(min_split_chunks, w.chunks)) << at;
          ASSERT_EQ(gemm.partial_floats,
                    gemm.splits > 1 ? gemm.splits * gemm.row_blocks * ((batch + 63) / 64) * 64 * 64 : 0)
              << at;
          if (gemm.splits > 1) {
            EXPECT_LE(gemm.splits * gemm.row_blocks * ((batch + 63) / 64), wanted) << at;
          }
          if (2 * blocks < wanted) {  // far fewer blocks than wanted: the columns ran out
            EXPECT_EQ(plan.splits, w.chunks >= 2 * min_split_chunks ? w.chunks / min_split_chunks : 1) << at;
          }
        }
}

// The walks count columns in 32-bit integers: wider layers are refused by name when packed (the
// check comes before any array is read, so empty arrays suffice here).
TEST(CudaRowMath, PackingRefusesLayersWiderThanTheKernelsTake) {
  qsl::weight_code code;
  code.rows = 1;
  code.bits = 1;
  code.cols = max_cols + 1;
  code.group_size = code.cols;
  try {
    (void)pack(code, {});
    FAIL() << "a layer of " << code.cols << " columns was packed";
  } catch (const qsl::error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(code.cols) + " input features"),
              std::string::npos) << e.what();
  }
  code.cols = 100;  // the limit is the only thing wrong above
  code.group_size = 100;
  code.signs.assign(2, 0);
  code.coefficients.assign(1, 1.0f);
  code.offsets.assign(1, 0.0f);
  EXPECT_EQ(pack(code, {}).cols, 100);
}

TEST(CudaRowMath, EncoderRuleMatchesEncodeActivations) {
  const row_matrix_f x = qsl::test::gaussian_rows(1, 257, 13);
  for (int bits = 1; bits <= 8; ++bits) {
    const qsl::activation_quantizer q{bits, true, 0.21f, -0.7f};
    const auto expected = qsl::encode_activations(x, q);
    for (std::int64_t c = 0; c < 257; ++c)
      ASSERT_EQ(encode_level(x(0, c), q.minimum, 1.0f / q.step, static_cast<float>((1 << bits) - 1)),
                static_cast<std::uint32_t>(expected.level(0, c)));
  }
}

}  // namespace
