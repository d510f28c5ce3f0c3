// The AVX2 pixel loop of bonnkd/cpu/native/xnor_conv.cc compiled for the
// default target (Rows<kAvx2>, which calls its AVX2 channel blocks one by
// one) and for AVX2 (RowsAvx2, the one the custom call runs: `flatten`
// inlines them): one thread, each the best of 3 x 300 calls, alternated, on
// random packed data; the outputs must be equal. From the repository root:
//
//   g++ -O3 -std=c++17 -I"$(python -c 'import jax; print(jax.ffi.include_dir())')" \
//       benchmarks/native/xnor_rows_bench.cc -o /tmp/xnor_rows_bench
//   /tmp/xnor_rows_bench

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
  int size, cin, cout, stride, n;
};

template <typename F>
double BestMicroseconds(F f) {
  return BestSeconds(f, 300) * 1e6;
}

}  // namespace

int main() {
  // WRN-16-3's and ResNet-18's W1A1 3x3 convs, batch 1, and two at 16.
  const Shape shapes[] = {
      {32, 48, 48, 1, 1},   {32, 48, 96, 2, 1},    {16, 96, 96, 1, 1},
      {8, 192, 192, 1, 1},  {32, 64, 64, 1, 1},    {16, 128, 128, 1, 1},
      {8, 256, 256, 1, 1},  {4, 512, 512, 1, 1},   {32, 48, 48, 1, 16},
      {8, 192, 192, 1, 16}};
  std::mt19937 rng(0);
  for (const Shape& s : shapes) {
    const int words = (s.cin + 31) / 32;
    const int out = (s.size + s.stride - 1) / s.stride;
    const int pad = s.stride == 1 ? 1 : 0;  // SAME's top/left padding
    Geometry g{s.n, s.size, s.size, words, 3, 3, s.cout, out, out,
               s.stride, s.stride, pad, pad, s.cin};
    std::vector<uint32_t> x(size_t(s.n) * s.size * s.size * words);
    std::vector<uint32_t> k(9 * words * s.cout);
    for (auto& v : x) v = rng();
    for (auto& v : k) v = rng();
    if (s.cin % 32) {  // bits past the C channels are 0 in both
      const uint32_t mask = (1u << (s.cin % 32)) - 1;
      for (size_t i = words - 1; i < x.size(); i += words) x[i] &= mask;
      for (size_t i = (words - 1) * s.cout; i < k.size();
           i += size_t(words) * s.cout) {
        for (int c = 0; c < s.cout; ++c) k[i + c] &= mask;
      }
    }
    std::vector<int32_t> y1(size_t(s.n) * out * out * s.cout), y2(y1.size());
    const int64_t rows = g.n * g.oh;
    CountsOut<kAvx2> out1(g, y1.data()), out2(g, y2.data());
    double generic = 1e9, avx2 = 1e9;
    for (int round = 0; round < 3; ++round) {
      generic = std::min(generic, BestMicroseconds([&] {
        Rows<kAvx2>(g, x.data(), k.data(), out1, 0, rows);
      }));
      avx2 = std::min(avx2, BestMicroseconds([&] {
        RowsAvx2(g, x.data(), k.data(), out2, 0, rows);
      }));
    }
    const bool equal = std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0;
    std::printf("batch %2d %2dx%-2d %3d->%3d stride %d: Rows<kAvx2> %7.1f us, "
                "RowsAvx2 %7.1f us (%.2fx) %s\n",
                s.n, s.size, s.size, s.cin, s.cout, s.stride, generic, avx2,
                generic / avx2, equal ? "equal" : "DIFFER");
  }
}
