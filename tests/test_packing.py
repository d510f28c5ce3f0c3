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
