"""bfloat16 computation with float32 parameters, statistics and loss."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from bonnkd import models
from bonnkd import train
from bonnkd.binary import layers
from bonnkd.training import train_state
from tests.conftest import read_json
from tests.conftest import read_metrics
from tests.conftest import tiny_config


def test_binary_conv_sums_are_exact_in_bfloat16():
  # A W1A1 conv over 64 channels: sums of 576 products of +-1, integers up
  # to 576, which bfloat16 cannot all hold (spacing 4 above 512). They are
  # accumulated in float32, so the bfloat16 output is the exact float32
  # result rounded once.
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 64)).astype(np.float32)
  conv = {dtype: layers.QuantConv(32, binarize_weights=True,
                                  binarize_inputs=True, weight_scale='none',
                                  dtype=dtype)
          for dtype in (jnp.float32, jnp.bfloat16)}
  params = conv[jnp.float32].init(jax.random.key(0), x)
  exact = conv[jnp.float32].apply(params, x)
  half = conv[jnp.bfloat16].apply(params, x)
  assert half.dtype == jnp.bfloat16
  assert np.all(np.asarray(exact) == np.round(np.asarray(exact)))
  np.testing.assert_array_equal(np.asarray(half),
                                np.asarray(exact.astype(jnp.bfloat16)))


def test_bfloat16_logits_agree_with_float32_to_its_precision():
  images = jnp.asarray(np.random.default_rng(1).normal(
      size=(16, 32, 32, 3)), jnp.float32)
  for config in (dict(name='wide_resnet', depth=10, width=2,
                      binarize='first_conv', binarize_what='weights',
                      quantizer='ste_sign', weight_scale='modulation',
                      dropout_rate=0.0, conv_impl='auto'),
                 dict(name='resnet', stage_sizes=(1, 1), widths=(8, 16),
                      conv_impl='auto')):
    f32 = models.create_model(config)
    bf16 = models.create_model(config, dtype='bfloat16')
    variables = f32.init(jax.random.key(0), images[:1])
    a = f32.apply(variables, images)
    b = bf16.apply(variables, images)
    assert b.dtype == jnp.float32  # The logits (and the loss) are float32.
    # bfloat16 keeps 8 significant bits (relative step 2^-8 = 0.4%); ten
    # layers of it leave the logits within a few percent of their range.
    scale = float(jnp.max(jnp.abs(a)))
    np.testing.assert_allclose(b, a, atol=0.05 * scale)
    assert float(jnp.mean(jnp.argmax(a, -1) == jnp.argmax(b, -1))) >= 0.8


def test_bfloat16_smoke_run_trains_with_float32_state(cifar_tarball,
                                                      tmp_path):
  config = tiny_config(cifar_tarball[0], num_epochs=3.0, dtype='bfloat16',
                       **{'model.binarize': 'inner',
                          'model.binarize_what': 'both'})
  state = train.train_and_evaluate(config, str(tmp_path))
  losses = [r['loss'] for r in read_metrics(tmp_path) if r['split'] == 'train']
  assert losses[-1] < losses[0] and np.all(np.isfinite(losses))
  assert read_json(os.path.join(tmp_path, 'final.json'))['test_accuracy'] > 0.5
  for leaf in jax.tree.leaves((state.params, state.batch_stats,
                               state.opt_state)):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
  _, variables = train_state.restore_variables(str(tmp_path))
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {
      np.dtype('float32')}
