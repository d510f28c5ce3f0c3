r"""1-bit tensors packed 32 to a word, and the XNOR-popcount convolution.

A 1-bit convolution with both operands in {-1, +1} is an integer dot product
per output: with ``a`` and ``w`` the bits of the signs (bit 1 for +1), along
``C`` channels

.. math::  \sum_c \mathrm{sign}(x_c)\,\mathrm{sign}(w_c)
           = 2\,\mathrm{popcount}(\lnot(a \oplus w)) - C,

XNOR-Net's Eq. 9 (Rastegari et al., arXiv:1603.05279) and BNN's xnor-count
(Hubara et al., arXiv:1602.02830). Here the channels are packed along the
last axis into ``uint32`` words, bit ``i`` of word ``j`` holding channel
``32 j + i`` (bit 1 where the value is >= 0: ``sign(0) = +1``, as
:func:`bonnkd.binary.quantizers.sign` in training); channels past ``C`` in
the last word are 0 in both operands, so each adds one to the count and is
taken off.

Zero padding: in training a 1-bit conv reads ``sign(x)`` padded with zeros
(SAME), so a padded tap adds nothing. :func:`xnor_conv2d` takes each tap's
count only where the tap reads inside the image; the result equals
``lax.conv_general_dilated`` of the +-1 tensors exactly (integers below
2^24 are exact in float32), which the tests check bit for bit.

Binary output (Larq Compute Engine's): when the next layer is 1-bit and
reads this conv's count only through per-channel monotone steps (the
scale, a BatchNorm, a hard tanh), the sign it will take is ``lo[c] <= count
<= hi[c]`` for integers found once by :func:`sign_intervals_np`, and
:func:`sign_xnor_conv2d_bits` writes those bits packed, so no float
activation lies between the two layers.

This is the portable path (any backend, ``lax.population_count``): the
reference for a native kernel, and what runs where none is built.
"""

from collections.abc import Callable

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

__all__ = ['WORD_BITS', 'words_for', 'pack_bits', 'pack_signs',
           'pack_signs_np', 'unpack_signs', 'unpack_signs_np',
           'pack_kernel_np', 'unpack_kernel', 'unpack_kernel_np',
           'conv_geometry', 'xnor_conv2d', 'sign_xnor_conv2d',
           'sign_intervals_np', 'sign_xnor_conv2d_bits']

WORD_BITS = 32


def words_for(channels: int) -> int:
  """uint32 words that hold ``channels`` bits."""
  return -(-channels // WORD_BITS)


def _pad_channels(bits, xp):
  pad = words_for(bits.shape[-1]) * WORD_BITS - bits.shape[-1]
  return xp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)])


def pack_bits(bits: jax.Array) -> jax.Array:
  """(..., C) bool -> (..., ceil(C / 32)) uint32, bit c % 32 of word c / 32."""
  bits = _pad_channels(bits.astype(jnp.uint32), jnp)
  bits = bits.reshape(*bits.shape[:-1], -1, WORD_BITS)
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  # Distinct bits: the sum is their OR.
  return jnp.sum(bits << shifts, axis=-1, dtype=jnp.uint32)


def pack_signs(x: jax.Array) -> jax.Array:
  """(..., C) real -> (..., ceil(C / 32)) uint32: bit 1 where x >= 0."""
  return pack_bits(x >= 0)


def pack_signs_np(x: np.ndarray) -> np.ndarray:
  """:func:`pack_signs` in NumPy (export and deployment need no JAX)."""
  bits = _pad_channels((np.asarray(x) >= 0).astype(np.uint32), np)
  bits = bits.reshape(*bits.shape[:-1], -1, WORD_BITS)
  shifts = np.arange(WORD_BITS, dtype=np.uint32)
  return np.sum(bits << shifts, axis=-1, dtype=np.uint32)


def unpack_signs(words: jax.Array, channels: int,
                 dtype=jnp.float32) -> jax.Array:
  """(..., W) uint32 -> (..., channels) in {-1, +1}: :func:`pack_signs`' inverse."""
  shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
  bits = (words[..., None] >> shifts) & 1
  bits = bits.reshape(*words.shape[:-1], -1)[..., :channels]
  return (2 * bits.astype(jnp.int32) - 1).astype(dtype)


