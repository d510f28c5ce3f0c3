"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

One jit-compiled train step, data parallel over a 1-D device mesh ('data'):
the batch is sharded along its first axis, the train state is replicated, and
XLA inserts the gradient all-reduce (and the cross-device BatchNorm
statistics). It runs unchanged on 1 CPU, several fake CPU devices, a GPU or a
TPU slice, and on several hosts (each host feeds its slice of the global
batch).

Usable from Colab::

    from bonnkd import train
    from configs import phase1_bonn_wrn
    state = train.train_and_evaluate(phase1_bonn_wrn.get_config('smoke'),
                                     '/tmp/p1')
"""

import collections
from collections.abc import Callable
import functools
import json
import math
import os
import time
from typing import Any

from absl import logging
from flax.training import train_state
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax

from bonnkd import augment
from bonnkd import checkpointing
from bonnkd import config_lib
from bonnkd import input_pipeline
from bonnkd import losses
from bonnkd import metric_logging
from bonnkd import models
from bonnkd import teacher as teacher_lib

__all__ = [
    'TrainState',
    'learning_rate_fn',
    'create_optimizer',
    'create_train_state',
    'train_step',
    'eval_step',
    'evaluate',
    'train_and_evaluate',
]


class TrainState(train_state.TrainState):
  batch_stats: Any = None


def learning_rate_fn(config, steps_per_epoch: int) -> optax.Schedule:
  """Linear warmup from 0 to ``optim.lr``, then cosine decay to 0."""
  total = config_lib.num_train_steps(config,
                                     steps_per_epoch * config.batch_size)
  warmup = int(config.optim.warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.optim.lr, warmup_steps=warmup,
      decay_steps=max(total, warmup + 1), end_value=0.0)


def _decay_mask(params):
  """Weight decay on conv and dense kernels only (not BN, biases, scales)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key == 'kernel', params)


def create_optimizer(config, schedule: optax.Schedule):
  """SGD with (Nesterov) momentum and decoupled-from-BN weight decay."""
  return optax.chain(
      optax.add_decayed_weights(config.optim.weight_decay, mask=_decay_mask),
      optax.sgd(schedule, momentum=config.optim.momentum,
                nesterov=config.optim.nesterov),
  )


def create_train_state(rng, model, tx, image_shape=(32, 32, 3)) -> TrainState:
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32),
                         train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}),
                           tx=tx)


