"""Model shapes and parameter counts, each derived by hand in a comment."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonnkd import models


def abstract_params(model):
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  return variables['params']


def test_wrn_16_4_parameter_count():
  # Convs have no bias; BN has scale+bias; the head has a bias.
  # stem 3*3*3*16 = 432.
  # group0 block0: bn 2*16, conv 9*16*64, bn 2*64, conv 9*64*64,
  #   shortcut 16*64 -> 32 + 9216 + 128 + 36864 + 1024 = 47,264
  # group0 block1: 128 + 36864 + 128 + 36864 = 73,984
  # group1 block0: 128 + 9*64*128 + 256 + 9*128*128 + 64*128 = 229,760
  # group1 block1: 256 + 147456 + 256 + 147456 = 295,424
  # group2 block0: 256 + 9*128*256 + 512 + 9*256*256 + 128*256 = 918,272
  # group2 block1: 512 + 589824 + 512 + 589824 = 1,180,672
  # final bn 512, head 256*10 + 10 = 2,570.
  expected = (432 + 47264 + 73984 + 229760 + 295424 + 918272 + 1180672 + 512
              + 2570)
  assert expected == 2_748_890
  assert models.count_params(abstract_params(models.WRN16_4())) == expected


def test_wrn_16_8_parameter_count():
  # Same layout with twice the channels (the published WRN-16-8: 11.0M).
  assert models.count_params(abstract_params(models.WRN16_8())) == 10_961_370


def wrn_parameter_count(depth: int, k: int) -> int:
  """WRN-depth-k's parameters counted block by block, as in the WRN-16-4
  test above: BN 2 per channel, bias-free convs, 1x1 shortcut where the
  width or stride changes, final BN and a 10-way head with bias."""
  n = (depth - 4) // 6
  total, cin = 3 * 3 * 3 * 16, 16
  for base in (16, 32, 64):
    cout = base * k
    for block in range(n):
      total += 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout
      if block == 0 and cin != cout or block == 0 and base != 16:
        total += cin * cout
      cin = cout
  return total + 2 * cin + cin * 10 + 10


def test_wrn_counts_match_the_block_by_block_formula():
  assert wrn_parameter_count(16, 4) == 2_748_890
  assert wrn_parameter_count(16, 8) == 10_961_370
  # The seed's phase-1 size (configs/phase1_bonn_wrn.py:seed): WRN-16-7
  # with a 1-bit stem, whose modulation vector adds 16 scales: 8.4M.
  seed = models.WideResNet(depth=16, width=7, binarize='first_conv',
                           binarize_what='weights')
  assert models.count_params(abstract_params(seed)) == (
      wrn_parameter_count(16, 7) + 16) == 8_396_010


def test_resnet18_parameter_count():
  # The standard CIFAR ResNet-18 (3x3 stem, 64-128-256-512, 1x1 shortcut
  # conv + BN at the three downsamplings, 10-way head): 11,173,962.
  assert models.count_params(abstract_params(models.ResNet18())) == 11_173_962


def test_w1a1_resnet18_parameter_count():
  # ReCU / BiPer's W1A1 ResNet-18 (binarize='inner', both): the real
  # ResNet-18 plus one modulation value per output channel of its 16 1-bit
  # 3x3 convs, 4 per stage: 4 * (64 + 128 + 256 + 512) = 3,840, plus the
  # BatchNorm before the classifier (scale and bias of 512): 1,024.
  w1a1 = models.ResNet18(binarize='inner', binarize_what='both')
  assert models.count_params(abstract_params(w1a1)) == (
      11_173_962 + 3_840 + 1_024) == 11_178_826


def test_w1a1_resnet_feeds_its_binary_convs_signs_of_hardtanh_outputs():
  # The stem (real) and every block end in hardtanh, not ReLU: the sign of
  # a ReLU output would be all +1. Every 1-bit conv sees +-1 inputs.
  model = models.ResNet((1, 1), (8, 16), binarize='inner',
                        binarize_what='both')
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  seen = {}

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, models.layers.QuantConv) and (
        context.method_name == '__call__'):
      seen['/'.join(module.path)] = (module.binarize_inputs, args[0])
    return next_fun(*args, **kwargs)

  with flax.linen.intercept_methods(record):
    model.apply(variables, x, train=True, mutable=['batch_stats'])
  binary = {k: v for k, (b, v) in seen.items() if b}
  assert sorted(binary) == ['stage0_block0/conv1', 'stage0_block0/conv2',
                            'stage1_block0/conv1', 'stage1_block0/conv2']
  for name, inputs in binary.items():
    # Inputs of the blocks' convs: hardtanh outputs, so within [-1, 1] and
    # with both signs present.
    assert float(jnp.max(jnp.abs(inputs))) <= 1.0, name
    assert float(jnp.min(inputs)) < 0 < float(jnp.max(inputs)), name
  assert not seen['stem'][0] and not seen['stage1_block0/shortcut'][0]


def test_student_is_about_4_6m():
  # ResNet-18 layout at 41/64 of the width: parameters scale ~ width^2,
  # 11.17M * (41/64)^2 ~= 4.6M.
  student = models.ResNet(widths=(41, 82, 164, 328))
  assert models.count_params(abstract_params(student)) == 4_589_591


@pytest.mark.parametrize('binarize,extra', [
    ('none', 0),
    # Only the stem: one modulation vector of 16 values.
    ('first_conv', 16),
    # Inner 3x3 convs of WRN-16-4: per group two blocks x two convs with
    # 64, 128, 256 output channels -> 4 * (64 + 128 + 256) = 1,792.
    ('inner', 1792),
    # Plus the stem (16) and the three 1x1 shortcuts (64 + 128 + 256).
    ('all', 1792 + 16 + 448),
])
def test_binarization_adds_only_modulation_vectors(binarize, extra):
  base = models.count_params(abstract_params(models.WRN16_4()))
  params = abstract_params(models.WRN16_4(binarize=binarize,
                                          weight_scale='modulation'))
  assert models.count_params(params) == base + extra
  flat = flax.traverse_util.flatten_dict(params)
  modulated = sum(v.size for k, v in flat.items() if k[-1] == 'modulation')
  assert modulated == extra


def test_binary_layers_per_mode():
  params = abstract_params(models.WideResNet(10, 1, binarize='inner'))
  flat = flax.traverse_util.flatten_dict(params)
  binary = sorted('/'.join(k[:-1]) for k in flat if k[-1] == 'modulation')
  assert binary == [f'group{g}_block0/conv{c}' for g in range(3)
                    for c in (1, 2)]


@pytest.mark.parametrize('model', [
    models.WideResNet(10, 1, binarize='inner', binarize_what='both'),
    models.ResNet(stage_sizes=(1, 1), widths=(8, 16)),
    models.ResNet(stage_sizes=(1, 1), widths=(8, 16), binarize='inner',
                  binarize_what='both'),
])
def test_output_shape_and_batch_stats(model):
  x = jnp.zeros((3, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  logits, updates = model.apply(variables, x, train=True,
                                mutable=['batch_stats'])
  assert logits.shape == (3, 10)
  assert 'batch_stats' in updates


def test_invalid_depth_and_mode():
  with pytest.raises(ValueError, match='6n \\+ 4'):
    abstract_params(models.WideResNet(depth=12))
  with pytest.raises(ValueError, match='first_conv'):
    abstract_params(models.WideResNet(depth=10, binarize='middle'))
  with pytest.raises(ValueError, match='first_conv'):
    abstract_params(models.ResNet((1, 1), (8, 16), binarize='middle'))


assert_close = functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                 atol=1e-5)


def module_calls(model, x):
  """Every module call of a train-mode forward: path -> (input, output).

  BatchNorm scales are set to 1 (the ResNet's last BN of a block starts at
  0, which would hide its branch).
  """
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.ones_like(v) if path[-1].key == 'scale' else v,
      model.init(jax.random.key(0), x))
  calls = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.path:
      calls['/'.join(context.module.path)] = (args[0], out)
    return out

  with flax.linen.intercept_methods(record):
    model.apply(variables, x, train=True, mutable=['batch_stats'])
  return calls


def test_every_conv_shortcuts_wrap_each_wrn_conv():
  # Bi-Real: h = s + conv1(act(bn1(x))), out = h + conv2(act(bn2(h))), with
  # s the 1x1 shortcut where the width changes (group0_block0, 16 -> 32)
  # and x itself where it does not (group0_block1); bn2 reads h, not
  # conv1's output alone.
  model = models.WideResNet(16, 2, binarize='inner', binarize_what='both',
                            shortcuts='every_conv')
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  calls = module_calls(model, x)
  for block in ('group0_block0', 'group0_block1'):
    conv = lambda name: calls[f'{block}/{name}'][1]
    x_in = calls[f'{block}/bn1'][0]
    s = conv('shortcut') if block == 'group0_block0' else x_in
    h = s + conv('conv1')
    assert_close(calls[f'{block}/bn2'][0], h)
    assert_close(calls[block][1], h + conv('conv2'))
  # The same model with one shortcut per block: bn2 reads conv1 alone.
  calls = module_calls(model.clone(shortcuts='block'), x)
  assert_close(calls['group0_block1/bn2'][0], calls['group0_block1/conv1'][1])


def test_every_conv_shortcuts_wrap_each_resnet_conv():
  # IR-Net / ReCU's CIFAR block: h = act(s + bn1(conv1(x))),
  # out = act(h + bn2(conv2(h))), act hardtanh for 1-bit inputs; s is
  # shortcut_bn(shortcut(x)) where the width changes, x where not.
  model = models.ResNet((2, 1), (8, 16), binarize='inner',
                        binarize_what='both', shortcuts='every_conv')
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  calls = module_calls(model, x)
  for block in ('stage0_block1', 'stage1_block0'):
    out = lambda name: calls[f'{block}/{name}'][1]
    x_in = calls[f'{block}/conv1'][0]
    s = out('shortcut_bn') if block == 'stage1_block0' else x_in
    h = np.clip(s + out('bn1'), -1, 1)
    assert_close(calls[f'{block}/conv2'][0], h)
    assert_close(calls[block][1], np.clip(h + out('bn2'), -1, 1))


@pytest.mark.parametrize('model', [
    models.WideResNet(10, 2, binarize='inner', binarize_what='both'),
    models.ResNet((1, 1), (8, 16), binarize='inner', binarize_what='both'),
])
def test_every_conv_shortcuts_add_no_parameters(model):
  bireal = model.clone(shortcuts='every_conv')
  assert (jax.tree_util.tree_map(lambda a: a.shape, abstract_params(bireal))
          == jax.tree_util.tree_map(lambda a: a.shape,
                                    abstract_params(model)))
