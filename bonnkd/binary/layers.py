"""Convolution layers: a binarizable conv and a backend-aware conv kernel.

``QuantConv`` is the one convolution every bonnkd model uses. Depending on its
fields it is a plain full-precision conv, or a 1-bit conv in the style of
XNOR-Net / MCN / BONN::

    y = conv(q(x), q(W)) * s

where ``q`` is a sign quantizer with a surrogate gradient
(:mod:`bonnkd.binary.quantizers`) and ``s`` a per-output-channel scale:

* ``'none'``:       s = 1;
* ``'xnor'``:       s = mean |W| per output channel, recomputed from the latent
                    weights at every step (XNOR-Net, arXiv:1603.05279);
* ``'modulation'``: s is a learned parameter ``modulation`` of shape
                    (C_out,), initialised to XNOR's mean |W| and then trained
                    by back-propagation, the modulation vector of MCN
                    (CVPR 2018), one signed gain per output channel;
* ``'layer_modulation'``: BONN's 1-bit conv as its authors define it
                    (Gu et al., ICCV 2019; the book's Eqs. 3.111 and 3.113,
                    Algorithm 5): the learned vector ``w`` is shared by the
                    layer, and in the forward pass "all elements of w are
                    replaced by their average", s = mean_i |w_i| (one
                    scalar; the absolute value as in the same group's RBONN
                    code); the latent kernel's sign passes its gradient
                    where |w_i k| <= 1 (:func:`quantizers.bonn_weight_sign`).
                    The layer also holds BONN's learned prior of Eqs.
                    3.118-3.119, one mean magnitude ``prior_mean`` and one
                    log-variance ``prior_log_var`` per output channel,
                    initialised from the kernel: only the kernel loss reads
                    them (:mod:`bonnkd.binary.bayesian_losses`).

The learned vector starts as ``modulation_init`` says
(:data:`MODULATION_INITS`):

* ``'xnor'``:   XNOR's mean |W| of the initial kernel per output channel
                (the default; every run made before the field had it);
* ``'normal'``: a standard normal draw per output channel, BONN's random
                initialisation of w (the book's Algorithm 5, line 1:
                "Initialize k and w randomly"; the distribution is not
                given there, and the same group's RBONN code draws
                ``torch.randn(C_out, 1, 1, 1)``). With
                ``'layer_modulation'`` the layer's scale then starts at
                mean |N(0, 1)| = 0.80, twelve times XNOR's 0.066 for a
                Kaiming-normal kernel of 9 x 32 inputs: the 1-bit conv's
                share of a residual sum starts larger.

Why flax.linen: bonnkd follows flax ``examples/`` and big_vision, whose
``{'params', 'batch_stats'}`` trees orbax saves and restores as plain pytrees.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from bonnkd.binary import quantizers
from bonnkd.cpu import onednn

__all__ = ['conv2d', 'QuantConv', 'WEIGHT_SCALES', 'MODULATED_SCALES',
           'output_scale', 'prior_init', 'MODULATION_INITS',
           'modulation_init', 'CONV_IMPLS',
           'CPU_LOWERINGS', 'lowering', 'conv_shape_key', 'use_cpu_conv_plan']

WEIGHT_SCALES = ('none', 'xnor', 'modulation', 'layer_modulation')
# The scales with a learned modulation vector (BONN's kernel loss reads it).
MODULATED_SCALES = ('modulation', 'layer_modulation')
# How the modulation vector starts (see the module docstring).
MODULATION_INITS = ('xnor', 'normal')
CONV_IMPLS = ('auto', 'native', 'im2col', 'onednn')
# What 'auto' chooses among on CPU (bonnkd.cpu.conv_autotune), per shape.
CPU_LOWERINGS = ('native', 'im2col', 'onednn')

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def _im2col_conv(x, kernel, strides, padding, accumulate_dtype=None):
  """Convolution as one matmul over the k*k shifted views of the input.

  Gathering the k*k shifted windows into the contraction axis and calling
  one GEMM ran 2-4x faster than XLA:CPU's native convolution on 32x32 maps
  with 32-64 channels on one 2-core AMD EPYC, and slower on other CPUs
  (``benchmarks/conv_bench.py``, ``results/README.md``): 'auto' measures
  it (:mod:`bonnkd.cpu.conv_autotune`). Numerically it is the same convolution:
  same padding as ``lax.conv_general_dilated``.
  """
  kh, kw, cin, cout = kernel.shape
  sh, sw = strides
  if isinstance(padding, str):  # 'SAME' / 'VALID', resolved as XLA does.
    padding = lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
  (pad_top, pad_bottom), (pad_left, pad_right) = padding
  xp = jnp.pad(x, ((0, 0), (pad_top, pad_bottom), (pad_left, pad_right),
                   (0, 0)))
  out_h = (xp.shape[1] - kh) // sh + 1
  out_w = (xp.shape[2] - kw) // sw + 1
  windows = [
      xp[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw]
      for i in range(kh)
      for j in range(kw)
  ]
  cols = jnp.concatenate(windows, axis=-1) if len(windows) > 1 else windows[0]
  return jnp.matmul(cols, kernel.reshape(kh * kw * cin, cout),
                    preferred_element_type=accumulate_dtype)


# conv shape key -> one of CPU_LOWERINGS, measured on this CPU by
# bonnkd.cpu.conv_autotune.tune (process-wide: it describes the machine).
_CPU_CONV_PLAN: dict[str, str] = {}


def conv_shape_key(x_shape, kernel_shape, strides) -> str:
  """A conv's shape without its batch size: 'HxWxCin>kh x kw x Cout/s'."""
  height, width, cin = x_shape[-3:]
  kh, kw, _, cout = kernel_shape
  return f'{height}x{width}x{cin}>{kh}x{kw}x{cout}/{strides[0]}x{strides[1]}'


