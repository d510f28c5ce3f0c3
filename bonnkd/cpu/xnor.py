"""The native XNOR-popcount convolution on CPU, as an XLA FFI custom call.

``bonnkd/cpu/_xnor_conv*.so``, built from ``bonnkd/cpu/native/xnor_conv.cc``
by ``pip install -e .`` where a C++ compiler and jaxlib's FFI headers are at
hand, computes :func:`bonnkd.binary.packing.xnor_conv2d` (same arguments,
same int32 result, bit for bit) with AVX-512 VPOPCNTDQ, AVX2 or scalar code,
whichever this CPU has (:func:`paths`), its output rows shared out over
XLA's intra-op thread pool. Inference only: it has no gradient.

Optional: without the library, or with ``BONNKD_XNOR_NATIVE=0``,
:func:`available` is False and ``bonnkd.deploy`` runs the pure-JAX packed
convolution, the reference.
"""

import ctypes
import functools
import importlib.machinery
import os

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from bonnkd.binary import packing

__all__ = ['ENV', 'PATHS', 'available', 'why_unavailable', 'paths',
           'xnor_conv2d']

ENV = 'BONNKD_XNOR_NATIVE'
# Instruction paths of the kernel, by the number the library takes.
PATHS = {'auto': 0, 'scalar': 1, 'avx2': 2, 'avx512': 3}
_LIBRARY = '_xnor_conv'
_TARGET = 'bonnkd_xnor_conv'


def _library_path() -> str | None:
  here = os.path.dirname(os.path.abspath(__file__))
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = os.path.join(here, _LIBRARY + suffix)
    if os.path.isfile(path):
      return path
  return None


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
  """(library, why not): loads and registers the kernel once per process."""
  if os.environ.get(ENV, '1') == '0':
    return None, f'${ENV}=0'
  path = _library_path()
  if path is None:
    return None, ('bonnkd/cpu/_xnor_conv is not built (pip install -e . '
                  'builds it where g++ and jaxlib are at hand)')
  try:
    library = ctypes.CDLL(path)
  except OSError as e:
    return None, f'{path} does not load: {e}'
  jax.ffi.register_ffi_target(
      _TARGET, jax.ffi.pycapsule(library.BonnkdXnorConv), platform='cpu')
  logging.info('XNOR-popcount convolution loaded from %s (paths here: %s).',
               path, ', '.join(sorted(_paths_of(library))))
  return library, ''


def _paths_of(library) -> set[str]:
  bits = library.BonnkdXnorPaths()
  return {name for name, p in PATHS.items() if p and bits & (1 << p)}


def available() -> bool:
  """Whether the native kernel can run here (the CPU backend, loaded)."""
  return jax.default_backend() == 'cpu' and _load()[0] is not None


@functools.cache
def why_unavailable() -> str:
  """Why :func:`available` is False ('' where it is True); logged once."""
  if jax.default_backend() != 'cpu':
    return f'the backend is {jax.default_backend()}'
  why = _load()[1]
  if why:
    logging.warning('Native XNOR-popcount convolution unavailable (%s): the '
                    'pure-JAX one is used.', why)
  return why


def paths() -> set[str]:
  """The instruction paths this CPU runs ('scalar', 'avx2', 'avx512')."""
  library = _load()[0]
  return _paths_of(library) if library is not None else set()


def xnor_conv2d(x_words: jax.Array, kernel_words: jax.Array, channels: int,
                strides=(1, 1), padding='SAME', path: str = 'auto'):
  """:func:`bonnkd.binary.packing.xnor_conv2d`, computed natively.

  Args:
    x_words, kernel_words, channels, strides, padding: as there.
    path: 'auto' (the widest this CPU has), or 'scalar', 'avx2', 'avx512'
      (for tests; one the CPU lacks is an error).

  Raises:
    RuntimeError: the library is not available (:func:`why_unavailable`),
      or ``path`` is not one this CPU runs.
    ValueError: the word counts do not fit ``channels``.
  """
  if not available():
    raise RuntimeError(f'Native XNOR-popcount convolution unavailable: '
                       f'{why_unavailable()}.')
  if path != 'auto' and path not in paths():
    raise RuntimeError(f'This CPU runs the XNOR-popcount paths '
                       f'{sorted(paths())}, not {path!r}.')
  n, height, width, words = x_words.shape
  kh, kw, kernel_word_count, cout = kernel_words.shape
  if kernel_word_count != words or words != packing.words_for(channels):
    raise ValueError(f'{channels} channels are '
                     f'{packing.words_for(channels)} words; the input has '
                     f'{words}, the kernel {kernel_word_count}.')
  if cout > 1024:
    raise ValueError(f'The native kernel takes up to 1024 output channels, '
                     f'got {cout}.')
  sh, sw = strides
  if isinstance(padding, str):
    padding = lax.padtype_to_pads((height, width), (kh, kw), strides, padding)
  (top, bottom), (left, right) = padding
  out = (n, (height + top + bottom - kh) // sh + 1,
         (width + left + right - kw) // sw + 1, cout)
  return jax.ffi.ffi_call(
      _TARGET, jax.ShapeDtypeStruct(out, jnp.int32),
      vmap_method='sequential')(
          x_words.astype(jnp.uint32), kernel_words.astype(jnp.uint32),
          channels=np.int64(channels), stride_h=np.int64(sh),
          stride_w=np.int64(sw), pad_top=np.int64(top),
          pad_left=np.int64(left), path=np.int64(PATHS[path]))
