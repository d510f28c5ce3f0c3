"""Cost summary totals against hand-derived counts."""

import jax
import jax.numpy as jnp
import pytest

from bonnkd import models
from bonnkd.tools import summary


def test_wrn_10_1_inner_binary_costs_by_hand():
  model = models.WideResNet(10, 1, binarize='inner', binarize_what='both')
  costs = summary.layer_costs(model)
  t = summary.totals(costs)
  # Binary 3x3 convs (weights and inputs 1-bit), MACs = H_out*W_out*9*Cin*Cout:
  #   group0 conv1, conv2: 32*32*9*16*16 = 2,359,296 each
  #   group1 conv1 (stride 2): 16*16*9*16*32 = 1,179,648; conv2: 2,359,296
  #   group2 conv1 (stride 2): 8*8*9*32*64 = 1,179,648; conv2: 2,359,296
  assert t['bops'] == 4 * 2_359_296 + 2 * 1_179_648 == 11_796_480
  # Full precision: stem 32*32*27*16 = 442,368; shortcuts 16*16*16*32 and
  # 8*8*32*64 = 131,072 each; head 64*10 = 640.
  assert t['flops'] == 442_368 + 2 * 131_072 + 640 == 705_152
  assert t['ops'] == 705_152 + 11_796_480 / 64
  # 1-bit weights: 9*(16*16*2 + 16*32 + 32*32 + 32*64 + 64*64) = 9*8,192
  # = 73,728,
  # plus one modulation value per output channel (2*16 + 2*32 + 2*64 = 224).
  assert t['binary_params'] == 73_728
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert t['params'] == models.count_params(variables['params'])
  assert t['bits_1bit'] == 73_728 + 32 * (t['params'] - 73_728)
  assert t['bits_float32'] == 32 * t['params']
  # All conv weights: those 73,728 plus the stem 3*3*3*16 = 432 and the
  # shortcuts 16*32 + 32*64 = 2,560.
  assert t['conv_weights'] == 73_728 + 432 + 2_560
  assert t['binary_conv_share'] == 73_728 / 76_720
  conv1 = next(c for c in costs if c.name == 'group1_block0/conv1')
  assert conv1.output_shape == (16, 16, 32)
  assert conv1.params == 9 * 16 * 32 + 32


@pytest.mark.parametrize('what,bops', [('weights', 0), ('both', 11_796_480)])
def test_weight_only_binarization_is_counted_full_precision(what, bops):
  costs = summary.layer_costs(
      models.WideResNet(10, 1, binarize='inner', binarize_what=what))
  t = summary.totals(costs)
  assert t['bops'] == bops
  assert t['flops'] + t['bops'] == 705_152 + 11_796_480


@pytest.mark.parametrize('model', [
    models.WRN22_4(binarize='inner', binarize_what='both'),
    models.ResNet18(binarize='inner', binarize_what='both'),
])
def test_bonn_and_recu_layouts_are_over_90_percent_1bit(model):
  # BONN's WRN-22-4 and ReCU's ResNet-18: only the stem and the 1x1
  # shortcuts are real-valued convs; by hand for ResNet-18: stem 1,728,
  # shortcuts 64*128 + 128*256 + 256*512 = 172,032, of 11,159,232.
  t = summary.totals(summary.layer_costs(model))
  assert t['binary_conv_share'] > 0.98
  if isinstance(model, models.ResNet):
    assert t['conv_weights'] == 11_159_232
    assert t['binary_params'] == 11_159_232 - 1_728 - 172_032


def test_format_table_lists_every_layer():
  costs = summary.layer_costs(models.ResNet((1, 1), (8, 16)))
  text = summary.format_table(costs)
  assert all(c.name in text for c in costs)
  assert 'OPs = FLOPs + BOPs/64' in text
