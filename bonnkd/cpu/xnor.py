"""The native XNOR-popcount convolution on CPU, as an XLA FFI custom call.

``bonnkd/cpu/_xnor_conv*.so``, built from ``bonnkd/cpu/native/xnor_conv.cc``
by ``pip install -e .`` where a C++ compiler and jaxlib's FFI headers are at
hand, computes :func:`bonnkd.binary.packing.xnor_conv2d` (same arguments,
same int32 result, bit for bit) with AVX-512 VPOPCNTDQ, AVX2 or scalar code,
whichever this CPU has (:func:`paths`), its output rows shared out over
XLA's intra-op thread pool; :func:`sign_xnor_conv2d` takes float
activations and packs their signs inside the same call
(:func:`bonnkd.binary.packing.sign_xnor_conv2d`), what ``bonnkd.deploy``
runs, and :func:`sign_xnor_conv2d_bits` writes the next 1-bit layer's
packed input instead of the counts
(:func:`bonnkd.binary.packing.sign_xnor_conv2d_bits`). Inference only: it
has no gradient.

Optional: without the library, or with ``BONNKD_XNOR_NATIVE=0``,
:func:`available` is False and ``bonnkd.deploy`` runs the pure-JAX packed
convolution, the reference.
"""

import ctypes

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bonnkd.binary import packing
from bonnkd.cpu import native_library

__all__ = ['ENV', 'PATHS', 'MAX_BITS_FEATURES', 'LIBRARY', 'available',
           'why_unavailable', 'paths', 'xnor_conv2d', 'sign_xnor_conv2d',
           'sign_xnor_conv2d_bits']

ENV = 'BONNKD_XNOR_NATIVE'
# Instruction paths of the kernel, by the number the library takes.
PATHS = {'auto': 0, 'scalar': 1, 'avx2': 2, 'avx512': 3}
_TARGET = 'bonnkd_xnor_conv'
_SIGN_TARGET = 'bonnkd_sign_xnor_conv'
_BITS_TARGET = 'bonnkd_sign_xnor_conv_bits'
# The most output channels of the binary output: one pixel's counts wait in
# a scratch row of this size (kMaxBitsCout in xnor_conv.cc).
MAX_BITS_FEATURES = 4096


def _paths_of(library) -> set[str]:
  bits = library.BonnkdXnorPaths()
  return {name for name, p in PATHS.items() if p and bits & (1 << p)}


def _loaded(library: ctypes.CDLL, path: str) -> None:
  logging.info('XNOR-popcount convolution loaded from %s (paths here: %s).',
               path, ', '.join(sorted(_paths_of(library))))


LIBRARY = native_library.NativeLibrary(
    '_xnor_conv', ENV, 'Native XNOR-popcount convolution', 'the pure-JAX one',
    {_TARGET: 'BonnkdXnorConv', _SIGN_TARGET: 'BonnkdSignXnorConv',
     _BITS_TARGET: 'BonnkdSignXnorConvBits'},
    loaded=_loaded)
available = LIBRARY.available
why_unavailable = LIBRARY.why_unavailable


def paths() -> set[str]:
  """The instruction paths this CPU runs ('scalar', 'avx2', 'avx512')."""
  library = LIBRARY.library
  return _paths_of(library) if library is not None else set()


def _check(path: str) -> None:
  if not available():
    raise RuntimeError(f'Native XNOR-popcount convolution unavailable: '
                       f'{why_unavailable()}.')
  if path != 'auto' and path not in paths():
    raise RuntimeError(f'This CPU runs the XNOR-popcount paths '
                       f'{sorted(paths())}, not {path!r}.')


def _geometry_attrs(x_words_shape, kernel_words, channels, strides, padding):
  """The output shape and the call's geometry attributes."""
  ((top, _), (left, _)), out = packing.conv_geometry(
      x_words_shape, kernel_words.shape, channels, strides, padding)
  if kernel_words.shape[0] * kernel_words.shape[1] > 64:
    raise ValueError(f'The native kernel takes up to 64 taps (8x8), got '
                     f'{kernel_words.shape[:2]}.')
  sh, sw = strides
  return out, dict(stride_h=np.int64(sh), stride_w=np.int64(sw),
                   pad_top=np.int64(top), pad_left=np.int64(left))


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
    ValueError: the word counts do not fit ``channels``, or the kernel has
      more than 64 taps.
  """
  _check(path)
  out, attrs = _geometry_attrs(x_words.shape, kernel_words, channels,
                               strides, padding)
  return jax.ffi.ffi_call(
      _TARGET, jax.ShapeDtypeStruct(out, jnp.int32),
      vmap_method='sequential')(
          x_words.astype(jnp.uint32), kernel_words.astype(jnp.uint32),
          channels=np.int64(channels), path=np.int64(PATHS[path]), **attrs)


def sign_xnor_conv2d(x: jax.Array, kernel_words: jax.Array, strides=(1, 1),
                     padding='SAME', path: str = 'auto'):
  """:func:`bonnkd.binary.packing.sign_xnor_conv2d`, computed natively.

  ``x`` (N, H, W, C) is read as float32; its signs are packed inside the
  call (bit 1 where x >= 0, as :func:`bonnkd.binary.packing.pack_signs`),
  then convolved as :func:`xnor_conv2d`. Arguments and errors as there.
  """
  _check(path)
  shape = (*x.shape[:-1], packing.words_for(x.shape[-1]))
  out, attrs = _geometry_attrs(shape, kernel_words, x.shape[-1], strides,
                               padding)
  return jax.ffi.ffi_call(
      _SIGN_TARGET, jax.ShapeDtypeStruct(out, jnp.int32),
      vmap_method='sequential')(
          x.astype(jnp.float32), kernel_words.astype(jnp.uint32),
          path=np.int64(PATHS[path]), **attrs)


def sign_xnor_conv2d_bits(x: jax.Array, kernel_words: jax.Array,
                          lo: jax.Array, hi: jax.Array, strides=(1, 1),
                          padding='SAME', path: str = 'auto'):
  """:func:`bonnkd.binary.packing.sign_xnor_conv2d_bits`, computed natively.

  As :func:`sign_xnor_conv2d`, but each pixel's counts stay in a scratch row
  and the call writes the packed bits of ``lo[c] <= count <= hi[c]``,
  (N, H', W', ceil(C_out / 32)) uint32. At most
  :data:`MAX_BITS_FEATURES` output channels.
  """
  _check(path)
  shape = (*x.shape[:-1], packing.words_for(x.shape[-1]))
  out, attrs = _geometry_attrs(shape, kernel_words, x.shape[-1], strides,
                               padding)
  cout = out[-1]
  if cout > MAX_BITS_FEATURES:
    raise ValueError(f'The native binary output takes up to '
                     f'{MAX_BITS_FEATURES} channels, got {cout}.')
  if lo.shape != (cout,) or hi.shape != (cout,):
    raise ValueError(f'lo and hi must be ({cout},), got {lo.shape} and '
                     f'{hi.shape}.')
  return jax.ffi.ffi_call(
      _BITS_TARGET,
      jax.ShapeDtypeStruct((*out[:-1], packing.words_for(cout)), jnp.uint32),
      vmap_method='sequential')(
          x.astype(jnp.float32), kernel_words.astype(jnp.uint32),
          lo.astype(jnp.int32), hi.astype(jnp.int32),
          path=np.int64(PATHS[path]), **attrs)
