"""bonnkd's BatchNorm against flax's: values, running averages, gradients.

:class:`bonnkd.batch_norm.BatchNorm` replaces ``flax.linen.BatchNorm`` in
every model; its training path has a hand-written gradient. Both modules
get the same variables here and must give the same outputs, running
statistics and gradients (float32 to float tolerance, bfloat16 activations
too), and the gradient is checked numerically.
"""

import flax.linen as nn
import jax
from jax import test_util
import jax.numpy as jnp
import numpy as np
import pytest

from bonnkd import batch_norm

SHAPES = [(8, 5, 4, 3), (2, 3, 16), (4, 7)]


def apply(module, variables, x, train):
  out, updates = module.apply(variables, x, use_running_average=not train,
                              mutable=['batch_stats'])
  return out, updates.get('batch_stats', variables['batch_stats'])


def variables_of(shape, seed=0):
  rng = np.random.default_rng(seed)
  c = shape[-1]
  return {'params': {'scale': jnp.asarray(rng.normal(1, 0.5, c), jnp.float32),
                     'bias': jnp.asarray(rng.normal(0, 0.5, c), jnp.float32)},
          'batch_stats': {'mean': jnp.asarray(rng.normal(0, 1, c),
                                              jnp.float32),
                          'var': jnp.asarray(rng.uniform(0.5, 2, c),
                                             jnp.float32)}}


def test_same_variables_as_flax():
  x = jnp.zeros((2, 4, 4, 6))
  ours = batch_norm.BatchNorm(use_running_average=False).init(
      jax.random.key(0), x)
  theirs = nn.BatchNorm(use_running_average=False).init(jax.random.key(0), x)
  assert (jax.tree.map(lambda a: (a.shape, a.dtype), ours)
          == jax.tree.map(lambda a: (a.shape, a.dtype), theirs))
  np.testing.assert_array_equal(ours['batch_stats']['var'], np.ones(6))


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('train', [True, False])
def test_outputs_and_running_averages_equal_flax(shape, train):
  x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, shape),
                  jnp.float32)
  variables = variables_of(shape)
  kwargs = dict(momentum=0.9, epsilon=1e-5)
  y, stats = apply(batch_norm.BatchNorm(**kwargs), variables, x, train)
  y_ref, stats_ref = apply(nn.BatchNorm(**kwargs), variables, x, train)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for name in ('mean', 'var'):
    np.testing.assert_allclose(stats[name], stats_ref[name], rtol=1e-5,
                               atol=1e-6)


def test_use_running_average_from_the_constructor():
  shape = (4, 3, 5)
  x = jnp.asarray(np.random.default_rng(5).normal(size=shape), jnp.float32)
  variables = variables_of(shape)
  for train in (True, False):
    module = batch_norm.BatchNorm(use_running_average=not train)
    y, _ = module.apply(variables, x, mutable=['batch_stats'])
    y_ref, _ = apply(nn.BatchNorm(), variables, x, train)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


def test_statistics_by_hand():
  x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)  # channel 0: 0, 2, ..
  y, mean, var = batch_norm.batch_norm_train(
      jnp.asarray(x), jnp.ones(2), jnp.zeros(2), 0.0)
  np.testing.assert_allclose(mean, [5.0, 6.0])
  # 0, 2, 4, 6, 8, 10 about 5: squares 25, 9, 1, 1, 9, 25 -> 70 / 6.
  np.testing.assert_allclose(var, [70 / 6, 70 / 6], rtol=1e-6)
  np.testing.assert_allclose(y[0, 0], (np.array([0, 1]) - [5, 6])
                             / np.sqrt(70 / 6), rtol=1e-6)


@pytest.mark.parametrize('shape', SHAPES)
def test_gradients_equal_flax(shape):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(1.0, 2.0, shape), jnp.float32)
  weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
  variables = variables_of(shape)

  def loss(module):
    def f(params, x):
      y, stats = apply(module, {**variables, 'params': params}, x, True)
      # The running statistics depend on x too: a loss through them checks
      # their cotangents, which training never sends.
      return (jnp.sum(jnp.tanh(y) * weights) + jnp.sum(stats['mean'] ** 2)
              + jnp.sum(jnp.sqrt(stats['var'])))
    return jax.grad(f, argnums=(0, 1))(variables['params'], x)

  ours, theirs = loss(batch_norm.BatchNorm()), loss(nn.BatchNorm())
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=2e-4, atol=2e-5), ours, theirs)


def test_gradient_numerically():
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(6, 3, 4)), jnp.float64)
    scale = jnp.asarray(rng.normal(1, 0.3, 4), jnp.float64)
    bias = jnp.asarray(rng.normal(size=4), jnp.float64)
    test_util.check_grads(
        lambda x, s, b: batch_norm.batch_norm_train(x, s, b, 1e-3),
        (x, scale, bias), order=1, modes=['rev'], atol=1e-6, rtol=1e-6)


def test_bfloat16_activations_as_flax():
  shape = (16, 4, 4, 8)
  x = jnp.asarray(np.random.default_rng(4).normal(size=shape), jnp.bfloat16)
  variables = variables_of(shape)
  kwargs = dict(dtype=jnp.bfloat16)
  y, stats = apply(batch_norm.BatchNorm(**kwargs), variables, x, True)
  y_ref, stats_ref = apply(nn.BatchNorm(**kwargs), variables, x, True)
  assert y.dtype == y_ref.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(np.float32), y_ref.astype(np.float32),
                             rtol=1e-2, atol=1e-2)
  np.testing.assert_allclose(stats['var'], stats_ref['var'], rtol=1e-5)
  dx = jax.grad(lambda x: jnp.sum(apply(batch_norm.BatchNorm(**kwargs),
                                        variables, x, True)[0]
                                  .astype(jnp.float32) ** 2))(x)
  assert dx.dtype == jnp.bfloat16
