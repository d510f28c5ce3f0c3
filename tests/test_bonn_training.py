"""BONN's losses in the train step: off is exactly plain training; on, they
are what the step optimises, and the class statistics follow the batches."""

import json
import os

import jax
import numpy as np
import pytest

from bonnkd import errors
from bonnkd import train
from bonnkd.binary import bayesian_losses
from bonnkd.data import input_pipeline
from bonnkd.run import run_dir
from bonnkd.training import train_state
from tests.conftest import read_json
from tests.conftest import read_metrics
from tests.conftest import tiny_config

W1A1 = {'model.binarize': 'inner', 'model.binarize_what': 'both',
        'model.weight_scale': 'modulation'}


def steps(config, n=3):
  """n train steps on fixed random batches from a fresh state."""
  run = train.setup(config, 3200)
  rng = np.random.default_rng(0)
  state, metrics = run.state, None
  for _ in range(n):
    images = rng.integers(0, 256, (32, 32, 32, 3), np.uint8)
    labels = (np.arange(32) % 5).astype(np.int32)  # Classes 0..4 only.
    # The run's own step, on a train split of this one batch.
    state, metrics = run.train_step_at(
        state, *run.put_train_split(input_pipeline.Split(images, labels)),
        *run.mesh.put_batch(np.arange(32, dtype=np.int32)))
  return state, metrics


def test_weights_zero_is_exactly_plain_training(cifar_tarball):
  config = tiny_config(cifar_tarball[0], **W1A1)
  assert config.bonn.kernel_weight == 0 and config.bonn.feature_weight == 0
  # A run from before the BONN losses existed (no bonn block in its
  # config.json), as its run directory reads it: the same training.
  older = json.loads(json.dumps(config.to_dict()))
  del older['bonn']
  a, metrics = steps(config)
  b, _ = steps(run_dir.complete(older))
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)
  assert set(metrics) == {'loss', 'accuracy'} and a.class_stats == {}


def test_kernel_loss_is_added_with_its_weight(cifar_tarball):
  config = tiny_config(cifar_tarball[0], **W1A1,
                       **{'bonn.kernel_weight': 1e-3, 'bonn.nu': 1e-4})
  state = train.setup(config, 3200).state
  expected = bayesian_losses.network_kernel_loss(state.params, 1e-4)
  # Six 1-bit convs with modulation in WRN-10-1's blocks, nothing else.
  layers = [k for k, v in jax.tree_util.tree_flatten_with_path(
      state.params)[0] if 'modulation' in jax.tree_util.keystr(k)]
  assert len(layers) == 6
  _, metrics = steps(config, n=1)
  np.testing.assert_allclose(metrics['kernel_loss'], expected, rtol=1e-5)
  # (The first step's learning rate is 0: warmup starts there.)
  plain, _ = steps(tiny_config(cifar_tarball[0], **W1A1))
  with_loss, _ = steps(config)
  assert not np.array_equal(
      plain.params['group1_block0']['conv1']['kernel'],
      with_loss.params['group1_block0']['conv1']['kernel'])


def test_bonns_learned_prior_is_trained_by_the_kernel_loss_alone(
    cifar_tarball):
  # BONN's conv (weight_scale='layer_modulation') holds a per-channel prior
  # (Eqs. 3.118-3.119): without the kernel loss nothing moves it (no
  # gradient, no decay); with it, the optimizer learns it.
  bonn_conv = dict(W1A1, **{'model.weight_scale': 'layer_modulation'})
  plain_config = tiny_config(cifar_tarball[0], **bonn_conv)
  start = train.setup(plain_config, 3200).state.params['group0_block0']
  plain, _ = steps(plain_config)
  with_loss, _ = steps(tiny_config(
      cifar_tarball[0], **bonn_conv,
      **{'bonn.kernel_weight': 1e-2, 'bonn.nu': 1.0}))
  for name in ('prior_mean', 'prior_log_var'):
    np.testing.assert_array_equal(
        plain.params['group0_block0']['conv1'][name],
        start['conv1'][name])
    assert not np.array_equal(
        with_loss.params['group0_block0']['conv1'][name], start['conv1'][name])