def train_step(state: TrainState, images, labels, teacher_variables=None, *,
               rng, config, teacher: teacher_lib.Teacher | None = None):
  """One SGD step on a uint8 batch: augment, forward, backward, update.

  The augmentation and dropout keys are ``fold_in(rng, step)``: a resumed run
  draws exactly the randomness of an uninterrupted one. With a ``teacher``
  (phase 2), the teacher sees the same augmented batch in the same step
  (Beyer et al. 2022, "consistent" distillation) and the loss is
  :func:`bonnkd.losses.kd_loss`.

  Returns:
    (new state, {'loss', 'accuracy'[, 'ce', 'kl', 'agreement']} of the batch).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  aug_rng, dropout_rng = jax.random.split(step_rng)
  images = augment.random_crop_flip(aug_rng, images,
                                    config.data.crop_padding,
                                    config.data.flip)
  images = augment.normalize(images)
  teacher_logits = (None if teacher is None
                    else teacher.logits(teacher_variables, images))

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images,
        train=True, mutable=['batch_stats'], rngs={'dropout': dropout_rng})
    if teacher is None:
      loss = jnp.mean(losses.cross_entropy(logits, labels,
                                           config.optim.label_smoothing))
      aux = {}
    else:
      loss, aux = losses.kd_loss(logits, teacher_logits, labels,
                                 config.kd.alpha, config.kd.temperature)
    return loss, (logits, updates, aux)

  (loss, (logits, updates, aux)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  predictions = jnp.argmax(logits, -1)
  # Report the plain cross-entropy, comparable across configs and phases.
  metrics = {
      'loss': jnp.mean(losses.cross_entropy(logits, labels)),
      'accuracy': jnp.mean(predictions == labels),
  }
  if teacher is not None:
    metrics['kd_loss'] = loss
    metrics['kl'] = aux['kl']
    metrics['agreement'] = jnp.mean(
        predictions == jnp.argmax(teacher_logits, -1))
  state = state.apply_gradients(grads=grads,
                                batch_stats=updates['batch_stats'])
  return state, metrics


def eval_step(state: TrainState, images, labels, mask, teacher_variables=None,
              *, teacher: teacher_lib.Teacher | None = None,
              temperature: float = 1.0):
  """Masked sums over one eval batch (BatchNorm uses running statistics).

  With a teacher, also the student-teacher top-1 agreement and the KL term
  of the KD loss at ``temperature``.
  """
  images = augment.normalize(images)
  logits = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, images,
      train=False)
  predictions = jnp.argmax(logits, -1)
  sums = {
      'loss_sum': jnp.sum(losses.cross_entropy(logits, labels) * mask),
      'correct': jnp.sum((predictions == labels) * mask),
      'count': jnp.sum(mask),
  }
  if teacher is not None:
    teacher_logits = teacher.logits(teacher_variables, images)
    sums['agreement'] = jnp.sum(
        (predictions == jnp.argmax(teacher_logits, -1)) * mask)
    sums['kl'] = jnp.sum(
        losses.distillation_kl(logits, teacher_logits, temperature) * mask)
  return sums, (predictions, mask)


class DataParallelMesh:
  """The 1-D data-parallel mesh and the shardings used with it."""

  def __init__(self, devices=None):
    devices = jax.devices() if devices is None else devices
    self.mesh = jax.make_mesh((len(devices),), ('data',),
                              axis_types=(jax.sharding.AxisType.Auto,),
                              devices=devices)
    self.replicated = NamedSharding(self.mesh, P())
    self.batch = NamedSharding(self.mesh, P('data'))

  def put_batch(self, *arrays):
    """Host-local numpy arrays -> global arrays sharded over 'data'."""
    return tuple(jax.make_array_from_process_local_data(self.batch, a)
                 for a in arrays)


def evaluate(eval_fn: Callable, state, split: input_pipeline.Split,
             batch_size: int, mesh: DataParallelMesh):
  """Mean metrics and per-example predictions over every example of split.

  Args:
    eval_fn: ``(state, images, labels, mask) -> (sums, (predictions, mask))``
      as :func:`eval_step`.
    state: the train state to evaluate.
    split: host arrays.
    batch_size: global eval batch size.
    mesh: where to put the batches.

  Returns:
    ({'loss', 'accuracy', 'count', ...}, predictions (len(split),)).
  """
  totals = collections.defaultdict(float)
  predictions = []
  for images, labels, mask in input_pipeline.eval_batches(
      split, batch_size, jax.process_index(), jax.process_count()):
    sums, (preds, valid) = jax.device_get(
        eval_fn(state, *mesh.put_batch(images, labels, mask)))
    for k, v in sums.items():
      totals[k] += float(v)
    predictions.append(preds[valid > 0])
  count = totals.pop('count')
  predictions = np.concatenate(predictions).astype(np.int32)
  metrics = {'loss': totals.pop('loss_sum') / count,
             'accuracy': totals.pop('correct') / count}
  # Any further sums (KD: agreement, kl) become means too.
  metrics.update({k: v / count for k, v in totals.items()})
  return {**metrics, 'count': count}, predictions


def _write_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _check_finite(record: dict[str, Any]) -> None:
  for name in ('loss', 'accuracy'):
    if not math.isfinite(record[name]):
      raise FloatingPointError(
          f'Non-finite {record["split"]} {name}={record[name]} at step '
          f'{record["step"]} (epoch {record["epoch"]}); stopping. '
          'Checkpoints and metrics written so far are kept.')


def _compile_steps(config, mesh: DataParallelMesh, rng, teacher):
  """The jitted train and eval steps, with the teacher's variables bound.

  The teacher's variables are an argument of the jitted functions (not
  constants folded into the program), replicated like the train state.
  """
  teacher_variables = (jax.device_put(teacher.variables, mesh.replicated)
                       if teacher else {})
  jit_train = jax.jit(
      functools.partial(train_step, rng=rng, config=config, teacher=teacher),
      in_shardings=(mesh.replicated, mesh.batch, mesh.batch, mesh.replicated),
      out_shardings=(mesh.replicated, mesh.replicated),
      donate_argnums=(0,))
  jit_eval = jax.jit(
      functools.partial(eval_step, teacher=teacher,
                        temperature=config.kd.temperature),
      in_shardings=(mesh.replicated, mesh.batch, mesh.batch, mesh.batch,
                    mesh.replicated),
      out_shardings=(mesh.replicated, mesh.replicated))

  def train_fn(state, images, labels):
    return jit_train(state, images, labels, teacher_variables)

  def eval_fn(state, images, labels, mask):
    return jit_eval(state, images, labels, mask, teacher_variables)

  return train_fn, eval_fn


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains ``config`` in ``workdir``, resuming if it holds a checkpoint.

  Writes ``config.json``, ``metrics.jsonl``, TensorBoard events, orbax
  checkpoints (latest and best by val accuracy) and, at the end,
  ``final.json`` with val and test accuracy of the best checkpoint.

  Returns:
    The final train state.
  """
  config_lib.validate(config, jax.device_count())
  teacher = (teacher_lib.load_teacher(config.kd.teacher_workdir)
             if config.kd.enabled else None)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    _write_json(os.path.join(workdir, 'config.json'), config.to_dict())

  data = input_pipeline.load_splits(config.data)
  logging.info('Data: %s', {k: len(v) for k, v in data.items()})
  steps_per_epoch = config_lib.steps_per_epoch(len(data['train']),
                                               config.batch_size)
  total_steps = config_lib.num_train_steps(config, len(data['train']))
  mesh = DataParallelMesh()
  model = models.create_model(config.model)
  schedule = learning_rate_fn(config, steps_per_epoch)
  tx = create_optimizer(config, schedule)
  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)

  jit_init = jax.jit(functools.partial(create_train_state, model=model, tx=tx),
                     out_shardings=mesh.replicated)
  state = jit_init(init_rng)
  num_params = models.count_params(state.params)
  logging.info('Model %s: %d parameters.', config.model.name, num_params)

  manager = checkpointing.create_manager(workdir)
  if manager.latest_step() is not None:
    _, state = checkpointing.restore(manager, state)
    logging.info('Resumed from step %d.', int(state.step))
  p_train_step, p_eval_step = _compile_steps(config, mesh, train_rng,
                                             teacher)
  log = metric_logging.MetricsLog(workdir, int(state.step), config.tensorboard,
                                  is_main)
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=log.writer,
      every_steps=config.log_every_steps)

  try:
    with jax.set_mesh(mesh.mesh):
      state = _train_loop(state, config, data, mesh, p_train_step,
                          p_eval_step, manager, log, report_progress,
                          schedule, steps_per_epoch, total_steps)
      manager.wait_until_finished()
      final = _final_evaluation(manager, state, data, config, mesh,
                                p_eval_step)
  finally:
    # Whatever happened, finish the checkpoint writes and flush the metrics.
    manager.wait_until_finished()
    log.flush()
  final.update(phase=config.phase, model=config.model.name,
               distilled=bool(config.kd.enabled),
               num_params=num_params, step=int(state.step),
               wall_time_s=round(log.elapsed_s, 1),
               steps_per_epoch=steps_per_epoch, seed=config.seed,
               devices=f'{jax.device_count()}x {jax.devices()[0].device_kind}')
  log.write(final['best_step'], final['best_step'] / steps_per_epoch, 'test',
            loss=final['test_loss'], accuracy=final['test_accuracy'])
  log.close()
  if is_main:
    _write_json(os.path.join(workdir, 'final.json'), final)
  logging.info('Final: %s', final)
  manager.close()
  return state


