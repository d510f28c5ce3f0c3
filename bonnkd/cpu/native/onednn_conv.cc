// oneDNN convolutions as XLA FFI custom calls: forward, input gradient and
// weight gradient of a 2-D convolution, float32, NHWC activations and HWIO
// kernels (the layouts of bonnkd's models), any stride and explicit padding.
//
// XLA:CPU in jax 0.10.2 computes a convolution in YNNPACK or in its own Eigen
// code and offers no oneDNN one; PyTorch's CPU convolutions are oneDNN's.
// bonnkd/cpu/onednn.py registers these handlers and wraps them in a
// jax.custom_vjp; tests/test_onednn.py checks them against
// lax.conv_general_dilated and its vjp.
//
// Each handler keeps, per shape, team size and calling thread, the oneDNN
// primitive and the kernel layout that primitive chose (format_tag::any:
// blocked for the JIT kernels), in a cache guarded by a mutex; one call
// executes at a time (JoinTeam). Activations stay NHWC (no reorder); the
// kernel is reordered from HWIO into the primitive's layout at each call
// (and the weight gradient back), a small cost next to the convolution.

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// The convolution's geometry, from the FFI attributes and buffer shapes.
struct Geometry {
  int64_t n, h, w, c;       // input, NHWC
  int64_t kh, kw, o;        // kernel HWIO (its I is c)
  int64_t oh, ow;           // output spatial size
  int64_t sh, sw;           // strides
  int64_t pt, pb, pl, pr;   // padding: top, bottom, left, right

  memory::desc Src() const { return {{n, c, h, w}, Dt::f32, Tag::nhwc}; }
  memory::desc Dst() const { return {{n, o, oh, ow}, Dt::f32, Tag::nhwc}; }
  memory::desc UserWeights() const {
    return {{o, c, kh, kw}, Dt::f32, Tag::hwio};
  }
  memory::desc AnyWeights() const {
    return {{o, c, kh, kw}, Dt::f32, Tag::any};
  }
  memory::dims Strides() const { return {sh, sw}; }
  int64_t Macs() const { return n * oh * ow * kh * kw * c * o; }
  memory::dims PadL() const { return {pt, pl}; }
  memory::dims PadR() const { return {pb, pr}; }

  std::string Key(const char* kind, const std::string& team) const {
    std::string key(kind);
    key += team;
    for (int64_t v : {n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr}) {
      key += ',' + std::to_string(v);
    }
    return key;
  }
};

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g,
                                                      dnnl::prop_kind prop) {
  return dnnl::convolution_forward::primitive_desc(
      Engine(), prop, dnnl::algorithm::convolution_direct, g.Src(),
      g.AnyWeights(), g.Dst(), g.Strides(), g.PadL(), g.PadR());
}

// A primitive and the kernel layout it reads (or writes), for one shape.
struct Cached {
  dnnl::primitive conv;
  memory::desc weights;      // the primitive's kernel (or its gradient's)
  dnnl::reorder to_or_from;  // HWIO -> weights (fwd, bwd data); back (bwd w)
  memory::desc scratchpad;
};

template <typename Make>
const Cached& Lookup(const std::string& key, Make make) {
  static std::mutex mu;
  static auto* cache = new std::unordered_map<std::string,
                                              std::unique_ptr<Cached>>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it == cache->end()) {
    it = cache->emplace(key, std::make_unique<Cached>(make())).first;
  }
  return *it->second;
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

ffi::Error Check(const Geometry& g) {
  if (g.oh <= 0 || g.ow <= 0 || g.sh <= 0 || g.sw <= 0) {
    return ffi::Error::InvalidArgument("bonnkd oneDNN conv: bad geometry");
  }
  return ffi::Error::Success();
}

// The geometry of a conv from its input, kernel (HWIO) and output shapes,
// whichever of them a handler reads or writes.
template <typename Dims>
Geometry MakeGeometry(Dims in, Dims kernel, Dims out, int64_t sh, int64_t sw,
                      int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  return Geometry{in[0],     in[1],     in[2],  in[3],  kernel[0],
                  kernel[1], kernel[3], out[1], out[2], sh,
                  sw,        pt,        pb,     pl,     pr};
}

