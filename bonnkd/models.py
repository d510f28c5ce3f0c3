"""CIFAR networks: Wide-ResNet with binarizable convolutions, ResNet-18, student.

* :class:`WideResNet` -- WRN-d-k of Zagoruyko & Komodakis (arXiv:1605.07146):
  a 3x3 stem with 16 channels (no max-pool), three groups of
  n = (d - 4) / 6 pre-activation basic blocks with 16k, 32k, 64k channels at
  32x32, 16x16 and 8x8, then BN-ReLU, global average pooling and a linear
  classifier. Which convolutions are 1-bit is chosen by ``binarize``:

  - ``'none'``:       full precision;
  - ``'first_conv'``: only the stem convolution;
  - ``'inner'``:      every 3x3 conv of the residual blocks; the stem, the 1x1
                      shortcuts and the classifier stay real-valued, as in
                      BONN (Gu et al., ICCV 2019) and Bi-Real Net;
  - ``'all'``:        every convolution, shortcuts and stem included (the
                      classifier stays real-valued).

  and what is binarized by ``binarize_what`` ('weights', 'activations' or
  'both'). A conv whose inputs are binarized gets ``BN -> sign -> conv``
  instead of ``BN -> ReLU -> conv``: the sign is its nonlinearity, and the sign
  of a ReLU output would be all +1.

* ``shortcuts`` (both models) -- where the real-valued residual paths are:

  - ``'block'``:      one shortcut around each block's two convs (He et al.,
                      Zagoruyko & Komodakis; BONN's WRN);
  - ``'every_conv'``: one around each 3x3 conv (Bi-Real Net, Liu et al.,
                      ECCV 2018, Fig. 1; the CIFAR ResNets of IR-Net, ReCU
                      and BiPer): a 1-bit conv's output is +-1 sums, and the
                      second shortcut carries the block's real-valued
                      activations past each one instead of only past the
                      pair. Same parameters, same MACs, one more addition
                      per block; the first shortcut (identity, or the 1x1
                      conv where width or stride change) wraps conv1.

* :class:`ResNet` -- the CIFAR ResNet of He et al. (3x3 stem, no max-pool,
  post-activation basic blocks); :data:`ResNet18` has 11,173,962 parameters.
  With narrower stages it is also the phase-2 student. The same
  ``binarize`` fields make it 1-bit; ``binarize='inner'`` with
  ``binarize_what='both'`` is the W1A1 ResNet-18 of ReCU and BiPer.
"""

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bonnkd import batch_norm
from bonnkd import errors
from bonnkd.binary import layers
from bonnkd.binary import quantizers
from bonnkd.config import validation

__all__ = [
    'BINARIZE_MODES',
    'BINARIZE_WHAT',
    'SHORTCUTS',
    'WideResNet',
    'ResNet',
    'WRN16_4',
    'WRN16_8',
    'WRN22_4',
    'ResNet18',
    'create_model',
    'validate_config',
    'DTYPES',
    'quant_convs',
    'latent_kernel_paths',
]

BINARIZE_MODES = ('none', 'first_conv', 'inner', 'all')
BINARIZE_WHAT = ('weights', 'activations', 'both')
SHORTCUTS = ('block', 'every_conv')

# Every BatchNorm of the models (bonnkd.export folds them with the same eps):
# flax's, with a hand-written gradient in training (bonnkd.batch_norm).
BATCH_NORM_EPSILON = 1e-5
_BatchNorm = functools.partial(batch_norm.BatchNorm, momentum=0.9,
                               epsilon=BATCH_NORM_EPSILON)


