"""The optimizers and their weight decay on real and latent 1-bit kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bonnkd import errors
from bonnkd import models
from bonnkd import train
from bonnkd.config import defaults
from bonnkd.run import run_dir
from bonnkd.training import train_state


def _config(**optim):
  config = defaults.base_config()
  config.model.depth = 10
  config.model.width = 1
  config.model.binarize = 'inner'
  config.model.binarize_what = 'both'
  config.num_epochs = 1.0
  config.optim.update(optim)
  return config


def _params(config):
  model = models.create_model(config.model)
  return model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']


def _one_step(config, params, grads, lr=0.1):
  tx = train_state.create_optimizer(config, optax.constant_schedule(lr))
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_latent_kernels_are_the_binary_weight_convs():
  config = _config()
  paths = models.latent_kernel_paths(models.create_model(config.model))
  # WRN-10-1: one block per group, two 3x3 convs each; the stem and the
  # 1x1 shortcuts stay real.
  assert paths == {f'group{g}_block0/conv{c}/kernel'
                   for g in range(3) for c in (1, 2)}


@pytest.mark.parametrize('latent', [-1.0, 0.0, 1e-2])
def test_sgd_decays_real_and_latent_kernels_by_their_own_weight(latent):
  config = _config(name='sgd', weight_decay=1e-3, momentum=0.0,
                   nesterov=False, latent_weight_decay=latent)
  params = _params(config)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates = _one_step(config, params, zero, lr=0.1)
  expected_latent = 1e-3 if latent == -1 else latent
  latent_paths = models.latent_kernel_paths(models.create_model(config.model))
  for path, update in jax.tree_util.tree_flatten_with_path(updates)[0]:
    name = '/'.join(entry.key for entry in path)
    param = np.asarray(_at(params, name))
    if name in latent_paths:
      wd = expected_latent
    elif name.endswith('/kernel'):
      wd = 1e-3
    else:  # BatchNorm, biases, modulation vectors: never decayed.
      wd = 0.0
    # SGD without momentum: -lr * (grad + wd * w) with a zero gradient.
    np.testing.assert_allclose(np.asarray(update), -0.1 * wd * param,
                               rtol=1e-6, atol=1e-12, err_msg=name)


def test_adam_first_step_is_lr_times_sign_plus_decoupled_decay():
  config = _config(name='adam', weight_decay=1e-2, latent_weight_decay=0.0)
  params = _params(config)
  rng = np.random.default_rng(0)
  grads = jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  updates = _one_step(config, params, grads, lr=1e-3)
  latent_paths = models.latent_kernel_paths(models.create_model(config.model))
  for path, update in jax.tree_util.tree_flatten_with_path(updates)[0]:
    name = '/'.join(entry.key for entry in path)
    g, w = np.asarray(_at(grads, name)), np.asarray(_at(params, name))
    wd = 1e-2 if name.endswith('/kernel') and name not in latent_paths else 0
    # Adam's first bias-corrected step is g / (|g| + eps); AdamW adds wd*w
    # to it, outside the moments; both times -lr.
    expected = -1e-3 * (g / (np.abs(g) + 1e-8) + wd * w)
    np.testing.assert_allclose(np.asarray(update), expected, rtol=1e-5,
                               atol=1e-10, err_msg=name)


def test_sgd_state_keeps_its_structure_when_decays_agree():
  # Checkpoints written before latent_weight_decay existed restore onto it.
  config = _config(name='sgd')
  params = _params(config)
  tx = train_state.create_optimizer(config, optax.constant_schedule(0.1))
  old = optax.chain(
      optax.add_decayed_weights(5e-4, mask=lambda p: jax.tree.map_with_path(
          lambda path, _: path[-1].key == 'kernel', p)),
      optax.sgd(optax.constant_schedule(0.1), momentum=0.9, nesterov=True))
  assert (jax.tree.structure(tx.init(params))
          == jax.tree.structure(old.init(params)))


def test_old_run_configs_read_as_sgd_with_one_decay():
  config = run_dir.complete({'optim': {'lr': 0.1, 'weight_decay': 5e-4}})
  assert config.optim.name == 'sgd'
  assert train_state.latent_weight_decay(config) == 5e-4


@pytest.mark.parametrize('key,value', [('name', 'lamb'),
                                       ('latent_weight_decay', -0.5)])
def test_bad_optimizer_fields_are_named(key, value):
  config = _config(**{key: value})
  with pytest.raises(errors.ConfigError, match=f'optim.{key}'):
    train.validate_config(config)


def _at(tree, path):
  for name in path.split('/'):
    tree = tree[name]
  return tree
