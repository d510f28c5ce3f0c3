"""oneDNN convolutions on CPU, as XLA FFI custom calls, with their gradients.

XLA:CPU (jax 0.10.2) computes a convolution in YNNPACK or in its own Eigen
code; PyTorch's CPU convolutions are oneDNN's, and two thirds of bonnkd's CPU
train step were XLA's convolutions (``results/README.md``). The native
library ``bonnkd/cpu/_onednn_conv*.so``, built from
``bonnkd/cpu/native/onednn_conv.cc`` by ``pip install -e .`` where a C++
compiler and the ``onednn-devel-cpu-gomp`` wheel are at hand, exposes three
XLA FFI handlers: the forward convolution, its input gradient and its
weight gradient (float32, NHWC x HWIO, any stride and padding). Here they
are registered with ``jax.ffi`` and tied together by a ``jax.custom_vjp``
(:func:`conv2d`), so ``jax.grad`` and ``jit`` work as with
``lax.conv_general_dilated``, and ``vmap`` by a loop over the mapped axis.

**Optional.** Without the library (no compiler, no oneDNN wheel, not x86
Linux) or with ``BONNKD_ONEDNN=0``, :func:`available` is False, bonnkd logs
once that it uses XLA's convolution, and ``conv_impl='onednn'`` computes
XLA's; ``'auto'`` then never picks it. The pure-JAX convolution stays the
reference the tests compare against.

  from bonnkd.cpu import onednn
  if onednn.available():
    y = onednn.conv2d(x, kernel, (1, 1), 'SAME')
"""

import ctypes
import functools
import importlib.metadata
import os

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from bonnkd.cpu import native_library

__all__ = ['available', 'why_unavailable', 'conv2d', 'set_threads', 'threads',
           'set_parallel_macs', 'LIBRARY', 'ENV', 'THREADS_ENV',
           'PARALLEL_MACS_ENV', 'TARGETS']

# '0' keeps XLA's convolutions even where the library is built.
ENV = 'BONNKD_ONEDNN'
# oneDNN's threads a call: 0 for all cores (the default), or n; see
# :func:`set_threads`.
THREADS_ENV = 'BONNKD_ONEDNN_THREADS'
DEFAULT_THREADS = 0
# A call of fewer multiply-adds runs on one thread; see :func:`set_parallel_macs`.
PARALLEL_MACS_ENV = 'BONNKD_ONEDNN_PARALLEL_MACS'
DEFAULT_PARALLEL_MACS = 1 << 24
# FFI target name -> symbol of the library.
TARGETS = {
    'bonnkd_onednn_conv_fwd': 'BonnkdOnednnConvForward',
    'bonnkd_onednn_conv_bwd_data': 'BonnkdOnednnConvBackwardData',
    'bonnkd_onednn_conv_bwd_weights': 'BonnkdOnednnConvBackwardWeights',
}


def _preload_libdnnl() -> None:
  """Loads the oneDNN wheel's ``libdnnl.so.3`` (not on the loader's path).

  Loaded with RTLD_GLOBAL first, it is the one the library's dependency on
  ``libdnnl.so.3`` resolves to.
  """
  files = importlib.metadata.distribution('onednn-cpu-gomp').files or []
  found = [f for f in files if os.path.basename(str(f)) == 'libdnnl.so.3']
  if not found:
    raise OSError('the onednn-cpu-gomp wheel has no libdnnl.so.3')
  ctypes.CDLL(str(found[0].locate()), mode=ctypes.RTLD_GLOBAL)


def _loaded(library: ctypes.CDLL, path: str) -> None:
  library.BonnkdOnednnVersion.restype = ctypes.c_char_p
  n = int(os.environ.get(THREADS_ENV, DEFAULT_THREADS))
  _set_threads(library, n)
  macs = int(os.environ.get(PARALLEL_MACS_ENV, DEFAULT_PARALLEL_MACS))
  _set_parallel_macs(library, macs)
  logging.info('oneDNN %s convolutions loaded from %s (%s a call of %d or '
               'more multiply-adds, one thread below; one call at a time).',
               library.BonnkdOnednnVersion().decode(), path,
               f'{n} thread(s)' if n else 'all cores', macs)


LIBRARY = native_library.NativeLibrary(
    '_onednn_conv', ENV, 'oneDNN convolutions', "XLA's convolution", TARGETS,
    preload=_preload_libdnnl, loaded=_loaded)
available = LIBRARY.available
why_unavailable = LIBRARY.why_unavailable


_threads = DEFAULT_THREADS
_parallel_macs = DEFAULT_PARALLEL_MACS


def _set_threads(library: ctypes.CDLL, n: int) -> None:
  global _threads
  if n < 0:
    raise ValueError(f'oneDNN threads must be 0 (all cores) or more, got {n}.')
  library.BonnkdOnednnSetThreads(ctypes.c_int(n))
  _threads = n


def set_threads(n: int) -> None:
  """oneDNN's OpenMP threads for each later call: n, or 0 for all cores.

  One call runs at a time, whatever XLA:CPU's pool asks (a lock in the
  library), and each of XLA's threads runs oneDNN primitives it created
  itself. All cores a call is the default: on a quiet 2-core EPYC
  (family 25) it trained 1.49-1.63x as fast as one thread a call, and
  letting one-thread calls run at once gained nothing (0.98-1.01x; XLA:CPU
  ran them one after the other), results/README.md. A run with two threads
  a call once hung in oneDNN's JIT spin barrier, in a strided 1x1 conv's
  weight gradient, whose scratchpad oneDNN 3.2 overruns; :func:`conv2d`
  keeps strided 1x1 convs away from that path since. ``BONNKD_ONEDNN_THREADS``
  sets it for a process.
  """
  if n < 0:
    raise ValueError(f'oneDNN threads must be 0 (all cores) or more, got {n}.')
  _set_threads(_library(), n)


