// The XNOR-popcount convolution of packed 1-bit tensors, as an XLA FFI
// custom call: the native twin of bonnkd.binary.packing.xnor_conv2d.
//
// Inputs: activations packed along channels, (N, H, W, Cw) uint32, and the
// kernel packed along its input channels, (kh, kw, Cw, Cout) uint32 (bit 1
// for +1; bits past the C channels are 0 in both). Output: (N, OH, OW,
// Cout) int32, the dot products of the +-1 tensors with zero padding:
//
//   out = T * C - 2 * sum over valid taps and words of popcount(a ^ w)
//
// (T: the taps that read inside the image; a padded tap adds nothing, as in
// training, where sign(x) is zero-padded). XNOR-Net, Eq. 9.
//
// Two handlers: BonnkdXnorConv takes the packed activations, and
// BonnkdSignXnorConv takes them as float32 (N, H, W, C) and packs their
// signs itself, as bonnkd.binary.packing.pack_signs would, before the same
// convolution: what bonnkd.deploy calls between real-valued layers.
// BonnkdSignXnorConvBits is the second with Larq Compute Engine's binary
// output: where the next layer is 1-bit and reads this one's output through
// per-channel monotone steps only (scale, BatchNorm, hard tanh), the sign
// it will take is a test of the count, lo[c] <= count <= hi[c], so the call
// writes the packed bits of that test, (N, OH, OW, ceil(Cout / 32)) uint32,
// and no float activation is written or read between the two layers.
//
// The micro-kernel keeps a block of output channels in vector registers and
// broadcasts each activation word against them, as Larq Compute Engine's
// kernels do; on AVX-512 a register tile of up to 4 pixels of a row by 64
// channels loads each kernel vector once for all its pixels (than one
// pixel at a time, 1.1-1.5x faster on one thread at batch 1 and 1.03-1.28x
// at batch 128 on a 2-core Intel Xeon, family 6 model 167:
// results/benchmarks/xnor_tile_xeon_family6_model167.txt). AVX-512
// VPOPCNTDQ counts 16 channels an instruction, AVX2
// counts bytes with a nibble table (vpshufb) and widens them, and a scalar
// loop serves any other CPU; the path is chosen at run time by what the CPU
// has. Pixels to pack, then output rows, are shared out over XLA's own
// intra-op thread pool in one hand-off (a batch-1 layer inside a compiled
// forward 0.98-1.26x, median 1.15x, as fast as with a hand-off for each:
// results/benchmarks/xnor_one_job_xeon_family6_model167.txt): the calling
// thread works too, so the call finishes even when every other thread of
// the pool is busy.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t n, h, w, words, kh, kw, cout, oh, ow, sh, sw, pt, pl, channels;
};

// What one output pixel reads: for each tap inside the image, its Cw
// activation words and the matching kernel rows.
struct Taps {
  const uint32_t* a[64];  // activation words of each valid tap
  const uint32_t* k[64];  // kernel rows (Cw x Cout) of each valid tap
  int64_t count = 0;
};

inline void FindTaps(const Geometry& g, const uint32_t* x, const uint32_t* k,
                     int64_t n, int64_t oy, int64_t ox, Taps* taps) {
  taps->count = 0;
  for (int64_t i = 0; i < g.kh; ++i) {
    int64_t iy = oy * g.sh + i - g.pt;
    if (iy < 0 || iy >= g.h) continue;
    for (int64_t j = 0; j < g.kw; ++j) {
      int64_t ix = ox * g.sw + j - g.pl;
      if (ix < 0 || ix >= g.w) continue;
      taps->a[taps->count] = x + ((n * g.h + iy) * g.w + ix) * g.words;
      taps->k[taps->count] = k + (i * g.kw + j) * g.words * g.cout;
      ++taps->count;
    }
  }
}

// Channels [c0, c1) of one pixel, one at a time: any CPU, and the tails.
inline void ScalarChannels(const Geometry& g, const Taps& taps, int64_t c0,
                           int64_t c1, int32_t total, int32_t* out) {
  for (int64_t c = c0; c < c1; ++c) {
    int32_t mismatches = 0;
    for (int64_t t = 0; t < taps.count; ++t) {
      for (int64_t word = 0; word < g.words; ++word) {
        mismatches += __builtin_popcount(taps.a[t][word] ^
                                         taps.k[t][word * g.cout + c]);
      }
    }
    out[c] = total - 2 * mismatches;
  }
}

// Adds the byte counts into the 32-bit sums (two multiply-adds) and clears
// them.
template <int R>
__attribute__((target("avx2"))) inline void Widen(__m256i* bytes,
                                                  __m256i* sums) {
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int r = 0; r < R; ++r) {
    sums[r] = _mm256_add_epi32(
        sums[r],
        _mm256_madd_epi16(_mm256_maddubs_epi16(bytes[r], ones8), ones16));
    bytes[r] = _mm256_setzero_si256();
  }
}

