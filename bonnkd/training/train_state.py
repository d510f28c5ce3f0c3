"""The train state of a run: model variables, optimizer and its schedule.

What a checkpoint holds is exactly a :class:`TrainState`
(``step``, ``params``, ``batch_stats``, ``opt_state``), so the abstract state
of a config (:func:`abstract_train_state`, shapes and dtypes only, with the
placement asked for) is the target every restore hands to orbax: a
checkpoint written on a TPU slice restores onto one CPU, and back.
"""

from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from bonnkd import models
from bonnkd.config import defaults
from bonnkd.run import run_dir as run_dir_lib

__all__ = ['TrainState', 'learning_rate_fn', 'create_optimizer',
           'latent_weight_decay',
           'create_train_state', 'abstract_train_state', 'variables_of',
           'restore', 'restore_variables', 'IMAGE_SHAPE']

IMAGE_SHAPE = (32, 32, 3)


class TrainState(train_state.TrainState):
  batch_stats: Any = None
  # BONN's running class centres and variances ({'centres', 'variances'},
  # each (classes, feature dim)) when its feature loss is on, else {}.
  class_stats: Any = None


def learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
  """Linear warmup from 0 to ``optim.lr``, then cosine decay to 0."""
  total = defaults.num_train_steps(config,
                                     steps_per_epoch * config.batch_size)
  warmup = int(config.optim.warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.optim.lr, warmup_steps=warmup,
      decay_steps=max(total, warmup + 1), end_value=0.0)


def _path_of(path) -> str:
  return '/'.join(entry.key for entry in path)


def _kernel_mask(params, keep=lambda path: True):
  """True on the conv and dense kernels of ``params`` whose path ``keep``s.

  Weight decay applies to kernels only (not BatchNorm, biases, modulation
  vectors).
  """
  return jax.tree.map_with_path(
      lambda p, _: p[-1].key == 'kernel' and keep(_path_of(p)), params)


def latent_weight_decay(config) -> float:
  """``optim.latent_weight_decay``, where -1 means ``optim.weight_decay``."""
  decay = config.optim.latent_weight_decay
  return config.optim.weight_decay if decay < 0 else decay


def _weight_decays(config):
  """The decay transforms: one for every kernel, or real and latent apart.

  Only where the two decays differ are the latent kernels looked up
  (:func:`bonnkd.models.latent_kernel_paths`, an abstract init of the model).
  """
  wd, latent_wd = config.optim.weight_decay, latent_weight_decay(config)
  if latent_wd == wd:  # One decay on every kernel (the original structure).
    return [optax.add_decayed_weights(wd, mask=_kernel_mask)]
  latent = models.latent_kernel_paths(models.create_model(config.model))
  return [
      optax.add_decayed_weights(
          wd, mask=lambda p: _kernel_mask(p, lambda k: k not in latent)),
      optax.add_decayed_weights(
          latent_wd, mask=lambda p: _kernel_mask(p, lambda k: k in latent)),
  ]


def create_optimizer(config, schedule: optax.Schedule):
  """The optimizer of ``config.optim.name``, with weight decay on kernels.

  * 'sgd': SGD with (Nesterov) momentum; the decay ``wd * w`` is added to the
    gradient before momentum (classic coupled L2, as in the WRN and ResNet
    CIFAR recipes).
  * 'adam': Adam (Kingma & Ba, arXiv:1412.6980; betas 0.9, 0.999) with
    decoupled weight decay, ``w -= lr * (adam_update + wd * w)`` (AdamW,
    Loshchilov & Hutter, arXiv:1711.05101): the optimizer of XNOR-Net,
    Bi-Real Net's successors, ReActNet and AdamBNN for 1-bit networks.
    The same ``wd`` is a much weaker decay than under SGD.

  The latent kernels of 1-bit convs decay by ``optim.latent_weight_decay``
  (-1: as the real kernels); 1-bit recipes use little or none (ReActNet,
  RBONN: 0), as their magnitude only moves the sign's gradient window.
  BatchNorm scales, biases and modulation vectors are never decayed.
  """
  decays = _weight_decays(config)
  if config.optim.name == 'adam':
    return optax.chain(optax.scale_by_adam(), *decays,
                       optax.scale_by_learning_rate(schedule))
  return optax.chain(
      *decays,
      optax.sgd(schedule, momentum=config.optim.momentum,
                nesterov=config.optim.nesterov),
  )


def create_train_state(rng, model, tx, image_shape=IMAGE_SHAPE,
                       class_stats: bool = False) -> TrainState:
  """The initial state; ``class_stats`` adds BONN's running class statistics
  (centres 0, variances 1)."""
  image = jnp.zeros((1, *image_shape), jnp.float32)
  variables = model.init(rng, image, train=False)
  stats = {}
  if class_stats:
    _, sown = model.apply(variables, image, train=False,
                          mutable=['intermediates'])
    dim = sown['intermediates']['features'][0].shape[-1]
    stats = {'centres': jnp.zeros((model.num_classes, dim), jnp.float32),
             'variances': jnp.ones((model.num_classes, dim), jnp.float32)}
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}),
                           class_stats=stats, tx=tx)


def uses_class_stats(config) -> bool:
  """Whether ``config``'s state holds BONN's class statistics."""
  return config.bonn.feature_weight > 0


def abstract_train_state(config, sharding=None) -> TrainState:
  """The state of ``config``'s model and optimizer, as shapes and dtypes.

  Args:
    config: a run's config (``config.model``, ``config.optim``).
    sharding: placement of every leaf (e.g. a mesh's replicated sharding);
      None places them on this process's first local device (orbax needs
      a placement valid here: without one it reuses the saving run's, which
      fails on other devices).

  Returns:
    A TrainState of ``jax.ShapeDtypeStruct`` leaves: the target orbax
    restores onto, whatever devices wrote the checkpoint.
  """
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  model = models.create_model(config.model)
  # The schedule's values do not change the optimizer state's structure.
  tx = create_optimizer(config, learning_rate_fn(config, steps_per_epoch=1))
  shapes = jax.eval_shape(
      lambda: create_train_state(jax.random.key(0), model, tx,
                                 class_stats=uses_class_stats(config)))
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      shapes)


def variables_of(state):
  """The model variables ``{'params', 'batch_stats'}`` of a train state."""
  return {'params': state.params, 'batch_stats': state.batch_stats}


def restore(run, which: str = 'best', sharding=None):
  """The train state of a run's best (or latest) checkpoint.

  Restored onto the abstract state of the run's own config, placed as
  asked, so a checkpoint moves between machines with any number of devices.

  Args:
    run: a :class:`bonnkd.run.run_dir.RunDir`, or the path of a run
      directory (or of its checkpoints/ folder).
    which: 'best' (by val accuracy) or 'latest'.
    sharding: where to place every array, e.g. a mesh's replicated
      sharding; None: this process's first local device.

  Returns:
    (step, TrainState with ``apply_fn`` and ``tx`` unset).

  Raises:
    errors.NotARunError: not a run directory, or it holds no checkpoint.
    checkpoints.CheckpointMismatchError: the checkpoint does not fit the
      model of its config.json.
  """
  if not isinstance(run, run_dir_lib.RunDir):
    run = run_dir_lib.RunDir.open(run)
  return run.restore(abstract_train_state(run.config, sharding), which)


def restore_variables(run, which: str = 'best', sharding=None):
  """(step, ``{'params', 'batch_stats'}``) of a run's checkpoint.

  As :func:`restore`, without the optimizer state.
  """
  step, state = restore(run, which, sharding)
  return step, variables_of(state)