def unpack_signs_np(words: np.ndarray, channels: int) -> np.ndarray:
  """:func:`unpack_signs` in NumPy, float32."""
  shifts = np.arange(WORD_BITS, dtype=np.uint32)
  bits = (np.asarray(words)[..., None] >> shifts) & 1
  bits = bits.reshape(*words.shape[:-1], -1)[..., :channels]
  return (2 * bits.astype(np.float32) - 1)


def pack_kernel_np(kernel: np.ndarray) -> np.ndarray:
  """(kh, kw, C_in, C_out) real -> (kh, kw, ceil(C_in / 32), C_out) uint32.

  The signs packed along the input channels, the axis the count runs over.
  """
  return np.moveaxis(pack_signs_np(np.moveaxis(kernel, 2, 3)), 3, 2)


def unpack_kernel(words: jax.Array, channels: int,
                  dtype=jnp.float32) -> jax.Array:
  """The +-1 kernel (HWIO) of packed ``words``, in JAX."""
  return jnp.moveaxis(unpack_signs(jnp.moveaxis(words, 2, 3), channels,
                                   dtype), 3, 2)


def unpack_kernel_np(words: np.ndarray, channels: int) -> np.ndarray:
  """:func:`pack_kernel_np`'s inverse: the +-1 kernel, float32 HWIO."""
  return np.moveaxis(unpack_signs_np(np.moveaxis(words, 2, 3), channels), 3, 2)


def _tap_valid(size, out_size, stride, offset, pad_lo):
  """Which of ``out_size`` outputs read tap ``offset`` inside ``size``."""
  position = np.arange(out_size) * stride + offset - pad_lo
  return (position >= 0) & (position < size)