class _ConvFactory:
  """Builds the QuantConv of each conv role ('stem', 'inner', 'shortcut')."""

  def __init__(self, binarize, binarize_what, quantizer, weight_scale,
               modulation_init, conv_impl, dtype):
    self.binarize = binarize
    self.weights = binarize_what in ('weights', 'both')
    self.inputs = binarize_what in ('activations', 'both')
    self.quantizer = quantizer
    self.weight_scale = weight_scale
    self.modulation_init = modulation_init
    self.conv_impl = conv_impl
    self.dtype = dtype

  def is_binary(self, role: str) -> bool:
    return {
        'none': False,
        'first_conv': role == 'stem',
        'inner': role == 'inner',
        'all': True,
    }[self.binarize]

  def binarizes_inputs(self, role: str) -> bool:
    return self.is_binary(role) and self.inputs

  def __call__(self, role, features, kernel_size=(3, 3), strides=(1, 1),
               name=None):
    binary = self.is_binary(role)
    return layers.QuantConv(
        features=features,
        kernel_size=kernel_size,
        strides=strides,
        binarize_weights=binary and self.weights,
        binarize_inputs=binary and self.inputs,
        quantizer=self.quantizer,
        weight_scale=self.weight_scale,
        modulation_init=self.modulation_init,
        conv_impl=self.conv_impl,
        dtype=self.dtype,
        name=name,
    )


class WideBasicBlock(nn.Module):
  """Pre-activation block: (BN-act-conv3x3) x 2 plus a shortcut.

  ``shortcuts='block'``: ``x + conv2(act(bn2(conv1(act(bn1(x))))))``;
  ``'every_conv'`` (Bi-Real): ``h = x + conv1(act(bn1(x)))``, then
  ``h + conv2(act(bn2(h)))``. Where width or stride change, ``x`` is the
  1x1 shortcut conv of ``act(bn1(x))`` in both.
  """

  features: int
  strides: int
  conv: Any  # _ConvFactory
  dropout_rate: float = 0.0
  shortcuts: str = 'block'

  @nn.compact
  def __call__(self, x, train: bool):
    norm = functools.partial(_BatchNorm, use_running_average=not train,
                             dtype=self.conv.dtype)
    # A conv with binarized inputs reads BN -> sign (the sign is its
    # nonlinearity); the sign of a ReLU output would be all +1.
    def act(y, role):
      return y if self.conv.binarizes_inputs(role) else nn.relu(y)

    preact = norm(name='bn1')(x)
    y = self.conv('inner', self.features, strides=(self.strides,) * 2,
                  name='conv1')(act(preact, 'inner'))
    if x.shape[-1] != self.features or self.strides != 1:
      # Zagoruyko's shortcut: a 1x1 conv of the pre-activated input.
      x = self.conv('shortcut', self.features, (1, 1), (self.strides,) * 2,
                    name='shortcut')(act(preact, 'shortcut'))
    if self.shortcuts == 'every_conv':
      x = y = x + y
    y = act(norm(name='bn2')(y), 'inner')
    if self.dropout_rate:
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = self.conv('inner', self.features, name='conv2')(y)
    return x + y


