"""A frozen teacher restored from a finished bonnkd run (phase 2).

``config.kd.teacher_workdir`` names a run directory written by
``train_and_evaluate``. Its ``config.json`` says which model it trained; its
best checkpoint (by val accuracy) gives the weights and BatchNorm statistics.
The teacher is only ever applied with ``train=False`` (running statistics)
and its logits pass through ``stop_gradient``: it is never updated.
"""

import dataclasses
import json
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bonnkd import checkpointing
from bonnkd import models

__all__ = ['Teacher', 'load_teacher']


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A model, its frozen variables, and where they came from."""

  model: nn.Module
  variables: Any  # {'params': ..., 'batch_stats': ...}
  config: ml_collections.ConfigDict
  step: int

  def logits(self, variables, images: jax.Array) -> jax.Array:
    """Eval-mode logits, constant for autodiff."""
    return jax.lax.stop_gradient(
        self.model.apply(variables, images, train=False))


def _check_fits(restored, expected, workdir: str) -> None:
  flat_restored = flax.traverse_util.flatten_dict(restored, sep='/')
  flat_expected = flax.traverse_util.flatten_dict(expected, sep='/')
  missing = sorted(set(flat_expected) - set(flat_restored))
  extra = sorted(set(flat_restored) - set(flat_expected))
  wrong = sorted(k for k in set(flat_expected) & set(flat_restored)
                 if tuple(np.shape(flat_restored[k]))
                 != tuple(flat_expected[k].shape))
  if missing or extra or wrong:
    detail = '; '.join(
        f'{name}: {keys[:3]}' for name, keys in
        (('missing', missing), ('unexpected', extra), ('wrong shape', wrong))
        if keys)
    raise ValueError(
        f'The checkpoint in config.kd.teacher_workdir={workdir!r} does not '
        f'fit the model of its config.json ({detail}).')


def load_teacher(workdir: str) -> Teacher:
  """Restores the best checkpoint of the bonnkd run in ``workdir``.

  Raises:
    FileNotFoundError: ``workdir`` or its ``config.json`` does not exist.
    checkpointing.NoCheckpointError: it holds no checkpoint.
    ValueError: the checkpoint does not fit the model its config names.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(
        f'config.kd.teacher_workdir={workdir!r} does not exist; train a '
        'teacher first (e.g. configs/teacher_resnet18.py) and pass its '
        '--workdir.')
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(config_path):
    raise FileNotFoundError(
        f'config.kd.teacher_workdir={workdir!r} is not a bonnkd run: it has '
        'no config.json.')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model = models.create_model(config.model)
  step, variables = checkpointing.restore_variables(workdir, which='best')
  expected = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                         train=False))
  expected = {'params': expected['params'],
              'batch_stats': expected.get('batch_stats', {})}
  _check_fits(variables, expected, workdir)
  variables = jax.tree_util.tree_map(jnp.asarray, variables)
  return Teacher(model=model, variables=variables, config=config, step=step)
