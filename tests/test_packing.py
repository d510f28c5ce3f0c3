"""Packed signs and the XNOR-popcount conv against XLA's float conv of +-1."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from bonnkd.binary import packing


def test_pack_signs_by_hand():
  # Channels 0, 2 and 33 are >= 0 (0 itself counts as +1): bits 0 and 2 of
  # word 0, bit 1 of word 1.
  x = -np.ones(34, np.float32)
  x[[0, 2, 33]] = [0.0, 5.0, 1e-9]
  np.testing.assert_array_equal(packing.pack_signs_np(x), [0b101, 0b10])
  np.testing.assert_array_equal(packing.pack_signs(jnp.asarray(x)),
                                [0b101, 0b10])


@pytest.mark.parametrize('channels', [1, 31, 32, 33, 70])
def test_pack_unpack_round_trip(channels):
  x = np.random.default_rng(channels).normal(size=(2, 3, channels))
  signs = np.where(x >= 0, 1.0, -1.0)
  np.testing.assert_array_equal(
      packing.unpack_signs_np(packing.pack_signs_np(x), channels), signs)
  np.testing.assert_array_equal(
      packing.unpack_signs(packing.pack_signs(jnp.asarray(x)), channels),
      signs)
  kernel = np.random.default_rng(0).normal(size=(3, 3, channels, 5))
  words = packing.pack_kernel_np(kernel)
  for unpacked in (packing.unpack_kernel_np(words, channels),
                   packing.unpack_kernel(jnp.asarray(words), channels)):
    np.testing.assert_array_equal(unpacked, np.where(kernel >= 0, 1.0, -1.0))


def reference_conv(x, kernel, strides, padding):
  """XLA's float conv of the +-1 tensors, zero padded as in training."""
  return lax.conv_general_dilated(
      jnp.where(x >= 0, 1.0, -1.0), jnp.where(kernel >= 0, 1.0, -1.0),
      strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('shape,kernel_size,cout,strides,padding', [
    ((2, 8, 8, 16), 3, 8, (1, 1), 'SAME'),
    ((1, 9, 7, 33), 3, 5, (2, 2), 'SAME'),  # stride 2, odd sizes, 2 words
    ((3, 6, 6, 64), 3, 4, (2, 1), 'VALID'),
    ((1, 5, 5, 7), 1, 3, (1, 1), 'SAME'),  # 1x1
    ((2, 4, 4, 3), 3, 2, (1, 1), ((2, 0), (1, 2))),  # uneven padding
])
def test_xnor_conv_equals_float_conv_of_signs(shape, kernel_size, cout,
                                               strides, padding):
  rng = np.random.default_rng(sum(shape))
  x = rng.normal(size=shape).astype(np.float32)
  x[0, 0, 0, :3] = 0.0  # sign(0) = +1 in both
  kernel = rng.normal(size=(kernel_size, kernel_size, shape[-1], cout))
  counts = jax.jit(packing.xnor_conv2d, static_argnums=(2, 3, 4))(
      packing.pack_signs(jnp.asarray(x)),
      jnp.asarray(packing.pack_kernel_np(kernel)), shape[-1], strides,
      padding)
  assert counts.dtype == jnp.int32
  np.testing.assert_array_equal(
      counts, reference_conv(x, kernel.astype(np.float32), strides, padding))


def test_xnor_conv_refuses_mismatched_words():
  with pytest.raises(ValueError, match='33 channels are 2 words'):
    packing.xnor_conv2d(jnp.zeros((1, 4, 4, 1), jnp.uint32),
                        jnp.zeros((3, 3, 1, 2), jnp.uint32), 33)


def test_pack_bits_by_hand():
  bits = np.zeros((2, 33), bool)
  bits[0, [1, 31]] = True
  bits[1, [0, 32]] = True
  np.testing.assert_array_equal(packing.pack_bits(jnp.asarray(bits)),
                                [[2 | 1 << 31, 0], [1, 1]])


def test_sign_intervals_by_hand():
  # Channel 0: 2n - 3 >= 0 from n = 2 up; channel 1: -n + 0.5 >= 0 up to
  # n = 0; channel 2: a constant -1, never; channel 3: 0, always; channel 4:
  # NaN, never.
  slope = np.float32([2, -1, 0, 0, np.nan])
  offset = np.float32([-3, 0.5, -1, 0, 0])
  lo, hi = packing.sign_intervals_np(lambda n: n * slope + offset, 5)
  np.testing.assert_array_equal(lo, [2, -5, 6, -5, 6])
  np.testing.assert_array_equal(hi, [5, 0, -6, 5, -6])
  assert lo.dtype == hi.dtype == np.int32


def test_sign_intervals_refuse_a_step_that_is_not_monotone():
  with pytest.raises(ValueError, match=r'Channels \[1\]'):
    packing.sign_intervals_np(
        lambda n: np.concatenate([n, n * n - 4], axis=1), 3)


def test_binary_output_equals_the_signs_of_the_float_steps():
  # The unfused forward: count -> count * scale -> BatchNorm -> sign, in
  # float32 NumPy; the binary output packs the same signs from integers.
  rng = np.random.default_rng(3)
  shape, cout = (2, 7, 6, 40), 37
  x = rng.normal(size=shape).astype(np.float32)
  kernel_words = jnp.asarray(packing.pack_kernel_np(
      rng.normal(size=(3, 3, shape[-1], cout))))
  scale = rng.normal(0.5, 0.5, cout).astype(np.float32)
  scale[:3] = [0.0, -0.0, 1e-30]
  mean, mul, bias = (rng.normal(0, s, cout).astype(np.float32)
                     for s in (4.0, 0.5, 0.3))

  def step(n):
    return (n * scale - mean) * mul + bias

  lo, hi = packing.sign_intervals_np(step, 9 * shape[-1])
  bits = packing.sign_xnor_conv2d_bits(jnp.asarray(x), kernel_words, lo, hi,
                                       (2, 1))
  counts = np.asarray(packing.sign_xnor_conv2d(jnp.asarray(x), kernel_words,
                                               (2, 1)))
  np.testing.assert_array_equal(
      bits, packing.pack_signs_np(step(counts.astype(np.float32))))
