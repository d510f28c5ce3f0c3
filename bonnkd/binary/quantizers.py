"""Binarization primitives: sign, straight-through estimators and weight scales.

Pure functions in the spirit of larq's ``quantizers.py``. Each quantizer maps a
real tensor to {-1, +1} in the forward pass and defines, with
``jax.custom_vjp``, the surrogate gradient used in the backward pass.

Usage::

    from bonnkd.binary import quantizers

    q = quantizers.get_quantizer('ste_sign')
    w_b = q(w)                                   # values in {-1, +1}
    alpha = quantizers.xnor_weight_scale(w)      # (..., 1, C_out), mean |W|
    y = conv(q(x), w_b) * alpha                  # XNOR-Net approximation

Papers:
  * BNN: Hubara et al., "Binarized Neural Networks", arXiv:1602.02830.
  * XNOR-Net: Rastegari et al., arXiv:1603.05279.
  * Bi-Real Net: Liu et al., arXiv:1808.00278.
  * MCN: Wang et al., "Modulated Convolutional Networks", CVPR 2018.
  * BONN: Gu et al., "Bayesian Optimized 1-Bit CNNs", ICCV 2019.
"""

from collections.abc import Callable
import functools

import jax
import jax.numpy as jnp

__all__ = [
    'sign',
    'ste_sign',
    'approx_sign',
    'identity',
    'bonn_weight_sign',
    'xnor_weight_scale',
    'QUANTIZERS',
    'SIGN_QUANTIZERS',
    'get_quantizer',
]

Quantizer = Callable[[jax.Array], jax.Array]


def sign(x: jax.Array) -> jax.Array:
  """Sign that never returns 0: ``sign(x) = +1 if x >= 0 else -1``.

  ``jnp.sign(0) == 0`` would leave zero-valued inputs (ReLU outputs, zero
  padding, freshly initialised weights) out of the binary code, so 0 maps to
  +1 as in BNN and larq. The result has the dtype of ``x``.
  """
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def ste_sign(x: jax.Array, clip_value: float = 1.0) -> jax.Array:
  r"""Sign with the clipped straight-through estimator (BNN, arXiv:1602.02830).

  Forward:  :math:`q(x) = \mathrm{sign}(x)` with sign(0) = +1.

  Backward: :math:`\partial L/\partial x = g \cdot 1_{|x| \le c}`,
  the "hard tanh" STE of Hubara et al. (Eq. 4), with ``c = clip_value``.

  Args:
    x: real input.
    clip_value: a Python float; the gradient is zero where ``|x| > clip_value``.

  Returns:
    ``sign(x)`` in {-1, +1}, same shape and dtype as ``x``.
  """
  del clip_value
  return sign(x)


def _ste_sign_fwd(x, clip_value):
  del clip_value
  return sign(x), x


def _ste_sign_bwd(clip_value, x, g):
  return (g * (jnp.abs(x) <= clip_value).astype(g.dtype),)


ste_sign.defvjp(_ste_sign_fwd, _ste_sign_bwd)


@jax.custom_vjp
def approx_sign(x: jax.Array) -> jax.Array:
  r"""Sign with Bi-Real Net's piecewise-polynomial gradient (arXiv:1808.00278).

  Forward:  :math:`q(x) = \mathrm{sign}(x)` with sign(0) = +1.

  Backward: the derivative of the quadratic approximation ApproxSign (Eq. 6),

  .. math::
     \partial q/\partial x = \begin{cases} 2 - 2|x| & |x| \le 1 \\
                                          0 & \text{otherwise,}\end{cases}

  a triangle that is 2 at 0 and 0 at +-1: closer to the true (Dirac) derivative
  of sign than the box of the STE.
  """
  return sign(x)


def _approx_sign_fwd(x):
  return sign(x), x


def _approx_sign_bwd(x, g):
  abs_x = jnp.abs(x)
  return (g * jnp.where(abs_x <= 1, 2 - 2 * abs_x, 0).astype(g.dtype),)


approx_sign.defvjp(_approx_sign_fwd, _approx_sign_bwd)


@jax.custom_vjp
def bonn_weight_sign(kernel: jax.Array, modulation: jax.Array) -> jax.Array:
  r"""Sign of a latent kernel with BONN's clipped gradient (Gu et al., Eq. 3.113).

  Forward: :math:`\hat k = \mathrm{sign}(k)` with sign(0) = +1.

  Backward: :math:`\partial L/\partial k = g \cdot 1_{|w_i k| \le 1}`, the
  straight-through estimator clipped where the modulated weight
  :math:`w_i k` of output channel ``i`` leaves [-1, 1]; ``modulation``
  (``w``, shape (C_out,)) only sets the window and gets no gradient here.

  With kaiming-initialised kernels (|k| ~ 0.1) and w near mean |k| the
  window is open almost everywhere: the clip matters only for weights that
  have grown large.
  """
  del modulation
  return sign(kernel)


def _bonn_weight_sign_fwd(kernel, modulation):
  return sign(kernel), (kernel, modulation)


def _bonn_weight_sign_bwd(residuals, g):
  kernel, modulation = residuals
  inside = jnp.abs(modulation * kernel) <= 1
  return g * inside.astype(g.dtype), jnp.zeros_like(modulation)


bonn_weight_sign.defvjp(_bonn_weight_sign_fwd, _bonn_weight_sign_bwd)


def identity(x: jax.Array) -> jax.Array:
  """No quantization: full-precision pass-through (for ablations)."""
  return x


def xnor_weight_scale(kernel: jax.Array) -> jax.Array:
  r"""Per-output-channel XNOR-Net scale :math:`\alpha = \frac{1}{n}\|W\|_1`.

  XNOR-Net (arXiv:1603.05279, Eq. 6) approximates a real filter by
  :math:`W \approx \alpha\, \mathrm{sign}(W)`; the optimal :math:`\alpha` is
  the mean absolute value of the filter. The last axis of ``kernel`` indexes
  output channels (flax's ``HWIO`` layout); the mean runs over all others.

  Args:
    kernel: array of shape ``(..., C_out)``.

  Returns:
    alpha with shape ``(1, ..., 1, C_out)``, broadcastable against ``kernel``.
    It is differentiable: gradients flow to ``kernel`` through it.
  """
  reduce_axes = tuple(range(kernel.ndim - 1))
  return jnp.mean(jnp.abs(kernel), axis=reduce_axes, keepdims=True)


QUANTIZERS: dict[str, Quantizer] = {
    'ste_sign': ste_sign,
    'approx_sign': approx_sign,
    'identity': identity,
}


# The quantizers whose forward pass is :func:`sign`: their layers are 1-bit
# (bonnkd.export packs them); they differ only in the gradient.
SIGN_QUANTIZERS = ('ste_sign', 'approx_sign')


def get_quantizer(name: str) -> Quantizer:
  """Returns the quantizer registered under ``name``.

  Raises:
    ValueError: if ``name`` is unknown; the message lists the known names.
  """
  try:
    return QUANTIZERS[name]
  except KeyError:
    raise ValueError(
        f'Unknown quantizer {name!r}; known quantizers: {sorted(QUANTIZERS)}.'
    ) from None