class WideResNet(nn.Module):
  """WRN-depth-width for 32x32 inputs (see the module docstring).

  Attributes:
    depth: total depth d; d - 4 must be divisible by 6.
    width: widening factor k.
    num_classes: size of the classifier.
    binarize: one of :data:`BINARIZE_MODES`.
    binarize_what: one of :data:`BINARIZE_WHAT`.
    quantizer: name in :data:`bonnkd.binary.quantizers.QUANTIZERS`.
    weight_scale: one of :data:`bonnkd.binary.layers.WEIGHT_SCALES`.
    modulation_init: one of :data:`bonnkd.binary.layers.MODULATION_INITS`,
      how a learned modulation vector starts.
    shortcuts: one of :data:`SHORTCUTS` (see the module docstring).
    dropout_rate: dropout between the two convs of a block.
    conv_impl: see :func:`bonnkd.binary.layers.conv2d`.
    dtype: dtype of activations and convolutions ('float32' or 'bfloat16');
      parameters, BatchNorm statistics and the logits stay float32.
  """

  depth: int = 16
  width: int = 4
  num_classes: int = 10
  binarize: str = 'none'
  binarize_what: str = 'both'
  quantizer: str = 'ste_sign'
  weight_scale: str = 'modulation'
  modulation_init: str = 'xnor'
  shortcuts: str = 'block'
  dropout_rate: float = 0.0
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  def __post_init__(self):
    _validate_wide_resnet(self.depth, self.width, self.dropout_rate)
    _validate_binarization(self.binarize, self.binarize_what, self.quantizer,
                           self.weight_scale, self.modulation_init,
                           self.conv_impl)
    _validate_shortcuts(self.shortcuts)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    blocks_per_group = (self.depth - 4) // 6
    conv = _ConvFactory(self.binarize, self.binarize_what, self.quantizer,
                        self.weight_scale, self.modulation_init,
                        self.conv_impl, self.dtype)
    x = conv('stem', 16, name='stem')(x)
    for group, base in enumerate((16, 32, 64)):
      for block in range(blocks_per_group):
        x = WideBasicBlock(
            features=base * self.width,
            strides=2 if group > 0 and block == 0 else 1,
            conv=conv,
            dropout_rate=self.dropout_rate,
            shortcuts=self.shortcuts,
            name=f'group{group}_block{block}',
        )(x, train)
    x = nn.relu(_BatchNorm(use_running_average=not train, dtype=self.dtype,
                           name='bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    # The features before the classifier, for BONN's feature loss (kept only
    # when 'intermediates' is mutable).
    self.sow('intermediates', 'features', x.astype(jnp.float32))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return logits.astype(jnp.float32)


class ResNetBlock(nn.Module):
  """Post-activation basic block of He et al.: conv-BN-act-conv-BN + skip, act.

  ``act`` is ReLU; when the block's convs take 1-bit inputs it is hardtanh,
  as in the W1A1 ResNet-18 of IR-Net / ReCU / BiPer: the next conv signs
  it, and the sign of a ReLU output would be all +1, while hardtanh keeps
  the sign of the pre-activation and bounds the residual stream to [-1, 1].
  ``shortcuts='every_conv'`` is those papers' CIFAR block (Bi-Real's):
  ``h = act(s + bn1(conv1(x)))``, then ``act(h + bn2(conv2(h)))``, with
  ``s`` the block's shortcut of ``x`` (``x`` itself, or the 1x1 conv and
  BN where width or stride change).
  """

  features: int
  strides: int
  conv: Any  # _ConvFactory
  shortcuts: str = 'block'

  @nn.compact
  def __call__(self, x, train: bool):
    norm = functools.partial(_BatchNorm, use_running_average=not train,
                             dtype=self.conv.dtype)
    act = _block_activation(self.conv)
    y = norm(name='bn1')(self.conv('inner', self.features,
                                   strides=(self.strides,) * 2,
                                   name='conv1')(x))
    if x.shape[-1] != self.features or self.strides != 1:
      x = self.conv('shortcut', self.features, (1, 1), (self.strides,) * 2,
                    name='shortcut')(x)
      x = norm(name='shortcut_bn')(x)
    if self.shortcuts == 'every_conv':
      x = y = act(x + y)
    else:
      y = act(y)
    y = self.conv('inner', self.features, name='conv2')(y)
    # Zero-init of the last BN scale: each block starts as the identity
    # ('block'), or as its first half ('every_conv').
    y = norm(name='bn2', scale_init=nn.initializers.zeros)(y)
    return act(x + y)


def _block_activation(conv: _ConvFactory):
  """ReLU, or hardtanh where the residual blocks take 1-bit inputs."""
  return nn.hard_tanh if conv.binarizes_inputs('inner') else nn.relu


class ResNet(nn.Module):
  """CIFAR ResNet: 3x3 stem, no max-pool, four stages of basic blocks.

  Full precision by default (the phase-2 teacher and student). With
  ``binarize='inner'`` and ``binarize_what='both'`` it is the W1A1
  ResNet-18 of IR-Net, ReCU (Xu et al., ICCV 2021) and BiPer (CVPR 2024):
  every 3x3 conv of the blocks has 1-bit weights and inputs; the stem, the
  1x1 shortcuts and the classifier stay real-valued (BONN's convention;
  ReCU's code also binarizes the three 1x1 shortcuts, 1.5% of ResNet-18's
  conv weights), hardtanh replaces ReLU (:class:`ResNetBlock`) and a
  BatchNorm precedes the classifier, as in ReCU's CIFAR ResNet-18.

  Attributes:
    stage_sizes: blocks per stage; (2, 2, 2, 2) is ResNet-18.
    widths: channels per stage; (64, 128, 256, 512) is ResNet-18.
    num_classes: size of the classifier.
    binarize, binarize_what, quantizer, weight_scale, modulation_init,
      shortcuts: as :class:`WideResNet`'s.
    conv_impl: see :func:`bonnkd.binary.layers.conv2d`.
    dtype: as :class:`WideResNet`'s.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  num_classes: int = 10
  binarize: str = 'none'
  binarize_what: str = 'both'
  quantizer: str = 'ste_sign'
  weight_scale: str = 'modulation'
  modulation_init: str = 'xnor'
  shortcuts: str = 'block'
  conv_impl: str = 'auto'
  dtype: Any = jnp.float32

  def __post_init__(self):
    _validate_resnet(self.stage_sizes, self.widths)
    _validate_binarization(self.binarize, self.binarize_what, self.quantizer,
                           self.weight_scale, self.modulation_init,
                           self.conv_impl)
    _validate_shortcuts(self.shortcuts)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = _ConvFactory(self.binarize, self.binarize_what, self.quantizer,
                        self.weight_scale, self.modulation_init,
                        self.conv_impl, self.dtype)
    norm = functools.partial(_BatchNorm, use_running_average=not train,
                             dtype=self.dtype)
    act = _block_activation(conv)
    x = conv('stem', self.widths[0], name='stem')(x)
    x = act(norm(name='stem_bn')(x))
    for stage, (blocks, features) in enumerate(
        zip(self.stage_sizes, self.widths)):
      for block in range(blocks):
        x = ResNetBlock(
            features=features,
            strides=2 if stage > 0 and block == 0 else 1,
            conv=conv,
            shortcuts=self.shortcuts,
            name=f'stage{stage}_block{block}',
        )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    # The features before the classifier, for BONN's feature loss (kept only
    # when 'intermediates' is mutable).
    self.sow('intermediates', 'features', x.astype(jnp.float32))
    if conv.is_binary('inner'):
      # ReCU's BatchNorm before the classifier: the pooled features of a
      # 1-bit body are sums of +-1 products, far from unit scale.
      x = norm(name='head_bn')(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return logits.astype(jnp.float32)


WRN16_4 = functools.partial(WideResNet, depth=16, width=4)
WRN16_8 = functools.partial(WideResNet, depth=16, width=8)
WRN22_4 = functools.partial(WideResNet, depth=22, width=4)
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2),
                             widths=(64, 128, 256, 512))

_MODELS = {'wide_resnet': WideResNet, 'resnet': ResNet}


def _validate_wide_resnet(depth, width, dropout_rate) -> None:
  validation.check(
      isinstance(depth, int) and depth >= 10 and (depth - 4) % 6 == 0,
      'model.depth', depth,
        'an integer 6n + 4 with n >= 1 (10, 16, 22, 28, ...)')
  validation.check(isinstance(width, int) and width >= 1, 'model.width', width,
        'a positive integer')
  validation.check(0.0 <= dropout_rate < 1.0, 'model.dropout_rate',
                   dropout_rate, 'a float in [0, 1)')


def _validate_resnet(stage_sizes, widths) -> None:
  validation.check(
      len(stage_sizes) == len(widths) and len(widths) > 0
      and min(stage_sizes) > 0 and min(widths) > 0,
      'model.widths', (tuple(stage_sizes), tuple(widths)),
      'positive stage_sizes and widths of the same length')


def _validate_binarization(binarize, binarize_what, quantizer, weight_scale,
                           modulation_init, conv_impl) -> None:
  """The fields every model shares: which convs are 1-bit, and how."""
  validation.check(binarize in BINARIZE_MODES, 'model.binarize', binarize,
        f'one of {BINARIZE_MODES}')
  validation.check(binarize_what in BINARIZE_WHAT, 'model.binarize_what',
                   binarize_what, f'one of {BINARIZE_WHAT}')
  validation.check(quantizer in quantizers.QUANTIZERS, 'model.quantizer',
                   quantizer, f'one of {sorted(quantizers.QUANTIZERS)}')
  validation.check(weight_scale in layers.WEIGHT_SCALES, 'model.weight_scale',
        weight_scale, f'one of {layers.WEIGHT_SCALES}')
  validation.check(
      weight_scale != 'layer_modulation'
      or quantizer in quantizers.SIGN_QUANTIZERS, 'model.weight_scale',
      weight_scale, f'a scale other than BONN\'s 1-bit conv with '
      f'model.quantizer={quantizer!r} (it signs its weights; a sign '
      f'quantizer: {quantizers.SIGN_QUANTIZERS})')
  validation.check(modulation_init in layers.MODULATION_INITS,
                   'model.modulation_init', modulation_init,
                   f'one of {layers.MODULATION_INITS}')
  validation.check(conv_impl in layers.CONV_IMPLS, 'model.conv_impl', conv_impl,
        f'one of {layers.CONV_IMPLS}')


def _validate_shortcuts(shortcuts) -> None:
  validation.check(shortcuts in SHORTCUTS, 'model.shortcuts', shortcuts,
                   f'one of {SHORTCUTS}')


def validate_config(model_config, dtype: str = 'float32') -> None:
  """Checks ``config.model`` and ``config.dtype``; a ConfigError names them.

  The models run the same checks when they are built, so a model made in
  Python (``WideResNet(binarize='middle')``) fails the same way.
  """
  validation.check(model_config.get('name') in _MODELS, 'model.name',
        model_config.get('name'), f'one of {sorted(_MODELS)}')
  create_model(model_config, dtype=dtype)


DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def create_model(model_config, num_classes: int = 10,
                 dtype: str = 'float32') -> nn.Module:
  """Builds a model from ``config.model`` (``name`` plus its fields).

  Args:
    model_config: ``config.model``.
    num_classes: size of the classifier.
    dtype: ``config.dtype``, the computation's dtype (a key of DTYPES); it
      does not change the parameters.

  Raises:
    errors.ConfigError: unknown model name or invalid field (named).
  """
  validation.check(dtype in DTYPES, 'dtype', dtype, f'one of {sorted(DTYPES)}')
  kwargs = dict(model_config, dtype=DTYPES[dtype])
  name = kwargs.pop('name')
  validation.check(name in _MODELS, 'model.name', name,
                   f'one of {sorted(_MODELS)}')
  if 'stage_sizes' in kwargs:
    kwargs['stage_sizes'] = tuple(kwargs['stage_sizes'])
  if 'widths' in kwargs:
    kwargs['widths'] = tuple(kwargs['widths'])
  try:
    return _MODELS[name](num_classes=num_classes, **kwargs)
  except TypeError as e:  # A field the model does not have.
    raise errors.ConfigError(
        f'Invalid config.model for {name!r}: {e}.') from e


def has_modulated_binary_weights(model_config) -> bool:
  """Whether ``config.model`` has 1-bit weights with a learned modulation.

  Those are the layers BONN's kernel loss regularises
  (:func:`bonnkd.binary.bayesian_losses.network_kernel_loss`).
  """
  return (model_config.binarize != 'none'
          and model_config.binarize_what in ('weights', 'both')
          and model_config.weight_scale in layers.MODULATED_SCALES)


def quant_convs(model: nn.Module, image_shape=(32, 32, 3)) -> dict:
  """Every QuantConv of ``model``, in call order.

  Returns:
    ``{path: (module, input shape)}``, the path being the module's place in
    the parameter tree ('stem', 'group0_block0/conv1'), the input shape that
    of an init on one image.
  """
  convs = {}

  def record(next_fun, args, kwargs, context):
    module = context.module
    if (isinstance(module, layers.QuantConv)
        and context.method_name == '__call__'):
      convs['/'.join(module.path)] = (module, tuple(args[0].shape))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))
  return convs


def latent_kernel_paths(model: nn.Module) -> frozenset[str]:
  """Parameter paths ('group0_block0/conv1/kernel') of the 1-bit kernels.

  Those kernels are latent: the forward pass reads only their signs, so
  1-bit practice trains them without the weight decay of real kernels
  (``config.optim.latent_weight_decay``).
  """
  return frozenset(f'{path}/kernel'
                   for path, (module, _) in quant_convs(model).items()
                   if module.binarize_weights)


def count_params(params) -> int:
  """Total number of scalars in a parameter tree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))