// oneDNN's OpenMP threads per call: n, or 0 for all cores (the default; see
// bonnkd/cpu/onednn.py), for a call of at least `parallel_macs` multiply-adds;
// a smaller one runs on the calling thread alone. One call runs at a time:
// XLA may call these handlers from two threads of its pool at once, and two
// OpenMP teams of all cores would oversubscribe them.
//
// Each calling thread runs primitives it created itself (the thread is part
// of the cache key): oneDNN's thread-safety rule for its default build
// (DNNL_ENABLE_CONCURRENT_EXEC=OFF, whose library-managed scratchpads are
// per thread), and every convolution has a scratchpad of its own (user
// mode). A run with two threads a call hung in oneDNN's JIT spin barrier
// (2026-12-04), in the weight gradient of a strided 1x1 conv, whose
// scratchpad oneDNN 3.2 overruns (the heap corruption that ran as ``double
// free`` in a notebook's run); bonnkd/cpu/onednn.py never asks for that
// gradient now.
std::atomic<int> num_threads{0};

// Multiply-adds from which a call gets the team (bonnkd/cpu/onednn.py sets
// it; a smaller call runs on the calling thread alone).
std::atomic<int64_t> parallel_macs{int64_t{1} << 24};

// A call's place: the lock it holds, and the suffix of its primitives'
// cache keys: the team size (a primitive made for a team of two waits for a
// second thread forever) and the calling thread.
struct Team {
  std::unique_lock<std::mutex> lock;
  std::string key;
};

// Takes the lock and sets this thread's OpenMP team for a call of `g`.
Team JoinTeam(const Geometry& g) {
  static std::mutex* mu = new std::mutex();
  Team team{std::unique_lock<std::mutex>(*mu), ""};
  int n = 1;
  if (g.Macs() >= parallel_macs.load()) {
    n = num_threads.load();
    n = n > 0 ? n : omp_get_num_procs();
  }
  omp_set_num_threads(n);
  std::ostringstream key;
  key << '@' << n << '#' << std::this_thread::get_id();
  team.key = key.str();
  return team;
}

// Runs ``conv`` with ``args`` plus a scratchpad of its own (thread-safe).
void Execute(const Cached& c, std::unordered_map<int, memory> args) {
  dnnl::stream stream(Engine());
  memory scratch(c.scratchpad, Engine());
  args.insert({DNNL_ARG_SCRATCHPAD, scratch});
  c.conv.execute(stream, args);
  stream.wait();
}