// AVX2: R registers of 8 channels. Byte counts from a nibble table
// (vpshufb) add up in 8-bit lanes for up to 31 words (31 x 8 < 256), then
// widen to 32 bits with two multiply-adds.
template <int R>
__attribute__((target("avx2"))) inline void Avx2Channels(
    const Geometry& g, const Taps& taps, int64_t c0, int32_t total,
    int32_t* out) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3,
                                         2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3,
                                         1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i bytes[R], sums[R];
  for (int r = 0; r < R; ++r) {
    bytes[r] = _mm256_setzero_si256();
    sums[r] = _mm256_setzero_si256();
  }
  int pending = 0;
  for (int64_t t = 0; t < taps.count; ++t) {
    for (int64_t word = 0; word < g.words; ++word) {
      const __m256i a = _mm256_set1_epi32(static_cast<int32_t>(taps.a[t][word]));
      const uint32_t* k = taps.k[t] + word * g.cout + c0;
      for (int r = 0; r < R; ++r) {
        __m256i v = _mm256_xor_si256(
            a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + 8 * r)));
        bytes[r] = _mm256_add_epi8(
            bytes[r],
            _mm256_add_epi8(
                _mm256_shuffle_epi8(table, _mm256_and_si256(v, low)),
                _mm256_shuffle_epi8(
                    table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low))));
      }
      if (++pending == 31) {
        Widen<R>(bytes, sums);
        pending = 0;
      }
    }
  }
  Widen<R>(bytes, sums);
  const __m256i t = _mm256_set1_epi32(total);
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(out + c0 + 8 * r),
        _mm256_sub_epi32(t, _mm256_slli_epi32(sums[r], 1)));
  }
}

// AVX-512 VPOPCNTDQ: R registers of 16 channels, one popcount instruction.
template <int R>
__attribute__((target("avx512f,avx512vpopcntdq"))) inline void Avx512Channels(
    const Geometry& g, const Taps& taps, int64_t c0, int32_t total,
    int32_t* out) {
  __m512i sums[R];
  for (int r = 0; r < R; ++r) sums[r] = _mm512_setzero_si512();
  for (int64_t t = 0; t < taps.count; ++t) {
    for (int64_t word = 0; word < g.words; ++word) {
      const __m512i a = _mm512_set1_epi32(static_cast<int32_t>(taps.a[t][word]));
      const uint32_t* k = taps.k[t] + word * g.cout + c0;
      for (int r = 0; r < R; ++r) {
        sums[r] = _mm512_add_epi32(
            sums[r], _mm512_popcnt_epi32(
                         _mm512_xor_si512(a, _mm512_loadu_si512(k + 16 * r))));
      }
    }
  }
  const __m512i t = _mm512_set1_epi32(total);
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_si512(out + c0 + 16 * r,
                        _mm512_sub_epi32(t, _mm512_slli_epi32(sums[r], 1)));
  }
}

// AVX-512 VPOPCNTDQ, a register tile of Q output pixels of one row by R
// registers of 16 channels: each kernel vector is loaded once for the Q
// pixels (a GEMM micro-kernel's tile), which cuts the kernel's reads by Q
// where a layer's kernel outgrows L1 and keeps Q x R independent sums in
// flight where Cout is a block or two. The pixels read the same taps at
// the same offsets from their windows' first words (win[q]).
template <int Q, int R>
__attribute__((target("avx512f,avx512vpopcntdq"))) inline void Avx512Tile(
    const Geometry& g, const int64_t* offsets, const uint32_t* const* krows,
    int64_t count, const uint32_t* const* win, int64_t c0, int32_t total,
    int32_t* const* out) {
  __m512i sums[Q][R];
#pragma GCC unroll 16
  for (int q = 0; q < Q; ++q) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) sums[q][r] = _mm512_setzero_si512();
  }
  for (int64_t t = 0; t < count; ++t) {
    for (int64_t word = 0; word < g.words; ++word) {
      const uint32_t* k = krows[t] + word * g.cout + c0;
      __m512i kv[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) kv[r] = _mm512_loadu_si512(k + 16 * r);
#pragma GCC unroll 16
      for (int q = 0; q < Q; ++q) {
        const __m512i a =
            _mm512_set1_epi32(static_cast<int32_t>(win[q][offsets[t] + word]));
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          sums[q][r] = _mm512_add_epi32(
              sums[q][r], _mm512_popcnt_epi32(_mm512_xor_si512(a, kv[r])));
        }
      }
    }
  }
  const __m512i t = _mm512_set1_epi32(total);