def _set_parallel_macs(library: ctypes.CDLL, macs: int) -> None:
  global _parallel_macs
  if macs < 0:
    raise ValueError(f'oneDNN parallel multiply-adds must be 0 or more, '
                     f'got {macs}.')
  library.BonnkdOnednnSetParallelMacs(ctypes.c_int64(macs))
  _parallel_macs = macs


def set_parallel_macs(macs: int) -> None:
  """Calls of fewer multiply-adds than ``macs`` run on one thread.

  A team pays for its start and its spin-wait only on a large call: on a
  quiet 2-core EPYC (family 25) a W1A1 WRN-10-2's packed batch-1 forward
  ran 1.3x faster with every conv on one thread than with all cores a call
  (its float eval 1.05x), while batch-128 training ran 1.5x slower
  (results/README.md). The default, 2^24 (about a millisecond of one
  core), sits between those models' batch-1 convs (< 10M) and batch-128
  ones (> 1G); 0 gives every call the team (``BONNKD_ONEDNN_PARALLEL_MACS``).
  """
  _set_parallel_macs(_library(), macs)


def _library() -> ctypes.CDLL:
  if not available():
    raise RuntimeError(f'oneDNN convolutions unavailable: '
                       f'{why_unavailable()}.')
  return LIBRARY.library


def threads() -> tuple[int, int]:
  """(threads, multiply-adds): a call of at least that many multiply-adds
  runs on that many threads (0: all cores), a smaller one on one."""
  available()  # Loading the library reads the environment.
  return _threads, _parallel_macs


def _pads(x_shape, kernel_shape, strides, padding):
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x_shape[1:3], kernel_shape[:2], strides,
                                  padding)
  return tuple(tuple(int(p) for p in pair) for pair in padding)


def _attrs(strides, pads):
  (top, bottom), (left, right) = pads
  return dict(stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
              pad_top=np.int64(top), pad_bottom=np.int64(bottom),
              pad_left=np.int64(left), pad_right=np.int64(right))


def _out_size(size, k, stride, lo, hi):
  return (size + lo + hi - k) // stride + 1


def _call(target, shape, *args, strides, pads):
  return jax.ffi.ffi_call(
      target, jax.ShapeDtypeStruct(shape, jnp.float32),
      vmap_method='sequential')(*args, **_attrs(strides, pads))


def _forward(x, kernel, strides, pads):
  n, h, w, _ = x.shape
  kh, kw, _, cout = kernel.shape
  (top, bottom), (left, right) = pads
  shape = (n, _out_size(h, kh, strides[0], top, bottom),
           _out_size(w, kw, strides[1], left, right), cout)
  return _call('bonnkd_onednn_conv_fwd', shape, x, kernel, strides=strides,
               pads=pads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, strides, pads):
  return _forward(x, kernel, strides, pads)


def _conv_fwd(x, kernel, strides, pads):
  return _forward(x, kernel, strides, pads), (x, kernel)


def _conv_bwd(strides, pads, residuals, dy):
  x, kernel = residuals
  dx = _call('bonnkd_onednn_conv_bwd_data', x.shape, dy, kernel,
             strides=strides, pads=pads)
  dk = _call('bonnkd_onednn_conv_bwd_weights', kernel.shape, x, dy,
             strides=strides, pads=pads)
  return dx, dk


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d(x, kernel, strides=(1, 1), padding='SAME'):
  """``lax.conv_general_dilated`` (NHWC x HWIO, float32) through oneDNN.

  Args:
    x: (N, H, W, C_in) float32.
    kernel: (kh, kw, C_in, C_out) float32.
    strides: (sh, sw).
    padding: 'SAME', 'VALID' or ((top, bottom), (left, right)).

  Raises:
    RuntimeError: the library is not available here (:func:`why_unavailable`).
    TypeError: an input is not float32.
  """
  if not available():
    raise RuntimeError(f'oneDNN convolutions unavailable: '
                       f'{why_unavailable()}.')
  if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
    raise TypeError(f'oneDNN convolutions take float32, got {x.dtype} and '
                    f'{kernel.dtype}.')
  strides = tuple(int(s) for s in strides)
  pads = _pads(x.shape, kernel.shape, strides, padding)
  if kernel.shape[:2] == (1, 1) and strides != (1, 1) and not any(
      p for pair in pads for p in pair):
    # A strided 1x1 conv reads every s-th pixel: subsample, then a 1x1 conv
    # of stride 1 (the same sums, and XLA differentiates the slice). oneDNN
    # 3.2's strided 1x1 weight gradient on NHWC inputs with fewer input
    # channels than its channel block writes past its scratchpad (reported
    # upstream as oneDNN issue 6035): here it corrupted the heap of a
    # notebook's run, and with two threads a call that run hung in the
    # same gradient's spin barrier.
    x = x[:, ::strides[0], ::strides[1], :]
    strides = (1, 1)
  return _conv(x, kernel, strides, pads)
