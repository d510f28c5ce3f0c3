"""Binarization primitives against independent NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonnkd.binary import quantizers

# 0, +-1 (the clip boundary), points inside and beyond it.
POINTS = np.array([-3.0, -1.5, -1.0, -0.999, -0.5, -1e-7, 0.0, 1e-7, 0.25,
                   0.999, 1.0, 1.001, 2.0], np.float32)


def np_sign(x):
  return np.where(x >= 0, 1.0, -1.0)


def np_ste_grad(x, clip):
  return (np.abs(x) <= clip).astype(np.float32)


def np_approx_sign_grad(x):
  return np.where(np.abs(x) <= 1, 2 - 2 * np.abs(x), 0.0)


@pytest.mark.parametrize('name', ['ste_sign', 'approx_sign'])
@pytest.mark.parametrize('use_jit', [False, True])
def test_forward_is_sign_without_zero(name, use_jit):
  q = quantizers.get_quantizer(name)
  q = jax.jit(q) if use_jit else q
  out = np.asarray(q(jnp.asarray(POINTS)))
  assert set(np.unique(out)) <= {-1.0, 1.0}
  np.testing.assert_array_equal(out, np_sign(POINTS))
  assert q(jnp.float32(0.0)) == 1.0


def test_sign_keeps_dtype_and_never_returns_zero():
  x = jnp.zeros((3,), jnp.bfloat16)
  out = quantizers.sign(x)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out, np.float32), [1, 1, 1])


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('clip', [1.0, 0.5])
def test_ste_sign_gradient_is_clipped_identity(use_jit, clip):
  upstream = np.linspace(0.5, 2.0, POINTS.size).astype(np.float32)
  grad_fn = jax.grad(
      lambda x: jnp.sum(quantizers.ste_sign(x, clip) * upstream))
  grad_fn = jax.jit(grad_fn) if use_jit else grad_fn
  np.testing.assert_allclose(grad_fn(jnp.asarray(POINTS)),
                             upstream * np_ste_grad(POINTS, clip))


@pytest.mark.parametrize('use_jit', [False, True])
def test_approx_sign_gradient_is_bireal_triangle(use_jit):
  upstream = np.linspace(0.5, 2.0, POINTS.size).astype(np.float32)
  grad_fn = jax.grad(lambda x: jnp.sum(quantizers.approx_sign(x) * upstream))
  grad_fn = jax.jit(grad_fn) if use_jit else grad_fn
  np.testing.assert_allclose(grad_fn(jnp.asarray(POINTS)),
                             upstream * np_approx_sign_grad(POINTS),
                             rtol=1e-6, atol=1e-6)
  # Hand values: 2 at 0, 1 at +-0.5, 0 at and beyond +-1.
  g = jax.grad(lambda x: jnp.sum(quantizers.approx_sign(x)))(
      jnp.array([0.0, 0.5, -0.5, 1.0, -2.0]))
  np.testing.assert_allclose(g, [2.0, 1.0, 1.0, 0.0, 0.0])


def test_identity_gradient_is_one():
  g = jax.grad(lambda x: jnp.sum(quantizers.identity(x)))(jnp.asarray(POINTS))
  np.testing.assert_array_equal(g, np.ones_like(POINTS))


def test_xnor_scale_is_mean_abs_per_output_channel():
  kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(
      np.float32)
  alpha = quantizers.xnor_weight_scale(jnp.asarray(kernel))
  assert alpha.shape == (1, 1, 1, 5)
  np.testing.assert_allclose(alpha.reshape(-1),
                             np.abs(kernel).reshape(-1, 5).mean(0), rtol=1e-6)
  # d alpha_o / d W_{...,o} = sign(W) / n, zero for other channels.
  grad = jax.grad(lambda k: quantizers.xnor_weight_scale(k)[0, 0, 0, 2])(
      jnp.asarray(kernel))
  expected = np.zeros_like(kernel)
  expected[..., 2] = np.sign(kernel[..., 2]) / 36
  np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_registry_unknown_name_lists_known_ones():
  with pytest.raises(ValueError, match='approx_sign.*ste_sign'):
    quantizers.get_quantizer('sign_ste')


def test_bonn_weight_sign_passes_the_gradient_inside_its_window():
  k = jnp.asarray([[0.3, -0.3], [0.9, -2.0]], jnp.float32)
  w = jnp.asarray([2.0, 0.4], jnp.float32)  # per output channel (last axis)
  np.testing.assert_array_equal(quantizers.bonn_weight_sign(k, w),
                                [[1, -1], [1, -1]])
  g_k, g_w = jax.grad(lambda k, w: jnp.sum(
      quantizers.bonn_weight_sign(k, w) * jnp.arange(1.0, 5.0).reshape(2, 2)),
      argnums=(0, 1))(k, w)
  # |w k| = [[0.6, 0.12], [1.8, 0.8]]: only k[1, 0] is outside.
  np.testing.assert_array_equal(g_k, [[1.0, 2.0], [0.0, 4.0]])
  np.testing.assert_array_equal(g_w, [0.0, 0.0])