#pragma GCC unroll 16
  for (int q = 0; q < Q; ++q) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      _mm512_storeu_si512(out[q] + c0 + 16 * r,
                          _mm512_sub_epi32(t, _mm512_slli_epi32(sums[q][r], 1)));
    }
  }
}

enum Path : int64_t { kAuto = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3 };

// One output pixel, every channel: blocks of 4, 2 and 1 registers, then the
// last channels one at a time.
template <int64_t P>
inline void Pixel(const Geometry& g, const Taps& taps, int32_t* out) {
  const int32_t total = static_cast<int32_t>(taps.count * g.channels);
  int64_t c = 0;
  if constexpr (P == kAvx512) {
    for (; c + 64 <= g.cout; c += 64) Avx512Channels<4>(g, taps, c, total, out);
    for (; c + 32 <= g.cout; c += 32) Avx512Channels<2>(g, taps, c, total, out);
    for (; c + 16 <= g.cout; c += 16) Avx512Channels<1>(g, taps, c, total, out);
  } else if constexpr (P == kAvx2) {
    for (; c + 32 <= g.cout; c += 32) Avx2Channels<4>(g, taps, c, total, out);
    for (; c + 16 <= g.cout; c += 16) Avx2Channels<2>(g, taps, c, total, out);
    for (; c + 8 <= g.cout; c += 8) Avx2Channels<1>(g, taps, c, total, out);
  }
  ScalarChannels(g, taps, c, g.cout, total, out);
}

bool Supported(int64_t path) {
  __builtin_cpu_init();
  switch (path) {
    case kScalar:
      return true;
    case kAvx2:
      return __builtin_cpu_supports("avx2");
    case kAvx512:
      return __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512vpopcntdq");
    default:
      return false;
  }
}

int64_t Best() {
  for (int64_t path : {kAvx512, kAvx2}) {
    if (Supported(path)) return path;
  }
  return kScalar;
}

// Where a pixel's Cout counts go. CountsOut: straight into the int32
// output. BitsOut: into a scratch row, then packed into the output words as
// the bits of lo[c] <= count <= hi[c] (bit c % 32 of word c / 32; bits past
// Cout 0), by P's instructions.
// Row(pixel, slot) is where the counts of the slot-th pixel of a tile of
// up to kTile pixels go.
constexpr int kTile = 4;

template <int64_t P>
struct CountsOut {
  int32_t* y;
  int64_t cout;

  CountsOut(const Geometry& g, int32_t* y) : y(y), cout(g.cout) {}
  int32_t* Row(int64_t pixel, int) { return y + pixel * cout; }
  void Done(int64_t, const int32_t*) {}
};

constexpr int64_t kMaxBitsCout = 4096;

template <int64_t P>
struct BitsOut {
  uint32_t* y;
  const int32_t* lo;
  const int32_t* hi;
  int64_t cout, words;
  int32_t scratch[kTile * kMaxBitsCout];  // a tile's counts, the first
                                          // kTile x Cout of it in L1

  BitsOut(const Geometry& g, uint32_t* y, const int32_t* lo, const int32_t* hi)
      : y(y), lo(lo), hi(hi), cout(g.cout), words((g.cout + 31) / 32) {}
  int32_t* Row(int64_t, int slot) { return scratch + slot * cout; }
  void Done(int64_t pixel, const int32_t* counts);
};

inline uint32_t InsideScalar(const int32_t* v, const int32_t* lo,
                             const int32_t* hi, int64_t n) {
  uint32_t bits = 0;
  for (int64_t b = 0; b < n; ++b) {
    bits |= static_cast<uint32_t>(lo[b] <= v[b] && v[b] <= hi[b]) << b;
  }
  return bits;
}

template <>
inline void BitsOut<kScalar>::Done(int64_t pixel, const int32_t* counts) {
  uint32_t* out = y + pixel * words;
  for (int64_t word = 0; word < words; ++word) {
    const int64_t c0 = 32 * word;
    out[word] = InsideScalar(counts + c0, lo + c0, hi + c0,
                             std::min<int64_t>(32, cout - c0));
  }
}

// AVX2: two signed compares and a movemask per 8 channels.
template <>
__attribute__((target("avx2"))) inline void BitsOut<kAvx2>::Done(
    int64_t pixel, const int32_t* counts) {
  uint32_t* out = y + pixel * words;
  for (int64_t word = 0; word < words; ++word) {
    const int64_t c0 = 32 * word, n = std::min<int64_t>(32, cout - c0);
    uint32_t bits = 0;
    int64_t b = 0;
    for (; b + 8 <= n; b += 8) {
      const __m256i v = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(counts + c0 + b));
      const __m256i below = _mm256_cmpgt_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + c0 + b)), v);
      const __m256i above = _mm256_cmpgt_epi32(
          v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + c0 + b)));
      const __m256i outside = _mm256_or_si256(below, above);
      bits |= static_cast<uint32_t>(
                  ~_mm256_movemask_ps(_mm256_castsi256_ps(outside)) & 0xff)
              << b;
    }
    bits |= InsideScalar(counts + c0 + b, lo + c0 + b, hi + c0 + b, n - b)
            << b;
    out[word] = bits;
  }
}

