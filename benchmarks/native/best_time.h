// The best (shortest) wall time of repeated calls, for the native
// benchmarks: the fastest of many short calls is the one no other process
// or interrupt got in the way of.

#ifndef BONNKD_BENCHMARKS_NATIVE_BEST_TIME_H_
#define BONNKD_BENCHMARKS_NATIVE_BEST_TIME_H_

#include <algorithm>
#include <chrono>

// Seconds of the fastest of `calls` calls of f().
template <typename F>
double BestSeconds(F f, int calls) {
  double best = 1e9;
  for (int i = 0; i < calls; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
    best = std::min(best, dt.count());
  }
  return best;
}

#endif  // BONNKD_BENCHMARKS_NATIVE_BEST_TIME_H_
