// Where a batch-1 call of the native XNOR conv spends its time, one thread:
// the packing of the float input's signs (PackAvx512 / PackAvx2) and the
// convolution of the packed words (RowsAvx512 / RowsAvx2), each the best of
// 2,000 calls, for the W1A1 3x3 convs of WRN-16-3 and ResNet-18 at batch 1,
// on the widest path this CPU has. "ns per vector" divides the convolution
// by its channel-block steps: output pixels x 9 taps x words x Cout / L
// (the border pixels' missing taps counted too), with L = 16 channels
// (AVX-512) or 8 (AVX2), each one broadcast activation word XOR-ed with L
// kernel words, popcounted and added; "cycles" converts it at the clock the
// core runs at, timed first as a chain of dependent register adds (one a
// cycle; /proc/cpuinfo's figure is the nominal clock, not the turbo one),
// next to the same instructions timed alone, without loads or loops.
// An argument `avx2` times the AVX2 path on a CPU that has both. From the
// repository root:
//
//   g++ -O3 -std=c++17 -I"$(python -c 'import jax; print(jax.ffi.include_dir())')" \
//       benchmarks/native/xnor_parts_bench.cc -o /tmp/xnor_parts_bench
//   /tmp/xnor_parts_bench [avx2]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../../bonnkd/cpu/native/xnor_conv.cc"
#include "best_time.h"

namespace {

struct Shape {
  int size, cin, cout, stride;
};

template <typename F>
double BestMicroseconds(F f) {
  return BestSeconds(f, 2000) * 1e6;
}

// The core's clock in GHz: the best of 200 chains of 8M dependent register
// adds (an add whose operand is its own result waits a cycle; adds of an
// immediate are not used, which some cores fold ahead of execution).
double CoreGhz() {
  uint64_t x = 1;
  const double best = BestSeconds(
      [&] {
        for (int i = 0; i < 2000000; ++i) {
          asm volatile(
              "add %0, %0\n\tadd %0, %0\n\tadd %0, %0\n\tadd %0, %0"
              : "+r"(x));
        }
      },
      200);
  return 8e6 * 1e-9 / best;
}

// The inner loop's instructions alone, in ns per vector step: eight
// independent accumulators, each step an XOR of a broadcast word with a
// register, its popcount (VPOPCNTD; AVX2: the nibble-table lookups) and an
// add: the fastest the channel blocks could step on this core.
__attribute__((target("avx512f,avx512vpopcntdq"))) double Avx512MixNs() {
  __m512i v[8];
  for (int j = 0; j < 8; ++j) v[j] = _mm512_set1_epi32(j * 77 + 1);
  const __m512i a = _mm512_set1_epi32(12345);
  double best = 1e9;
  for (int round = 0; round < 50; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000000; ++i) {
      for (int j = 0; j < 8; ++j) {
        v[j] = _mm512_add_epi32(v[j],
                                _mm512_popcnt_epi32(_mm512_xor_si512(a, v[j])));
      }
      asm volatile("" : "+v"(v[0]), "+v"(v[1]), "+v"(v[2]), "+v"(v[3]),
                   "+v"(v[4]), "+v"(v[5]), "+v"(v[6]), "+v"(v[7]));
    }
    std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    best = std::min(best, dt.count() / 8e6);
  }
  return best * 1e9;
}