// AVX-512: two compares into mask registers per 16 channels; the last
// channels through masked loads.
template <>
__attribute__((target("avx512f"))) inline void BitsOut<kAvx512>::Done(
    int64_t pixel, const int32_t* counts) {
  uint32_t* out = y + pixel * words;
  for (int64_t word = 0; word < words; ++word) {
    const int64_t c0 = 32 * word, n = std::min<int64_t>(32, cout - c0);
    uint32_t bits = 0;
    for (int64_t b = 0; b < n; b += 16) {
      const __mmask16 valid = static_cast<__mmask16>(
          n - b >= 16 ? 0xffff : (1u << (n - b)) - 1);
      const __m512i v = _mm512_maskz_loadu_epi32(valid, counts + c0 + b);
      const __mmask16 inside = _mm512_mask_cmple_epi32_mask(
          _mm512_mask_cmpge_epi32_mask(
              valid, v, _mm512_maskz_loadu_epi32(valid, lo + c0 + b)),
          v, _mm512_maskz_loadu_epi32(valid, hi + c0 + b));
      bits |= static_cast<uint32_t>(inside) << b;
    }
    out[word] = bits;
  }
}

// The taps of one output row's pixels whose windows lie inside the image
// horizontally: the kernel rows [i0, i1) that read inside it (all kh of
// them but on the top and bottom borders) times every kernel column, at
// fixed offsets from the first word a pixel's window reads in row i0.
struct RowTaps {
  int64_t offsets[64];
  const uint32_t* k[64];  // kernel rows (Cw x Cout) of each tap
  int64_t count = 0;
};

inline void FindRowTaps(const Geometry& g, const uint32_t* k, int64_t i0,
                        int64_t i1, RowTaps* taps) {
  taps->count = (i1 - i0) * g.kw;
  for (int64_t t = 0; t < taps->count; ++t) {
    const int64_t i = i0 + t / g.kw, j = t % g.kw;
    taps->offsets[t] = ((i - i0) * g.w + j) * g.words;
    taps->k[t] = k + (i * g.kw + j) * g.words * g.cout;
  }
}

// Q pixels of one row that read the same taps (RowTaps), win[q] their
// windows' first words: AVX-512 register tiles of 64 channels, then one of
// the 16-channel blocks left, then the last channels one pixel at a time;
// other paths one pixel at a time.
template <int64_t P, int Q>
inline void Tile(const Geometry& g, const RowTaps& row, const uint32_t* const* win,
                 int32_t* const* out) {
  const int32_t total = static_cast<int32_t>(row.count * g.channels);
  int64_t c = 0;
  if constexpr (P == kAvx512) {
    for (; c + 64 <= g.cout; c += 64) {
      Avx512Tile<Q, 4>(g, row.offsets, row.k, row.count, win, c, total, out);
    }
    switch ((g.cout - c) / 16) {
      case 3:
        Avx512Tile<Q, 3>(g, row.offsets, row.k, row.count, win, c, total, out);
        break;
      case 2:
        Avx512Tile<Q, 2>(g, row.offsets, row.k, row.count, win, c, total, out);
        break;
      case 1:
        Avx512Tile<Q, 1>(g, row.offsets, row.k, row.count, win, c, total, out);
        break;
    }
    c += (g.cout - c) / 16 * 16;
    if (c == g.cout) return;
  }
  Taps taps;
  taps.count = row.count;
  for (int64_t t = 0; t < row.count; ++t) taps.k[t] = row.k[t];
  for (int q = 0; q < Q; ++q) {
    for (int64_t t = 0; t < row.count; ++t) taps.a[t] = win[q] + row.offsets[t];
    if (c == 0) {
      Pixel<P>(g, taps, out[q]);
    } else {
      ScalarChannels(g, taps, c, g.cout, total, out[q]);
    }
  }
}

template <int64_t P, int Q, class Sink>
inline void TilePixels(const Geometry& g, const RowTaps& row,
                       const uint32_t* first_word, int64_t pixel,
                       Sink& sink) {
  const uint32_t* win[Q];
  int32_t* out[Q];
  for (int q = 0; q < Q; ++q) {
    win[q] = first_word + q * g.sw * g.words;
    out[q] = sink.Row(pixel + q, q);
  }
  Tile<P, Q>(g, row, win, out);
  for (int q = 0; q < Q; ++q) sink.Done(pixel + q, out[q]);
}

