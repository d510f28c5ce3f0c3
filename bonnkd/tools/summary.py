"""Model cost summary, per layer and in total, like larq's ``lq.models.summary``.

For each convolution, dense and BatchNorm layer: output shape, parameters,
how many of them are 1-bit (in total, as a share of all parameters and of
the convolutions' weights), storage in bits (1 bit per binarized weight, 32
for everything else) and multiply-accumulates per image, split into

* binary MACs (BOPs): both operands in {-1, +1} (binarized weights *and*
  inputs), executable as XNOR + popcount;
* full-precision MACs: everything else, including convolutions with 1-bit
  weights but real inputs.

Totals follow the Bi-Real Net / ReActNet convention: FLOPs are the
full-precision MACs and ``OPs = FLOPs + BOPs / 64``.

  python -m bonnkd.tools.summary --config configs/phase1_bonn_wrn.py:cpu
"""

from collections.abc import Sequence
import dataclasses
import math

from absl import app
from absl import flags
from ml_collections import config_flags
import flax.linen as nn
import jax
import jax.numpy as jnp

from bonnkd import errors
from bonnkd import models
from bonnkd.binary import layers

__all__ = ['LayerCost', 'layer_costs', 'totals', 'format_table']


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """The cost of one layer for one image."""

  name: str
  kind: str  # 'conv', 'dense' or 'batchnorm'
  output_shape: tuple[int, ...]
  params: int
  binary_params: int
  binary_macs: int
  fp_macs: int
  # Kernel entries of a conv (its params less its per-channel vectors).
  conv_weights: int = 0

  @property
  def bits(self) -> int:
    return self.binary_params + 32 * (self.params - self.binary_params)


def _conv_cost(module: layers.QuantConv, name, x, y) -> LayerCost:
  kh, kw = module.kernel_size
  cin, cout = x.shape[-1], module.features
  weights = kh * kw * cin * cout
  # A modulation vector, and for BONN's conv its prior's two vectors.
  vectors = {'modulation': 1, 'layer_modulation': 3}.get(
      module.weight_scale, 0) if module.binarize_weights else 0
  scales = vectors * cout
  macs = math.prod(y.shape[1:-1]) * kh * kw * cin * cout
  both_binary = module.binarize_weights and module.binarize_inputs
  return LayerCost(
      name=name, kind='conv', output_shape=tuple(y.shape[1:]),
      params=weights + scales,
      binary_params=weights if module.binarize_weights else 0,
      binary_macs=macs if both_binary else 0,
      fp_macs=0 if both_binary else macs,
      conv_weights=weights)


def layer_costs(model: nn.Module,
                input_shape: Sequence[int] = (32, 32, 3)) -> list[LayerCost]:
  """Per-layer costs of ``model`` on one image, in call order."""
  costs, seen = [], set()

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    module = context.module
    name = '/'.join(module.path)
    # Once per module: bonnkd's BatchNorm in eval mode calls flax's
    # __call__ from its own, and both are intercepted.
    if context.method_name != '__call__' or name in seen:
      return y
    seen.add(name)
    x = args[0]
    if isinstance(module, layers.QuantConv):
      costs.append(_conv_cost(module, name, x, y))
    elif isinstance(module, nn.Dense):
      fan_in = x.shape[-1]
      costs.append(LayerCost(
          name=name, kind='dense', output_shape=tuple(y.shape[1:]),
          params=fan_in * module.features + module.features * module.use_bias,
          binary_params=0, binary_macs=0, fp_macs=fan_in * module.features))
    elif isinstance(module, nn.BatchNorm):
      channels = x.shape[-1]
      costs.append(LayerCost(
          name=name, kind='batchnorm', output_shape=tuple(y.shape[1:]),
          params=channels * (module.use_scale + module.use_bias),
          binary_params=0, binary_macs=0, fp_macs=0))
    return y

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0),
                                      jnp.zeros((1, *input_shape)),
                                      train=False))
  return costs


def totals(costs: Sequence[LayerCost]) -> dict[str, float]:
  """Whole-model figures; FLOPs are full-precision MACs (Bi-Real's usage)."""
  params = sum(c.params for c in costs)
  binary_params = sum(c.binary_params for c in costs)
  flops = sum(c.fp_macs for c in costs)
  bops = sum(c.binary_macs for c in costs)
  conv_weights = sum(c.conv_weights for c in costs)
  return {
      'params': params,
      'binary_params': binary_params,
      'binary_share': binary_params / params if params else 0.0,
      # The share the BNN papers quote: 1-bit kernel entries of all convs'.
      'conv_weights': conv_weights,
      'binary_conv_share': (binary_params / conv_weights if conv_weights
                            else 0.0),
      'bits_float32': 32 * params,
      'bits_1bit': sum(c.bits for c in costs),
      'flops': flops,
      'bops': bops,
      'ops': flops + bops / 64,
  }


def format_table(costs: Sequence[LayerCost]) -> str:
  """A plain-text table, one row per layer, then the totals."""
  header = (f'{"layer":<32} {"kind":<9} {"output":<14} {"params":>10} '
            f'{"1-bit":>10} {"bits":>12} {"binary MACs":>13} {"FP MACs":>13}')
  rows = [header, '-' * len(header)]
  for c in costs:
    shape = 'x'.join(map(str, c.output_shape))
    rows.append(f'{c.name:<32} {c.kind:<9} {shape:<14} {c.params:>10,} '
                f'{c.binary_params:>10,} {c.bits:>12,} {c.binary_macs:>13,} '
                f'{c.fp_macs:>13,}')
  t = totals(costs)
  rows += ['-' * len(header),
           f'parameters: {t["params"]:,} ({t["binary_params"]:,} 1-bit, '
           f'{100 * t["binary_share"]:.1f}%)',
           f'conv weights: {t["conv_weights"]:,} '
           f'({100 * t["binary_conv_share"]:.1f}% 1-bit)',
           f'size: {t["bits_float32"] / 8 / 2**20:.2f} MiB as float32, '
           f'{t["bits_1bit"] / 8 / 2**20:.2f} MiB with 1-bit weights',
           f'per image: FLOPs (FP MACs) {t["flops"]:,}, BOPs {t["bops"]:,}, '
           f'OPs = FLOPs + BOPs/64 = {t["ops"]:,.0f}']
  return '\n'.join(rows)


_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with a preset: file.py:preset.')
flags.mark_flags_as_required(['config'])


@errors.exit_on_user_error
def main(argv):
  del argv
  model = models.create_model(_CONFIG.value.model)
  print(format_table(layer_costs(model)))


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