__attribute__((target("avx2"))) double Avx2MixNs() {
  __m256i v[8];
  for (int j = 0; j < 8; ++j) v[j] = _mm256_set1_epi32(j * 77 + 1);
  const __m256i a = _mm256_set1_epi32(12345);
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3,
                                         2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3,
                                         1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  double best = 1e9;
  for (int round = 0; round < 50; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000000; ++i) {
      for (int j = 0; j < 8; ++j) {
        const __m256i x = _mm256_xor_si256(a, v[j]);
        v[j] = _mm256_add_epi8(
            v[j], _mm256_add_epi8(
                      _mm256_shuffle_epi8(table, _mm256_and_si256(x, low)),
                      _mm256_shuffle_epi8(
                          table,
                          _mm256_and_si256(_mm256_srli_epi16(x, 4), low))));
      }
      asm volatile("" : "+x"(v[0]), "+x"(v[1]), "+x"(v[2]), "+x"(v[3]),
                   "+x"(v[4]), "+x"(v[5]), "+x"(v[6]), "+x"(v[7]));
    }
    std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    best = std::min(best, dt.count() / 8e6);
  }
  return best * 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const Shape shapes[] = {
      {32, 48, 48, 1},   {32, 48, 96, 2},   {16, 96, 96, 1},
      {16, 96, 192, 2},  {8, 192, 192, 1},  {32, 64, 64, 1},
      {32, 64, 128, 2},  {16, 128, 128, 1}, {16, 128, 256, 2},
      {8, 256, 256, 1},  {8, 256, 512, 2},  {4, 512, 512, 1}};
  const int64_t path =
      argc > 1 && std::strcmp(argv[1], "avx2") == 0 && Supported(kAvx2)
          ? kAvx2
          : Best();
  const int lanes = path == kAvx512 ? 16 : 8;
  if (path == kScalar) {
    std::printf("this CPU has neither AVX-512 VPOPCNTDQ nor AVX2\n");
    return 1;
  }
  const double ghz = CoreGhz();
  const double mix = path == kAvx512 ? Avx512MixNs() : Avx2MixNs();
  std::printf("path %s, one thread, best of 2,000 calls; the core at %.2f "
              "GHz; the inner loop's instructions alone %.3f ns = %.2f "
              "cycles per vector\n",
              path == kAvx512 ? "avx512" : "avx2", ghz, mix, mix * ghz);
  std::mt19937 rng(0);
  for (const Shape& s : shapes) {
    const int words = (s.cin + 31) / 32;
    const int out = (s.size + s.stride - 1) / s.stride;
    const int pad = s.stride == 1 ? 1 : 0;  // SAME's top/left padding
    Geometry g{1, s.size, s.size, words, 3, 3, s.cout, out, out,
               s.stride, s.stride, pad, pad, s.cin};
    std::vector<float> xf(size_t(s.size) * s.size * s.cin);
    for (auto& v : xf) v = static_cast<float>(rng() % 3) - 1.0f;
    std::vector<uint32_t> x(size_t(s.size) * s.size * words);
    std::vector<uint32_t> k(9 * words * s.cout);
    for (auto& v : k) v = rng();
    std::vector<int32_t> y(size_t(out) * out * s.cout);
    const int64_t pixels = int64_t{s.size} * s.size;
    double pack, conv;
    if (path == kAvx512) {
      CountsOut<kAvx512> sink(g, y.data());
      pack = BestMicroseconds(
          [&] { PackAvx512(xf.data(), s.cin, words, x.data(), 0, pixels); });
      conv = BestMicroseconds(
          [&] { RowsAvx512(g, x.data(), k.data(), sink, 0, out); });
    } else {
      CountsOut<kAvx2> sink(g, y.data());
      pack = BestMicroseconds(
          [&] { PackAvx2(xf.data(), s.cin, words, x.data(), 0, pixels); });
      conv = BestMicroseconds(
          [&] { RowsAvx2(g, x.data(), k.data(), sink, 0, out); });
    }
    const double vectors = double(out) * out * 9 * words * s.cout / lanes;
    std::printf("%2dx%-2d %3d->%3d stride %d: pack %6.2f us, conv %7.2f us, "
                "%.3f ns = %.2f cycles per vector (%.0f)\n",
                s.size, s.size, s.cin, s.cout, s.stride, pack, conv,
                conv * 1e3 / vectors, conv * 1e3 * ghz / vectors, vectors);
  }
}