template <int64_t P, class Sink>
void Rows(const Geometry& g, const uint32_t* x, const uint32_t* k, Sink& sink,
          int64_t first, int64_t last) {
  // The columns [ox0, ox1) whose windows lie inside the image horizontally
  // go in tiles of kTile, 2 and 1 pixels through the taps their row shares;
  // the others (left and right borders) find their own taps.
  const int64_t ox0 = std::min(g.ow, (g.pl + g.sw - 1) / g.sw);
  const int64_t ox1 = g.w - g.kw + g.pl < 0
                          ? ox0
                          : std::clamp((g.w - g.kw + g.pl) / g.sw + 1, ox0, g.ow);
  RowTaps row_taps;
  Taps taps;
  for (int64_t row = first; row < last; ++row) {  // row = n * oh + oy
    const int64_t n = row / g.oh, oy = row % g.oh;
    const int64_t iy = oy * g.sh - g.pt;
    const int64_t i0 = std::max<int64_t>(0, -iy);
    const int64_t i1 = std::min(g.kh, g.h - iy);
    auto border = [&](int64_t ox) {
      const int64_t pixel = row * g.ow + ox;
      int32_t* out = sink.Row(pixel, 0);
      FindTaps(g, x, k, n, oy, ox, &taps);
      Pixel<P>(g, taps, out);
      sink.Done(pixel, out);
    };
    if (i0 >= i1 || ox0 >= ox1) {  // no window inside the image
      for (int64_t ox = 0; ox < g.ow; ++ox) border(ox);
      continue;
    }
    for (int64_t ox = 0; ox < ox0; ++ox) border(ox);
    FindRowTaps(g, k, i0, i1, &row_taps);
    auto first_word = [&](int64_t ox) {
      return x + ((n * g.h + iy + i0) * g.w + ox * g.sw - g.pl) * g.words;
    };
    int64_t ox = ox0;
    for (; ox + kTile <= ox1; ox += kTile) {
      TilePixels<P, kTile>(g, row_taps, first_word(ox), row * g.ow + ox, sink);
    }
    for (; ox + 2 <= ox1; ox += 2) {
      TilePixels<P, 2>(g, row_taps, first_word(ox), row * g.ow + ox, sink);
    }
    for (; ox < ox1; ++ox) {
      TilePixels<P, 1>(g, row_taps, first_word(ox), row * g.ow + ox, sink);
    }
    for (ox = ox1; ox < g.ow; ++ox) border(ox);
  }
}

// Rows<P> compiled for P's instructions: `flatten` inlines the pixel loop and
// its channel blocks into one function of P's target, where a function of
// the default target would call the channel blocks one by one (1-14% of a
// batch-1 layer's time on a family-25 EPYC:
// benchmarks/native/xnor_rows_bench.cc).
template <class Sink>
__attribute__((target("avx2"), flatten)) void RowsAvx2(
    const Geometry& g, const uint32_t* x, const uint32_t* k, Sink& sink,
    int64_t first, int64_t last) {
  Rows<kAvx2>(g, x, k, sink, first, last);
}

template <class Sink>
__attribute__((target("avx512f,avx512vpopcntdq"), flatten)) void RowsAvx512(
    const Geometry& g, const uint32_t* x, const uint32_t* k, Sink& sink,
    int64_t first, int64_t last) {
  Rows<kAvx512>(g, x, k, sink, first, last);
}

// Signs of float32 activations packed along channels, as
// bonnkd.binary.packing.pack_signs: bit c % 32 of word c / 32 is 1 where
// x[c] >= 0 (so sign(0) = sign(-0) = +1, as in training; NaN gives 0), and
// the bits past the C channels are 0. Pixels [first, last) of (pixels, C).
void PackScalar(const float* x, int64_t c, int64_t words, uint32_t* out,
                int64_t first, int64_t last) {
  for (int64_t p = first; p < last; ++p) {
    const float* px = x + p * c;
    for (int64_t word = 0; word < words; ++word) {
      uint32_t bits = 0;
      for (int64_t b = 0, c0 = 32 * word; b < 32 && c0 + b < c; ++b) {
        bits |= static_cast<uint32_t>(px[c0 + b] >= 0.0f) << b;
      }
      out[p * words + word] = bits;
    }
  }
}