// The kernel ``k`` (HWIO) reordered into the layout ``c``'s primitive reads.
memory ConvKernel(const Cached& c, const Geometry& g, float* k) {
  dnnl::stream stream(Engine());
  memory user_k(g.UserWeights(), Engine(), k);
  memory conv_k(c.weights, Engine());
  c.to_or_from.execute(stream, user_k, conv_k);
  stream.wait();
  return conv_k;
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32, 4> x, ffi::Buffer<ffi::F32, 4> k,
                       ffi::ResultBuffer<ffi::F32, 4> y, int64_t sh,
                       int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                       int64_t pr) {
  Geometry g = MakeGeometry(x.dimensions(), k.dimensions(), y->dimensions(),
                            sh, sw, pt, pb, pl, pr);
  if (auto e = Check(g); e.failure()) return e;
  Team team = JoinTeam(g);
  try {
    const Cached& c = Lookup(g.Key("fwd", team.key), [&] {
      dnnl::convolution_forward::primitive_desc pd(
          Engine(), dnnl::prop_kind::forward_training,
          dnnl::algorithm::convolution_direct, g.Src(), g.AnyWeights(),
          g.Dst(), g.Strides(), g.PadL(), g.PadR(), UserScratchpad());
      return Cached{dnnl::convolution_forward(pd), pd.weights_desc(),
                    dnnl::reorder(memory(g.UserWeights(), Engine()),
                                  memory(pd.weights_desc(), Engine())),
                    pd.scratchpad_desc()};
    });
    memory conv_k = ConvKernel(c, g, k.typed_data());
    Execute(c, {{DNNL_ARG_SRC, memory(g.Src(), Engine(), x.typed_data())},
                {DNNL_ARG_WEIGHTS, conv_k},
                {DNNL_ARG_DST, memory(g.Dst(), Engine(), y->typed_data())}});
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN forward: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32, 4> dy,
                            ffi::Buffer<ffi::F32, 4> k,
                            ffi::ResultBuffer<ffi::F32, 4> dx, int64_t sh,
                            int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                            int64_t pr) {
  Geometry g = MakeGeometry(dx->dimensions(), k.dimensions(),
                            dy.dimensions(), sh, sw, pt, pb, pl, pr);
  if (auto e = Check(g); e.failure()) return e;
  Team team = JoinTeam(g);
  try {
    const Cached& c = Lookup(g.Key("bwd_data", team.key), [&] {
      auto hint = ForwardDesc(g, dnnl::prop_kind::forward_training);
      dnnl::convolution_backward_data::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, g.Src(),
          g.AnyWeights(), g.Dst(), g.Strides(), g.PadL(), g.PadR(), hint,
          UserScratchpad());
      return Cached{dnnl::convolution_backward_data(pd), pd.weights_desc(),
                    dnnl::reorder(memory(g.UserWeights(), Engine()),
                                  memory(pd.weights_desc(), Engine())),
                    pd.scratchpad_desc()};
    });
    memory conv_k = ConvKernel(c, g, k.typed_data());
    Execute(c,
            {{DNNL_ARG_DIFF_DST, memory(g.Dst(), Engine(), dy.typed_data())},
             {DNNL_ARG_WEIGHTS, conv_k},
             {DNNL_ARG_DIFF_SRC,
              memory(g.Src(), Engine(), dx->typed_data())}});
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN backward data: ") +
                                e.what());
  }
  return ffi::Error::Success();
}

ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32, 4> x,
                               ffi::Buffer<ffi::F32, 4> dy,
                               ffi::ResultBuffer<ffi::F32, 4> dk, int64_t sh,
                               int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                               int64_t pr) {
  Geometry g = MakeGeometry(x.dimensions(), dk->dimensions(),
                            dy.dimensions(), sh, sw, pt, pb, pl, pr);
  if (auto e = Check(g); e.failure()) return e;
  Team team = JoinTeam(g);
  try {
    const Cached& c = Lookup(g.Key("bwd_weights", team.key), [&] {
      auto hint = ForwardDesc(g, dnnl::prop_kind::forward_training);
      dnnl::convolution_backward_weights::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, g.Src(),
          g.AnyWeights(), g.Dst(), g.Strides(), g.PadL(), g.PadR(), hint,
          UserScratchpad());
      return Cached{dnnl::convolution_backward_weights(pd),
                    pd.diff_weights_desc(),
                    dnnl::reorder(memory(pd.diff_weights_desc(), Engine()),
                                  memory(g.UserWeights(), Engine())),
                    pd.scratchpad_desc()};
    });
    memory conv_dk(c.weights, Engine());
    Execute(c, {{DNNL_ARG_SRC, memory(g.Src(), Engine(), x.typed_data())},
                {DNNL_ARG_DIFF_DST,
                 memory(g.Dst(), Engine(), dy.typed_data())},
                {DNNL_ARG_DIFF_WEIGHTS, conv_dk}});
    dnnl::stream stream(Engine());
    memory user_dk(g.UserWeights(), Engine(), dk->typed_data());
    c.to_or_from.execute(stream, conv_dk, user_dk);
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN backward weights: ") +
                                e.what());
  }
  return ffi::Error::Success();
}

// (input, kernel or output gradient) -> result, with the geometry: the
// binding all three handlers share.
auto ConvBinding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32, 4>>()
      .Arg<ffi::Buffer<ffi::F32, 4>>()
      .Ret<ffi::Buffer<ffi::F32, 4>>()
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_bottom")
      .Attr<int64_t>("pad_left")
      .Attr<int64_t>("pad_right");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BonnkdOnednnConvForward, ForwardImpl,
                              ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(BonnkdOnednnConvBackwardData, BackwardDataImpl,
                              ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(BonnkdOnednnConvBackwardWeights,
                              BackwardWeightsImpl, ConvBinding());

// The oneDNN version this was built against, for the log line at load time.
extern "C" const char* BonnkdOnednnVersion() {
  static std::string version = [] {
    const dnnl_version_t* v = dnnl_version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
           std::to_string(v->patch);
  }();
  return version.c_str();
}

// The team size of later calls: n, or 0 for all cores.
extern "C" void BonnkdOnednnSetThreads(int n) { num_threads.store(n); }

// The multiply-adds from which later calls get the team.
extern "C" void BonnkdOnednnSetParallelMacs(int64_t macs) {
  parallel_macs.store(macs);
}