def test_kernel_loss_held_off_the_modulation_leaves_it_to_the_task(
    cifar_tarball):
  # A block's conv1 feeds a BatchNorm, which undoes any per-channel scale:
  # the cross-entropy gives its modulation no gradient, so in plain training
  # it stays where it started. The kernel loss moves it toward mean |k|
  # (lambda large here so that six steps show it), unless it is held off.
  def conv1_modulations(**bonn):
    state, _ = steps(tiny_config(cifar_tarball[0], **W1A1, **bonn), n=6)
    return np.concatenate([state.params[block]['conv1']['modulation']
                           for block in ('group0_block0', 'group1_block0')])
  plain = conv1_modulations()
  trained = conv1_modulations(**{'bonn.kernel_weight': 10.0})
  held = conv1_modulations(**{'bonn.kernel_weight': 10.0,
                              'bonn.kernel_loss_trains_modulation': False})
  assert np.max(np.abs(trained - plain)) > 1e-4
  np.testing.assert_allclose(held, plain, rtol=0, atol=1e-7)


def test_feature_statistics_follow_the_batches(cifar_tarball):
  config = tiny_config(cifar_tarball[0], **W1A1,
                       **{'bonn.feature_weight': 1e-2})
  state, metrics = steps(config, n=2)
  centres = np.asarray(state.class_stats['centres'])
  variances = np.asarray(state.class_stats['variances'])
  assert centres.shape == variances.shape == (10, 64)  # WRN-10-1: 64 feats.
  assert np.all(np.any(centres[:5] != 0, axis=1))  # Classes in the batches.
  np.testing.assert_array_equal(centres[5:], 0.0)  # Classes never seen.
  np.testing.assert_array_equal(variances[5:], 1.0)
  assert np.isfinite(float(metrics['feature_loss']))


def test_the_class_variances_floor_is_the_configs(cifar_tarball):
  # A floor above every batch spread of these features (WRN-10-1's pooled
  # BN-ReLU outputs of random images) and above the variances' start (1):
  # every variance sits at it after one step, seen classes or not.
  config = tiny_config(cifar_tarball[0], **W1A1,
                       **{'bonn.feature_weight': 1e-2,
                          'bonn.min_variance': 50.0})
  state, _ = steps(config, n=1)
  np.testing.assert_array_equal(state.class_stats['variances'], 50.0)


def test_batch_normalized_features_are_what_the_class_statistics_follow(
    cifar_tarball):
  # With 'batch', the centres and variances are those of the standardised
  # features (momentum 0: one batch's): the class centres weighted by the
  # classes' counts average to 0, and the within-class variances, so
  # weighted, to at most the batch's variance, 1 (the law of total
  # variance); unnormalised features of a ReLU network are positive, and
  # so are their centres.
  def stats(normalization):
    config = tiny_config(cifar_tarball[0], **W1A1,
                         **{'bonn.feature_weight': 1e-2,
                            'bonn.feature_momentum': 0.0,
                            'bonn.feature_normalization': normalization})
    state, _ = steps(config, n=1)
    return (np.asarray(state.class_stats['centres'][:5]),
            np.asarray(state.class_stats['variances'][:5]))
  centres, variances = stats('batch')
  counts = np.bincount(np.arange(32) % 5)[:, None]  # steps()' labels.
  np.testing.assert_allclose((counts * centres).sum(0) / 32, 0.0, atol=1e-4)
  assert np.all((counts * variances).sum(0) / 32 <= 1.0 + 1e-4)
  raw_centres, _ = stats('none')
  assert np.all(raw_centres >= 0) and raw_centres.mean() > 0


def test_run_with_both_losses_trains_and_resumes(cifar_tarball, tmp_path):
  config = tiny_config(cifar_tarball[0], num_epochs=2.0, **W1A1,
                       **{'bonn.kernel_weight': 1e-4,
                          'bonn.feature_weight': 1e-3})
  state = train.train_and_evaluate(config, str(tmp_path))
  records = [r for r in read_metrics(str(tmp_path)) if r['split'] == 'train']
  assert all(np.isfinite(r['kernel_loss']) and np.isfinite(r['feature_loss'])
             for r in records)
  assert read_json(os.path.join(tmp_path, 'final.json'))['step'] == 30
  # The class statistics are part of the checkpoint and restore with it.
  _, restored = train_state.restore(str(tmp_path), 'latest')
  np.testing.assert_array_equal(restored.class_stats['centres'],
                                state.class_stats['centres'])


def test_kernel_loss_needs_modulated_binary_weights(cifar_tarball):
  config = tiny_config(cifar_tarball[0], **{'bonn.kernel_weight': 1e-3,
                                            'model.binarize': 'none'})
  with pytest.raises(errors.ConfigError, match='bonn.kernel_weight'):
    train.validate_config(config)