// AVX2: one ordered >= compare and a movemask per 8 channels.
__attribute__((target("avx2"))) void PackAvx2(const float* x, int64_t c,
                                              int64_t words, uint32_t* out,
                                              int64_t first, int64_t last) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t p = first; p < last; ++p) {
    const float* px = x + p * c;
    for (int64_t word = 0; word < words; ++word) {
      const int64_t c0 = 32 * word, n = std::min<int64_t>(32, c - c0);
      uint32_t bits = 0;
      int64_t b = 0;
      for (; b + 8 <= n; b += 8) {
        bits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(
                    _mm256_loadu_ps(px + c0 + b), zero, _CMP_GE_OQ)))
                << b;
      }
      for (; b < n; ++b) {
        bits |= static_cast<uint32_t>(px[c0 + b] >= 0.0f) << b;
      }
      out[p * words + word] = bits;
    }
  }
}

// AVX-512: one compare into a mask register per 16 channels; the last
// channels through a masked load and compare.
__attribute__((target("avx512f"))) void PackAvx512(const float* x, int64_t c,
                                                   int64_t words,
                                                   uint32_t* out,
                                                   int64_t first,
                                                   int64_t last) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t p = first; p < last; ++p) {
    const float* px = x + p * c;
    for (int64_t word = 0; word < words; ++word) {
      const int64_t c0 = 32 * word, n = std::min<int64_t>(32, c - c0);
      uint32_t bits = 0;
      for (int64_t b = 0; b < n; b += 16) {
        const __mmask16 valid = static_cast<__mmask16>(
            n - b >= 16 ? 0xffff : (1u << (n - b)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(valid, px + c0 + b);
        bits |= static_cast<uint32_t>(
                    _mm512_mask_cmp_ps_mask(valid, v, zero, _CMP_GE_OQ))
                << b;
      }
      out[p * words + word] = bits;
    }
  }
}

// A loop over [0, n) cut into chunks, a few per thread: one phase of a
// ParallelJob.
struct Phase {
  std::function<void(int64_t, int64_t)> body;
  int64_t n = 0, chunk = 1, chunks = 0;
  std::atomic<int64_t> next{0}, done{0};

  void Set(int64_t n_, int64_t threads,
           std::function<void(int64_t, int64_t)> body_) {
    body = std::move(body_);
    n = n_;
    chunk = std::max<int64_t>(1, n / (4 * threads));
    chunks = (n + chunk - 1) / chunk;
  }

  // Claims and runs chunks until none is left.
  void Work() {
    for (int64_t i; (i = next.fetch_add(1)) < chunks;) {
      body(i * chunk, std::min(n, (i + 1) * chunk));
      done.fetch_add(1, std::memory_order_release);
    }
  }

  // Waits for the chunks other threads claimed: every claimed chunk is
  // being run by a thread that started, so the wait ends.
  void Finish() const {
    while (done.load(std::memory_order_acquire) < chunks) {
      std::this_thread::yield();
    }
  }
};

// Up to two loops run one after the other by the calling thread and by up
// to `threads` - 1 threads of XLA's pool that start in time, with a barrier
// between them (the convolution reads rows the packing of other chunks
// writes); returns when every chunk of both is done. One hand-off to the
// pool per call, not one per loop: waking the pool's threads is a large
// part of a batch-1 call. The calling thread works too, so the call
// finishes even when every other thread of the pool is busy, and a pool
// thread that starts after the chunks are gone finds none (it never runs a
// body, whose captures may be gone).
struct ParallelJob {
  Phase phases[2];
  int num_phases = 0;

  void Work() {
    for (int i = 0; i < num_phases; ++i) {
      phases[i].Work();
      phases[i].Finish();
    }
  }
};

void ParallelPhases(ffi::ThreadPool& pool, int64_t threads,
                    std::shared_ptr<ParallelJob> job) {
  int64_t helpers = 0;
  for (int i = 0; i < job->num_phases; ++i) {
    helpers = std::max(helpers, std::min(threads - 1, job->phases[i].chunks - 1));
  }
  for (int64_t i = 0; i < helpers; ++i) {
    pool.Schedule([job] { job->Work(); });
  }
  job->Work();
}

// Runs body(first, last) over [0, n) in chunks shared as above.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, int64_t threads,
                 std::function<void(int64_t, int64_t)> body) {
  auto job = std::make_shared<ParallelJob>();
  job->phases[0].Set(n, threads, std::move(body));
  job->num_phases = 1;
  ParallelPhases(pool, threads, std::move(job));
}

ffi::Error CheckGeometry(const Geometry& g, int64_t kernel_words,
                         int64_t out_n, int64_t out_cout, int64_t* path) {
  if (kernel_words != g.words || out_cout != g.cout || out_n != g.n) {
    return ffi::Error::InvalidArgument("bonnkd xnor conv: shapes disagree");
  }
  if (g.kh * g.kw > 64) {
    return ffi::Error::InvalidArgument(
        "bonnkd xnor conv: kernels of up to 64 taps (8x8)");
  }
  if (*path == kAuto) *path = Best();
  if (!Supported(*path)) {
    return ffi::Error::InvalidArgument(
        "bonnkd xnor conv: this CPU lacks the instructions of that path");
  }
  return ffi::Error::Success();
}

