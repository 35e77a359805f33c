// pack_for_cpu: weight_code -> the tiled layout of qsl::cpu_weights.
#include <algorithm>
#include <utility>

#include "cpu/kernels.hpp"
#include "qsl/cpu.hpp"
#include "qsl/error.hpp"

namespace qsl {

cpu_weights pack_for_cpu(const weight_code& code) {
  validate(code, "pack_for_cpu");
  constexpr int rows_per_tile = cpu_weights::tile_rows;
  cpu_weights w;
  w.rows = code.rows;
  w.cols = code.cols;
  w.bits = code.bits;
  w.basis = code.basis;
  w.group_size = code.group_size;
  w.groups = code.groups();
  w.tiles = (code.rows + rows_per_tile - 1) / rows_per_tile;
  w.chunks = (code.cols + cpu_weights::chunk_cols - 1) / cpu_weights::chunk_cols;
  w.planes = code.basis == qsl::basis::ternary ? 2 * code.bits : code.bits;
  w.words.assign(static_cast<std::size_t>(w.tiles * w.chunks * w.planes * rows_per_tile), 0U);
  w.coefficients.assign(static_cast<std::size_t>(w.tiles * w.groups * w.bits * rows_per_tile),
                        0.0f);
  w.offsets = code.offsets;

  for (std::int64_t n = 0; n < code.rows; ++n) {
    const std::int64_t tile = n / rows_per_tile;
    const int r = static_cast<int>(n % rows_per_tile);
    for (int p = 0; p < w.planes; ++p) {
      const word* plane = p < code.bits ? code.sign_plane(n, p) : code.mask_plane(n, p - code.bits);
      for (std::int64_t c = 0; c < w.chunks; ++c) {
        // Chunk c is the low or high half of 64-bit word c / 2 (padding bits are already 0).
        const auto half = static_cast<std::uint32_t>(plane[c / 2] >> (32 * (c % 2)));
        w.words[static_cast<std::size_t>(((tile * w.chunks + c) * w.planes + p) * rows_per_tile +
                                         r)] = half;
      }
    }
    for (std::int64_t g = 0; g < w.groups; ++g)
      for (int j = 0; j < w.bits; ++j)
        w.coefficients[static_cast<std::size_t>(
            ((tile * w.groups + g) * w.bits + j) * rows_per_tile + r)] = code.coefficient(n, g, j);
  }
  return w;
}

void add_byte_tables(cpu_weights& w) {
  if (!w.nibble_bytes.empty() || w.tiles == 0) return;
  constexpr int rows_per_tile = cpu_weights::tile_rows;
  constexpr int quad_cols = 16;
  const std::int64_t quads = (w.cols + quad_cols - 1) / quad_cols;
  std::vector<std::uint8_t, aligned_allocator<std::uint8_t>> bytes(
      static_cast<std::size_t>(w.tiles * quads * w.planes * 2 * rows_per_tile), 0);
  // Rows 0-7 at the even bytes of a half, rows 8-15 at the odd ones: 16-bit lanes then hold
  // one row of each set, so the kernels widen by masks and shifts (see cpu_weights).
  auto byte_of_row = [](int r) { return r < 8 ? 2 * r : 2 * (r - 8) + 1; };
  // Nibble s of a lookup plane: bits 4(s % 8).. of word s / 8 (chunks hold 8 nibbles; nibbles
  // past the last chunk are padding, 0).
  auto nibble = [&](std::int64_t tile, int p, int r, std::int64_t s) -> std::uint8_t {
    if (s / 8 >= w.chunks) return 0;
    const std::uint32_t word = w.chunk_bits(tile, s / 8)[p * rows_per_tile + r];
    return static_cast<std::uint8_t>((word >> (4 * (s % 8))) & 15U);
  };
  for (std::int64_t t = 0; t < w.tiles; ++t)
    for (std::int64_t q = 0; q < quads; ++q)
      for (int p = 0; p < w.planes; ++p)
        for (int h = 0; h < 2; ++h)
          for (int r = 0; r < rows_per_tile; ++r)
            bytes[static_cast<std::size_t>(((t * quads + q) * w.planes + p) * 2 * rows_per_tile +
                                           h * rows_per_tile + byte_of_row(r))] =
                static_cast<std::uint8_t>(nibble(t, p, r, 4 * q + h) |
                                          (nibble(t, p, r, 4 * q + 2 + h) << 4));
  w.quads = quads;
  w.nibble_bytes = std::move(bytes);
}

void add_word_tables(cpu_weights& w) {
  if (!w.quint_words.empty() || w.tiles == 0) return;
  constexpr int rows_per_tile = cpu_weights::tile_rows;
  constexpr std::int64_t quint_cols = 5, quints_per_word = 3;
  const std::int64_t slots =
      ((w.group_size + quint_cols - 1) / quint_cols + quints_per_word - 1) / quints_per_word;
  std::vector<std::uint16_t, aligned_allocator<std::uint16_t>> words(
      static_cast<std::size_t>(w.tiles * w.groups * slots * w.planes * rows_per_tile), 0);
  // Bit c of a lookup plane's row (0 past w.cols: the padding bits of w.words are 0).
  auto bit = [&](std::int64_t tile, int p, int r, std::int64_t c) -> std::uint16_t {
    const std::uint32_t word =
        w.chunk_bits(tile, c / cpu_weights::chunk_cols)[p * rows_per_tile + r];
    return static_cast<std::uint16_t>((word >> (c % cpu_weights::chunk_cols)) & 1U);
  };
  for (std::int64_t t = 0; t < w.tiles; ++t)
    for (std::int64_t g = 0; g < w.groups; ++g) {
      const std::int64_t begin = g * w.group_size;
      const std::int64_t end = std::min(begin + w.group_size, w.cols);
      for (std::int64_t s = 0; s < slots; ++s)
        for (int p = 0; p < w.planes; ++p)
          for (int r = 0; r < rows_per_tile; ++r) {
            std::uint16_t value = 0;
            for (std::int64_t f = 0; f < quints_per_word; ++f)
              for (std::int64_t i = 0; i < quint_cols; ++i) {
                const std::int64_t c = begin + (quints_per_word * s + f) * quint_cols + i;
                if (c < end)
                  value = static_cast<std::uint16_t>(value | bit(t, p, r, c) << (5 * f + i));
              }
            words[static_cast<std::size_t>(
                (((t * w.groups + g) * slots + s) * w.planes + p) * rows_per_tile + r)] = value;
          }
    }
  w.word_slots = slots;
  w.quint_words = std::move(words);
}

void add_encoded_layout(cpu_weights& w) {
  const detail::cpu::kernel_table& k = detail::cpu::active_kernels();
  if (k.word_rows != nullptr)
    add_word_tables(w);
  else if (k.byte_rows != nullptr)
    add_byte_tables(w);
}

}  // namespace qsl