def conv_geometry(x_shape, kernel_shape, channels: int, strides, padding):
  """((top, bottom), (left, right)) and the output shape of a packed conv.

  Raises:
    ValueError: the word counts of ``x_shape`` (N, H, W, words) and
      ``kernel_shape`` (kh, kw, words, C_out) do not fit ``channels``.
  """
  n, height, width, words = x_shape
  kh, kw, kernel_words, cout = kernel_shape
  if kernel_words != words or words != words_for(channels):
    raise ValueError(f'{channels} channels are {words_for(channels)} words; '
                     f'the input has {words}, the kernel {kernel_words}.')
  if isinstance(padding, str):
    padding = lax.padtype_to_pads((height, width), (kh, kw), strides, padding)
  (top, bottom), (left, right) = padding
  out_shape = (n, (height + top + bottom - kh) // strides[0] + 1,
               (width + left + right - kw) // strides[1] + 1, cout)
  return ((top, bottom), (left, right)), out_shape


def xnor_conv2d(x_words: jax.Array, kernel_words: jax.Array, channels: int,
                strides=(1, 1), padding='SAME') -> jax.Array:
  r"""conv(sign(x), sign(W)) with zero padding, from packed bits: int32.

  Args:
    x_words: (N, H, W, ceil(C / 32)) uint32, :func:`pack_signs` of the input.
    kernel_words: (kh, kw, ceil(C / 32), C_out) uint32, the kernel packed
      along its input channels (``pack_signs`` of HWIO moved to HWOI and
      back).
    channels: C, the input channels the words hold.
    strides: (sh, sw).
    padding: 'SAME', 'VALID' or ((top, bottom), (left, right)).

  Returns:
    (N, H', W', C_out) int32, equal to ``lax.conv_general_dilated`` of the
    +-1 tensors with the same zero padding.
  """
  ((top, bottom), (left, right)), (n, out_h, out_w, cout) = conv_geometry(
      x_words.shape, kernel_words.shape, channels, strides, padding)
  _, height, width, words = x_words.shape
  kh, kw = kernel_words.shape[:2]
  sh, sw = strides
  padded = jnp.pad(x_words, ((0, 0), (top, bottom), (left, right), (0, 0)))
  unused_bits = words * WORD_BITS - channels
  total = jnp.zeros((n, out_h, out_w, cout), jnp.int32)
  for i in range(kh):
    for j in range(kw):
      window = padded[:, i : i + (out_h - 1) * sh + 1 : sh,
                      j : j + (out_w - 1) * sw + 1 : sw]
      same = ~(window[..., :, None] ^ kernel_words[i, j])
      matches = jnp.sum(lax.population_count(same).astype(jnp.int32),
                        axis=-2) - unused_bits
      valid = (_tap_valid(height, out_h, sh, i, top)[:, None]
               & _tap_valid(width, out_w, sw, j, left)[None, :])
      total += jnp.where(valid[None, :, :, None], 2 * matches - channels, 0)
  return total


def sign_xnor_conv2d(x: jax.Array, kernel_words: jax.Array, strides=(1, 1),
                     padding='SAME') -> jax.Array:
  """:func:`xnor_conv2d` of ``pack_signs(x)``: the conv of sign(x), int32.

  Args:
    x: (N, H, W, C) real; its signs (+1 where x >= 0) are packed first.
    kernel_words, strides, padding: as :func:`xnor_conv2d`.

  The optimization barrier keeps the packing out of the conv's loop over
  taps: XLA otherwise recomputed it for every tap.
  """
  words = lax.optimization_barrier(pack_signs(x))
  return xnor_conv2d(words, kernel_words, x.shape[-1], strides, padding)


def sign_intervals_np(step: Callable[[np.ndarray], np.ndarray],
                      max_count: int) -> tuple[np.ndarray, np.ndarray]:
  """Per channel, the integer counts whose ``step`` is >= 0, as [lo, hi].

  Args:
    step: float32 counts (K, 1) -> (K, C) float32, what the layers between
      a 1-bit conv and the next 1-bit layer's sign do to each channel (its
      scale, a BatchNorm, ...), computed with the ops the unfused forward
      runs. Each channel's must be monotone, as products with a constant,
      sums and clips are, and stay under float32 rounding.
    max_count: the largest absolute count (taps x input channels).

  Returns:
    int32 ``lo``, ``hi`` (C,): ``step(n)[c] >= 0`` exactly where ``lo[c] <=
    n <= hi[c]``, for every integer n in [-max_count, max_count] (``lo >
    hi``: for none, as where step gives NaN).

  Raises:
    ValueError: a channel whose counts with step >= 0 are not one interval
      (step is not monotone).
  """
  counts = np.arange(-max_count, max_count + 1, dtype=np.int64)
  positive = np.asarray(step(counts.astype(np.float32)[:, None])) >= 0
  # The runs of True per channel: one interval exactly when True starts at
  # most once.
  starts = positive & ~np.pad(positive, ((1, 0), (0, 0)))[:-1]
  if np.any(starts.sum(axis=0) > 1):
    bad = np.flatnonzero(starts.sum(axis=0) > 1)
    raise ValueError(f'Channels {bad.tolist()}: the counts with step >= 0 '
                     'are not one interval (step not monotone).')
  anywhere = positive.any(axis=0)
  lo = np.where(anywhere, counts[np.argmax(positive, axis=0)], max_count + 1)
  hi = np.where(anywhere, counts[::-1][np.argmax(positive[::-1], axis=0)],
                -max_count - 1)
  return lo.astype(np.int32), hi.astype(np.int32)


def sign_xnor_conv2d_bits(x: jax.Array, kernel_words: jax.Array,
                          lo: jax.Array, hi: jax.Array, strides=(1, 1),
                          padding='SAME') -> jax.Array:
  """The packed bits of ``lo <= sign_xnor_conv2d(x, ...) <= hi``.

  Args:
    x, kernel_words, strides, padding: as :func:`sign_xnor_conv2d`.
    lo, hi: (C_out,) int32, from :func:`sign_intervals_np`.

  Returns:
    (N, H', W', ceil(C_out / 32)) uint32: the next 1-bit layer's packed
    input (:func:`pack_signs` of what the unfused layers would give it).
  """
  count = sign_xnor_conv2d(x, kernel_words, strides, padding)
  return pack_bits((lo <= count) & (count <= hi))