// The threads a call shares its work with: the calling thread alone for a
// call not worth waking others (about 5 us of work alone). The batch-1
// layers of WRN-16-3 and ResNet-18 (0.6M-2M word pairs) ran 1.05-1.7x faster
// (most 1.2x or more) shared with XLA's pool than alone on a quiet 2-core
// EPYC (results/benchmarks/xnor_threads_b1_*.txt).
// BONNKD_XNOR_PARALLEL_WORK overrides the threshold (word pairs; 0: every
// call), for measuring it on another machine.
int64_t Threads(ffi::ThreadPool& pool, const Geometry& g) {
  static const int64_t parallel_work = [] {
    const char* env = std::getenv("BONNKD_XNOR_PARALLEL_WORK");
    return env ? std::atoll(env) : int64_t{1} << 16;
  }();
  const int64_t word_pairs =
      g.n * g.oh * g.ow * g.kh * g.kw * g.words * g.cout;
  return word_pairs < parallel_work
             ? 1
             : std::max<int64_t>(1, pool.num_threads());
}

// The convolution of packed activations x over output rows [first, last)
// of (n, oy), writing through its own Sink<path>(g, out...).
template <template <int64_t> class Sink, class... Out>
void ConvolveRows(const Geometry& g, const uint32_t* x, const uint32_t* k,
                  int64_t path, int64_t first, int64_t last, Out... out) {
  switch (path) {
    case kAvx512: {
      Sink<kAvx512> sink(g, out...);
      RowsAvx512(g, x, k, sink, first, last);
      break;
    }
    case kAvx2: {
      Sink<kAvx2> sink(g, out...);
      RowsAvx2(g, x, k, sink, first, last);
      break;
    }
    default: {
      Sink<kScalar> sink(g, out...);
      Rows<kScalar>(g, x, k, sink, first, last);
    }
  }
}

// The signs of float32 activations x (N, H, W, C) of pixels [first, last)
// packed along channels into xw.
void PackPixels(const float* x, int64_t c, int64_t words, uint32_t* xw,
                int64_t path, int64_t first, int64_t last) {
  switch (path) {
    case kAvx512:
      PackAvx512(x, c, words, xw, first, last);
      break;
    case kAvx2:
      PackAvx2(x, c, words, xw, first, last);
      break;
    default:
      PackScalar(x, c, words, xw, first, last);
  }
}

// The convolution of packed activations x, output rows shared out.
template <template <int64_t> class Sink, class... Out>
void Convolve(ffi::ThreadPool& pool, const Geometry& g, int64_t threads,
              const uint32_t* x, const uint32_t* k, int64_t path, Out... out) {
  ParallelFor(pool, g.n * g.oh, threads, [&](int64_t first, int64_t last) {
    ConvolveRows<Sink>(g, x, k, path, first, last, out...);
  });
}

// The same of float32 activations x: their signs packed (pixels shared
// out), then convolved (output rows shared out), in one job.
template <template <int64_t> class Sink, class... Out>
void SignConvolve(ffi::ThreadPool& pool, const Geometry& g, int64_t threads,
                  const float* x, const uint32_t* k, int64_t path,
                  Out... out) {
  const int64_t c = g.channels, words = g.words;
  std::unique_ptr<uint32_t[]> packed(new uint32_t[g.n * g.h * g.w * words]);
  uint32_t* xw = packed.get();
  auto job = std::make_shared<ParallelJob>();
  job->phases[0].Set(g.n * g.h * g.w, threads,
                     [=](int64_t first, int64_t last) {
                       PackPixels(x, c, words, xw, path, first, last);
                     });
  job->phases[1].Set(g.n * g.oh, threads, [&](int64_t first, int64_t last) {
    ConvolveRows<Sink>(g, xw, k, path, first, last, out...);
  });
  job->num_phases = 2;
  ParallelPhases(pool, threads, std::move(job));
}

ffi::Error XnorConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::U32, 4> x,
                        ffi::Buffer<ffi::U32, 4> k,
                        ffi::ResultBuffer<ffi::S32, 4> y, int64_t channels,
                        int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                        int64_t path) {
  auto xd = x.dimensions(), kd = k.dimensions(), yd = y->dimensions();
  Geometry g{xd[0], xd[1], xd[2], xd[3], kd[0], kd[1], kd[3],
             yd[1], yd[2], sh,    sw,    pt,    pl,    channels};
  if (auto e = CheckGeometry(g, kd[2], yd[0], yd[3], &path); e.failure()) {
    return e;
  }
  Convolve<CountsOut>(pool, g, Threads(pool, g), x.typed_data(),
                      k.typed_data(), path, y->typed_data());
  return ffi::Error::Success();
}