def use_cpu_conv_plan(plan: dict[str, str]) -> None:
  """Installs the lowering ``conv_impl='auto'`` uses per shape on CPU."""
  _CPU_CONV_PLAN.update(plan)


def lowering(x_shape, kernel_shape, strides, impl: str,
             dtype=jnp.float32) -> str:
  """'native', 'im2col' or 'onednn': how a conv of ``impl`` is computed.

  On GPU and TPU 'auto' is the native convolution (cuDNN, the TPU
  convolution unit). On CPU it is what :func:`bonnkd.cpu.conv_autotune.tune`
  measured fastest for this shape on this CPU, and the native convolution
  for a shape it has not measured: which one wins differs between CPUs
  (``results/README.md``). 'onednn' (:mod:`bonnkd.cpu.onednn`) computes
  float32 only, on CPU, where its library is built; elsewhere the native
  convolution stands in (logged once).
  """
  if impl == 'auto':
    if jax.default_backend() != 'cpu':
      return 'native'
    impl = _CPU_CONV_PLAN.get(conv_shape_key(x_shape, kernel_shape, strides),
                              'native')
  if impl == 'onednn' and not (dtype == jnp.float32 and onednn.available()):
    onednn.why_unavailable()
    return 'native'
  return impl


def conv2d(x, kernel, strides=(1, 1), padding='SAME', impl: str = 'auto',
           accumulate_dtype=None):
  """2-D convolution, NHWC x HWIO -> NHWC, with a choice of lowering.

  Args:
    x: input of shape (N, H, W, C_in).
    kernel: (kh, kw, C_in, C_out).
    strides: (sh, sw).
    padding: 'SAME', 'VALID' or explicit ((lo, hi), (lo, hi)).
    impl: 'native' (``lax.conv_general_dilated``), 'im2col' (one GEMM over
      shifted windows), 'onednn' (oneDNN's convolution, a custom call,
      float32 on CPU) or 'auto' (the one measured fastest for this shape on
      this machine, :mod:`bonnkd.cpu.conv_autotune`; native where unmeasured).
    accumulate_dtype: dtype of the sums and the result (e.g. float32 for
      bfloat16 inputs); None: the inputs' dtype.

  Returns:
    (N, H', W', C_out).
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f'conv impl must be one of {CONV_IMPLS}, got {impl!r}.')
  strides = tuple(strides)
  dtype = (x.dtype if accumulate_dtype in (None, x.dtype) and
           kernel.dtype == x.dtype else None)
  how = lowering(x.shape, kernel.shape, strides, impl, dtype)
  if how == 'im2col':
    return _im2col_conv(x, kernel, strides, padding, accumulate_dtype)
  if how == 'onednn':
    return onednn.conv2d(x, kernel, strides, padding)
  return lax.conv_general_dilated(
      x, kernel, strides, padding, dimension_numbers=_DIMENSION_NUMBERS,
      preferred_element_type=accumulate_dtype,
  )


def output_scale(weight_scale: str, kernel, modulation=None):
  """The factor s of ``conv(q(x), q(W)) * s``: (C_out,), or None for 1.

  One home for what every weight scale multiplies by, read by
  :class:`QuantConv` in training and by :mod:`bonnkd.export`.
  """
  if weight_scale == 'none':
    return None
  if weight_scale == 'xnor':
    return quantizers.xnor_weight_scale(kernel).reshape(-1)
  if weight_scale == 'modulation':
    return modulation
  if weight_scale == 'layer_modulation':  # BONN, Eq. 3.111.
    return jnp.broadcast_to(jnp.mean(jnp.abs(modulation)), modulation.shape)
  raise ValueError(
      f'weight_scale must be one of {WEIGHT_SCALES}, got {weight_scale!r}.')


def modulation_init(name: str, key, kernel):
  """The learned modulation vector at the start, (C_out,) float32.

  Args:
    name: one of :data:`MODULATION_INITS`: ``'xnor'``, mean |k| over each
      output channel's entries; ``'normal'``, N(0, 1) per output channel
      (BONN's random w).
    key: the PRNG key of the parameter (read by ``'normal'`` only).
    kernel: the initial latent kernel, (kh, kw, C_in, C_out).
  """
  if name == 'xnor':
    return quantizers.xnor_weight_scale(kernel).reshape(-1)
  if name == 'normal':
    return jax.random.normal(key, (kernel.shape[-1],), jnp.float32)
  raise ValueError(
      f'modulation_init must be one of {MODULATION_INITS}, got {name!r}.')


def prior_init(kernel):
  """BONN's prior of one layer at the start (Eqs. 3.118-3.119).

  Returns:
    (prior_mean, prior_log_var), each (C_out,): the mean of |k| over an
    output channel's entries, and the log of their variance around it.
  """
  magnitude = jnp.abs(kernel).reshape(-1, kernel.shape[-1])
  mean = jnp.mean(magnitude, 0)
  return mean, jnp.log(jnp.var(magnitude, 0) + 1e-8)


class QuantConv(nn.Module):
  """A convolution whose weights and/or inputs can be binarized.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    binarize_weights: use ``q(W)`` instead of ``W``.
    binarize_inputs: use ``q(x)`` instead of ``x``.
    quantizer: name in :data:`bonnkd.binary.quantizers.QUANTIZERS` used for both.
    weight_scale: one of :data:`WEIGHT_SCALES` (see the module docstring);
      only used when ``binarize_weights``.
    modulation_init: one of :data:`MODULATION_INITS`, how a learned
      modulation vector starts (see the module docstring).
    conv_impl: see :func:`conv2d`.
    kernel_init: initializer of the latent real-valued kernel.
    dtype: dtype of the computation (inputs, kernel and output); the
      parameters stay float32. In bfloat16 a 1-bit conv stays exact: the
      sign of a bfloat16 value is the sign of the value, and the sums of
      +-1 products (integers up to 9 * C_in) are accumulated in float32,
      where they are exact, before the scale and the cast back.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  binarize_weights: bool = False
  binarize_inputs: bool = False
  quantizer: str = 'ste_sign'
  weight_scale: str = 'modulation'
  modulation_init: str = 'xnor'
  conv_impl: str = 'auto'
  kernel_init: nn.initializers.Initializer = nn.initializers.kaiming_normal()
  dtype: Any = jnp.float32

  @property
  def is_binary(self) -> bool:
    return self.binarize_weights or self.binarize_inputs

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.weight_scale not in WEIGHT_SCALES:
      raise ValueError(
          f'weight_scale must be one of {WEIGHT_SCALES}, '
          f'got {self.weight_scale!r}.'
      )
    quantize = quantizers.get_quantizer(self.quantizer)
    kernel = self.param(
        'kernel',
        self.kernel_init,
        (*self.kernel_size, x.shape[-1], self.features),
        jnp.float32,
    )
    scale = None
    if self.binarize_weights:
      modulation = None
      if self.weight_scale in MODULATED_SCALES:
        modulation = self.param(
            'modulation',
            lambda key, k: modulation_init(self.modulation_init, key, k),
            kernel,
        )
      scale = output_scale(self.weight_scale, kernel, modulation)
      if self.weight_scale == 'layer_modulation':
        self.param('prior_mean', lambda _, k: prior_init(k)[0], kernel)
        self.param('prior_log_var', lambda _, k: prior_init(k)[1], kernel)
        kernel = quantizers.bonn_weight_sign(kernel, modulation)
      else:
        kernel = quantize(kernel)
    x = x.astype(self.dtype)
    if self.binarize_inputs:
      x = quantize(x)
    # Binary sums are integers: exact in float32, not in bfloat16 (> 256).
    accumulate = jnp.float32 if self.is_binary else None
    y = conv2d(x, kernel.astype(self.dtype), self.strides, 'SAME',
               self.conv_impl, accumulate)
    if scale is not None:
      y = y * scale.astype(y.dtype)
    return y.astype(self.dtype)
