"""BatchNorm in training mode with a hand-written gradient: fewer passes.

Batch normalisation (Ioffe & Szegedy, ICML 2015, Algorithm 1), over every
axis but the channels (NHWC: N, H and W; m values per channel):

  mean = sum(x) / m,   var = sum(x^2) / m - mean^2,   r = 1 / sqrt(var + eps)
  y = (x - mean) * r * scale + bias

and its gradient (the paper's backward equations, collected per channel):

  dbias  = sum(dy),   dscale = sum(dy * xhat) = r * (sum(dy * x) - mean * dbias)
  dx = a * dy + b * x + c,  a = r * scale,  b = -a * r * dscale / m,
                            c = -a * dbias / m - b * mean

(plus the terms of the batch mean and variance themselves, returned for the
running averages: ``dmean / m`` and ``dvar * 2 (x - mean) / m``, folded into
b and c). Differentiating flax's BatchNorm instead leaves XLA:CPU a chain
of reductions and elementwise passes over the activations; here the forward
is one pass for both sums and one to normalise, the backward one for both
sums and one for dx. On two cores of an Intel Xeon (family 6, model 167)
the forward and backward of one BatchNorm ran 1.14-1.94x faster than
flax's at the shapes of WRN-16-1, WRN-10-2 and WRN-16-4
(``benchmarks/batch_norm_bench.py``, ``results/README.md``).

:class:`BatchNorm` is ``flax.linen.BatchNorm`` with this training path: the
same variables (params ``scale``, ``bias``; batch_stats ``mean``, ``var``),
the same running averages, the same eval mode, so checkpoints are
interchangeable. The statistics are float32 whatever the activations'
dtype (flax's ``force_float32_reductions``). ``axis_name`` and ``mask``
fall back to flax's own code.
"""

import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

__all__ = ['batch_norm_train', 'BatchNorm']


def _stats(x32, axes):
  m = x32.size // x32.shape[-1]
  mean = jnp.sum(x32, axes) / m
  var = jnp.maximum(0.0, jnp.sum(x32 * x32, axes) / m - mean * mean)
  return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x, scale, bias, epsilon: float, dtype=None):
  """(y, mean, var): BatchNorm of x (..., C) with its batch statistics.

  Computed in float32 (float64 for float64 x).

  Args:
    x: activations, channels last.
    scale, bias: (C,).
    epsilon: added to the variance.
    dtype: of y (default: x's).
  """
  return _forward(x, scale, bias, epsilon, dtype)[0]


def _at_least_float32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _forward(x, scale, bias, epsilon, dtype):
  axes = tuple(range(x.ndim - 1))
  x32 = _at_least_float32(x)
  mean, var = _stats(x32, axes)
  r = lax.rsqrt(var + epsilon)
  y = ((x32 - mean) * (r * scale) + bias).astype(dtype or x.dtype)
  return (y, mean, var), (x, mean, r, scale)


def _backward(epsilon, dtype, residuals, cotangents):
  del epsilon, dtype
  x, mean, r, scale = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  m = x.size // x.shape[-1]
  x32, dy32 = _at_least_float32(x), _at_least_float32(dy)
  dbias = jnp.sum(dy32, axes)
  dscale = r * (jnp.sum(dy32 * x32, axes) - mean * dbias)
  a = r * scale
  b = -a * r * dscale / m + 2.0 * dvar / m
  c = -a * dbias / m - b * mean + dmean / m
  dx = (a * dy32 + b * x32 + c).astype(x.dtype)
  return dx, dscale, dbias


batch_norm_train.defvjp(_forward, _backward)


class BatchNorm(nn.BatchNorm):
  """``flax.linen.BatchNorm`` whose training path is :func:`batch_norm_train`.

  Channels last (``axis=-1``), with scale and bias, as every BatchNorm of
  bonnkd's models; anything else is flax's own code.
  """

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *,
               mask=None):
    at_call = use_running_average
    use_running_average = nn.merge_param(
        'use_running_average', self.use_running_average, use_running_average)
    if (use_running_average or mask is not None or self.axis_name is not None
        or self.axis not in (-1, x.ndim - 1) or not self.use_scale
        or not self.use_bias or not self.force_float32_reductions
        or not self.use_fast_variance):
      return super().__call__(x, at_call, mask=mask)
    channels = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean',
                            lambda s: jnp.zeros(s, jnp.float32), (channels,))
    ra_var = self.variable('batch_stats', 'var',
                           lambda s: jnp.ones(s, jnp.float32), (channels,))
    scale = self.param('scale', self.scale_init, (channels,),
                       self.param_dtype)
    bias = self.param('bias', self.bias_init, (channels,), self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    y, mean, var = batch_norm_train(x, scale.astype(jnp.float32),
                                    bias.astype(jnp.float32), self.epsilon,
                                    dtype)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y