Geometry SignGeometry(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> kd,
                      ffi::Span<const int64_t> yd, int64_t sh, int64_t sw,
                      int64_t pt, int64_t pl) {
  return Geometry{xd[0], xd[1], xd[2], (xd[3] + 31) / 32, kd[0], kd[1], kd[3],
                  yd[1], yd[2], sh,    sw,    pt,    pl,    xd[3]};
}

// The same of float32 activations, their signs packed inside the call: the
// packing, done by XLA before the call, took longer than the convolution
// of a batch-1 layer (0.07-0.10 ms against 0.02-0.04 ms, each jitted alone,
// on a 2-core Intel Xeon, family 6 model 167, 2026-12-04; results/README.md).
ffi::Error SignXnorConvImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 4> x,
                            ffi::Buffer<ffi::U32, 4> k,
                            ffi::ResultBuffer<ffi::S32, 4> y, int64_t sh,
                            int64_t sw, int64_t pt, int64_t pl, int64_t path) {
  auto kd = k.dimensions(), yd = y->dimensions();
  Geometry g = SignGeometry(x.dimensions(), kd, yd, sh, sw, pt, pl);
  if (auto e = CheckGeometry(g, kd[2], yd[0], yd[3], &path); e.failure()) {
    return e;
  }
  const int64_t threads = Threads(pool, g);
  SignConvolve<CountsOut>(pool, g, threads, x.typed_data(), k.typed_data(),
                          path, y->typed_data());
  return ffi::Error::Success();
}

// The same, writing the packed bits of lo[c] <= count <= hi[c] for the next
// 1-bit layer (Larq Compute Engine's binary output) instead of the counts.
ffi::Error SignXnorConvBitsImpl(
    ffi::ThreadPool pool, ffi::Buffer<ffi::F32, 4> x,
    ffi::Buffer<ffi::U32, 4> k, ffi::Buffer<ffi::S32, 1> lo,
    ffi::Buffer<ffi::S32, 1> hi, ffi::ResultBuffer<ffi::U32, 4> y, int64_t sh,
    int64_t sw, int64_t pt, int64_t pl, int64_t path) {
  auto kd = k.dimensions(), yd = y->dimensions();
  Geometry g = SignGeometry(x.dimensions(), kd, yd, sh, sw, pt, pl);
  if (yd[3] != (g.cout + 31) / 32 || lo.dimensions()[0] != g.cout ||
      hi.dimensions()[0] != g.cout) {
    return ffi::Error::InvalidArgument(
        "bonnkd xnor conv bits: shapes disagree");
  }
  if (g.cout > kMaxBitsCout) {
    return ffi::Error::InvalidArgument(
        "bonnkd xnor conv bits: at most 4096 output channels");
  }
  if (auto e = CheckGeometry(g, kd[2], yd[0], g.cout, &path); e.failure()) {
    return e;
  }
  const int64_t threads = Threads(pool, g);
  SignConvolve<BitsOut>(pool, g, threads, x.typed_data(), k.typed_data(),
                        path, y->typed_data(), lo.typed_data(),
                        hi.typed_data());
  return ffi::Error::Success();
}

auto XnorConvBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::U32, 4>>()
      .Arg<ffi::Buffer<ffi::U32, 4>>()
      .Ret<ffi::Buffer<ffi::S32, 4>>()
      .Attr<int64_t>("channels")
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left")
      .Attr<int64_t>("path");
}

auto SignXnorConvBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32, 4>>()
      .Arg<ffi::Buffer<ffi::U32, 4>>()
      .Ret<ffi::Buffer<ffi::S32, 4>>()
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left")
      .Attr<int64_t>("path");
}

auto SignXnorConvBitsBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32, 4>>()
      .Arg<ffi::Buffer<ffi::U32, 4>>()
      .Arg<ffi::Buffer<ffi::S32, 1>>()
      .Arg<ffi::Buffer<ffi::S32, 1>>()
      .Ret<ffi::Buffer<ffi::U32, 4>>()
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left")
      .Attr<int64_t>("path");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BonnkdXnorConv, XnorConvImpl,
                              XnorConvBinding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BonnkdSignXnorConv, SignXnorConvImpl,
                              SignXnorConvBinding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(BonnkdSignXnorConvBits, SignXnorConvBitsImpl,
                              SignXnorConvBitsBinding());

// Which paths this CPU runs (bit p set: path p), for the Python side.
extern "C" int BonnkdXnorPaths() {
  int paths = 0;
  for (int64_t path : {kScalar, kAvx2, kAvx512}) {
    if (Supported(path)) paths |= 1 << path;
  }
  return paths;
}