def _train_loop(state, config, data, mesh, p_train_step, p_eval_step,
                manager, log, report_progress, schedule, steps_per_epoch,
                total_steps):
  """Steps from the state's step to the end; evaluates and saves per epoch.

  Returns:
    The state after the last step.
  """
  eval_every = config.eval_every_epochs * steps_per_epoch
  start_step = int(state.step)
  pending = []
  last_log = (start_step, time.time())
  for step in range(start_step, total_steps):
    images, labels = input_pipeline.train_batch(
        data['train'], step, config.batch_size, config.seed,
        jax.process_index(), jax.process_count())
    state, metrics = p_train_step(state, *mesh.put_batch(images, labels))
    pending.append(metrics)
    done = step + 1
    report_progress(done)
    at_eval = done % eval_every == 0 or done == total_steps
    if done % config.log_every_steps == 0 or at_eval:
      values = jax.device_get(pending)
      pending = []
      now = time.time()
      record = log.write(
          done, done / steps_per_epoch, 'train',
          **{k: np.mean([v[k] for v in values]) for k in values[0]},
          learning_rate=schedule(done - 1),
          examples_per_sec=(done - last_log[0]) * config.batch_size
          / (now - last_log[1]))
      last_log = (done, now)
      _check_finite(record)
    if at_eval:
      val, _ = evaluate(p_eval_step, state, data['val'],
                        config.eval_batch_size, mesh)
      record = log.write(done, done / steps_per_epoch, 'val',
                         **{k: v for k, v in val.items() if k != 'count'})
      _check_finite(record)
      checkpointing.save(manager, done, state, val['accuracy'])
      log.flush()
      last_log = (done, time.time())
  return state


def _final_evaluation(manager, state, data, config, mesh, eval_fn):
  """Val and test metrics of the best checkpoint (by val accuracy)."""
  best_step, best_state = checkpointing.restore(manager, state, which='best')
  results = {'best_step': int(best_step)}
  for split in ('val', 'test'):
    metrics, _ = evaluate(eval_fn, best_state, data[split],
                          config.eval_batch_size, mesh)
    results[f'{split}_examples'] = int(metrics.pop('count'))
    results.update({f'{split}_{k}': v for k, v in metrics.items()})
  return results
