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

from collections.abc import Callable
import contextlib
import dataclasses
import functools
import math
import os
import time
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bonnkd import models
from bonnkd.binary import bayesian_losses
from bonnkd.config import defaults
from bonnkd.config import validation
from bonnkd.cpu import conv_autotune
from bonnkd.data import augment
from bonnkd.data import input_pipeline
from bonnkd.run import checkpoints
from bonnkd.run import metrics_log
from bonnkd.run import run_dir
from bonnkd.training import evaluation
from bonnkd.training import losses
from bonnkd.training import sharding as sharding_lib
from bonnkd.training import teacher as teacher_lib
from bonnkd.training import train_state as train_state_lib

__all__ = [
    'validate_config',
    'train_step',
    'Setup',
    'setup',
    'train_and_evaluate',
]

TrainState = train_state_lib.TrainState


def validate_config(config, num_devices: int = 1) -> None:
  """Every check of a config, before anything is written or compiled.

  Raises:
    errors.ConfigError: naming the first invalid key, its value and what
      was expected.
  """
  validation.validate(config, num_devices)
  models.validate_config(config.model, config.dtype)
  input_pipeline.validate_config(config.data)
  if config.bonn.kernel_weight > 0:
    validation.check(
        models.has_modulated_binary_weights(config.model),
        'bonn.kernel_weight', config.bonn.kernel_weight,
        "0 unless the model has 1-bit weights with weight_scale="
        "'modulation' or 'layer_modulation' (BONN's kernel loss "
        "regularises those)")
  validation.check(
      config.bonn.feature_reduction in bayesian_losses.FEATURE_REDUCTIONS,
      'bonn.feature_reduction', config.bonn.feature_reduction,
      f'one of {bayesian_losses.FEATURE_REDUCTIONS}')
  if config.tensorboard:
    metrics_log.clu_metric_writers()


def train_step(state: TrainState, images, labels, teacher_variables=None, *,
               rng, config, teacher: teacher_lib.Teacher | None = None):
  """One SGD step on a uint8 batch: augment, forward, backward, update.

  The augmentation and dropout keys are ``fold_in(rng, step)``: a resumed run
  draws exactly the randomness of an uninterrupted one. With a ``teacher``
  (phase 2), the teacher sees the same augmented batch in the same step
  (Beyer et al. 2022, "consistent" distillation) and the loss is
  :func:`bonnkd.training.losses.kd_loss`, whose CE term gets the label
  smoothing.

  With ``config.bonn.kernel_weight`` (lambda) or ``feature_weight``
  (theta) above 0, BONN's Bayesian losses are added
  (:mod:`bonnkd.binary.bayesian_losses`): the kernel loss of every 1-bit
  conv with a modulation vector, and the feature loss against the running class
  statistics, which the step then updates.

  Returns:
    (new state, metrics of the batch: 'loss' (plain cross-entropy, comparable
    across runs) and 'accuracy'; with a teacher also 'kd_loss' (the loss
    optimised), 'kl' and 'agreement'; with BONN's losses 'kernel_loss' and
    'feature_loss', unweighted).
  """
  bonn = config.bonn
  kernel_weight, feature_weight = bonn.kernel_weight, bonn.feature_weight
  # The feature loss and the class statistics in the state go together.
  feature_loss = train_state_lib.uses_class_stats(config)
  step_rng = jax.random.fold_in(rng, state.step)
  aug_rng, dropout_rng = jax.random.split(step_rng)
  images = augment.random_crop_flip(aug_rng, images,
                                    config.data.crop_padding,
                                    config.data.flip)
  images = augment.normalize(images)
  teacher_logits = (None if teacher is None
                    else teacher.logits(teacher_variables, images))

  def loss_fn(params):
    mutable = ['batch_stats'] + (['intermediates'] if feature_loss else [])
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images,
        train=True, mutable=mutable, rngs={'dropout': dropout_rng})
    if teacher is None:
      loss = jnp.mean(losses.cross_entropy(logits, labels,
                                           config.optim.label_smoothing))
      aux = {}
    else:
      loss, aux = losses.kd_loss(logits, teacher_logits, labels,
                                 config.kd.alpha, config.kd.temperature,
                                 config.optim.label_smoothing)
    if kernel_weight:
      aux['kernel_loss'] = bayesian_losses.network_kernel_loss(
          params, bonn.nu, bonn.kernel_loss_trains_modulation)
      loss += kernel_weight * aux['kernel_loss']
    if feature_loss:
      aux['features'] = updates.pop('intermediates')['features'][0]
      if bonn.feature_normalization == 'batch':
        aux['features'] = bayesian_losses.standardize(aux['features'])
      aux['feature_loss'] = bayesian_losses.feature_loss(
          aux['features'], labels, state.class_stats['centres'],
          state.class_stats['variances'], bonn.feature_reduction)
      loss += feature_weight * aux['feature_loss']
    return loss, (logits, updates, aux)

  (loss, (logits, updates, aux)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  predictions = jnp.argmax(logits, -1)
  metrics = {
      'loss': jnp.mean(losses.cross_entropy(logits, labels)),
      'accuracy': jnp.mean(predictions == labels),
  }
  if teacher is not None:
    metrics['kd_loss'] = loss
    metrics['kl'] = aux['kl']
    metrics['agreement'] = jnp.mean(
        predictions == jnp.argmax(teacher_logits, -1))
  class_stats = state.class_stats
  for name in ('kernel_loss', 'feature_loss'):
    if name in aux:
      metrics[name] = aux[name]
  if feature_loss:
    centres, variances = bayesian_losses.update_class_statistics(
        class_stats['centres'], class_stats['variances'], aux['features'],
        labels, bonn.feature_momentum, bonn.min_variance)
    class_stats = {'centres': centres, 'variances': variances}
  state = state.apply_gradients(grads=grads,
                                batch_stats=updates['batch_stats'],
                                class_stats=class_stats)
  return state, metrics


@dataclasses.dataclass
class Setup:
  """Everything a run computes with, built once by :func:`setup`.

  Attributes:
    config: the config it was built from.
    mesh: the data-parallel mesh (all devices unless asked otherwise).
    model: the flax module.
    schedule: the learning rate per step.
    state: the initial train state, replicated on ``mesh``.
    train_step_at: jitted ``(state, train_images, train_labels, indices) ->
      (state, metrics)``: :func:`train_step` on the rows ``indices``
      (sharded over 'data') of the train split held on the devices
      (:meth:`put_train_split`), gathered inside the compiled step; it
      donates ``state``.
    eval_step: jitted ``(variables, images, labels, mask) -> (sums,
      (predictions, mask))`` (:func:`bonnkd.training.evaluation.make_eval_fn`).
    teacher: the frozen teacher with KD, else None.
    steps_per_epoch: optimizer steps per pass over the train split.
    total_steps: steps of the whole run.
  """

  config: Any
  mesh: sharding_lib.DataParallelMesh
  model: nn.Module
  schedule: optax.Schedule
  state: TrainState
  train_step_at: Callable
  eval_step: Callable
  teacher: teacher_lib.Teacher | None
  steps_per_epoch: int
  total_steps: int

  def put_train_split(self, split: input_pipeline.Split):
    """The train split on every device (uint8: 150 MB for CIFAR-10)."""
    return tuple(jax.make_array_from_process_local_data(
        self.mesh.replicated, a) for a in (split.images, split.labels))


def setup(config, num_train_examples: int, *, devices=None,
          teacher: teacher_lib.Teacher | None = None) -> Setup:
  """Model, optimizer, initial state, mesh and compiled steps of ``config``.

  The one place they are built: ``train_and_evaluate``, the benchmarks and
  the tests all use it.

  Args:
    config: a validated config.
    num_train_examples: size of the train split (sets the schedule).
    devices: the devices of the mesh (default: all).
    teacher: with ``config.kd.enabled``, the teacher to use; None restores
      it from ``config.kd.teacher_workdir``.
  """
  mesh = sharding_lib.DataParallelMesh(devices)
  if config.kd.enabled and teacher is None:
    teacher = teacher_lib.load_teacher(config.kd.teacher_workdir,
                                       mesh.replicated)
  teacher = teacher if config.kd.enabled else None
  steps_per_epoch = defaults.steps_per_epoch(num_train_examples,
                                             config.batch_size)
  model = models.create_model(config.model, dtype=config.dtype)
  if jax.process_count() == 1:
    # Every process of a multi-process job must compile the same program:
    # there 'auto' keeps the native convolution rather than each measuring.
    for m in [model] + ([teacher.model] if teacher else []):
      conv_autotune.tune(m, config.batch_size // mesh.size)
  schedule = train_state_lib.learning_rate_fn(config, steps_per_epoch)
  tx = train_state_lib.create_optimizer(config, schedule)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  state = jax.jit(
      functools.partial(
          train_state_lib.create_train_state, model=model, tx=tx,
          class_stats=train_state_lib.uses_class_stats(config)),
      out_shardings=mesh.replicated)(init_rng)

  def step_at(state, train_images, train_labels, indices, teacher_variables):
    return train_step(state, train_images[indices], train_labels[indices],
                      teacher_variables, rng=train_rng, config=config,
                      teacher=teacher)

  train_at_fn = teacher_lib.bind_variables(jax.jit(
      step_at,
      in_shardings=(mesh.replicated, mesh.replicated, mesh.replicated,
                    mesh.batch, mesh.replicated),
      out_shardings=(mesh.replicated, mesh.replicated),
      donate_argnums=(0,)), teacher, mesh)
  eval_fn = evaluation.make_eval_fn(model, mesh, teacher,
                                    config.kd.temperature)
  return Setup(config=config, mesh=mesh, model=model, schedule=schedule,
               state=state, train_step_at=train_at_fn,
               eval_step=eval_fn,
               teacher=teacher, steps_per_epoch=steps_per_epoch,
               total_steps=defaults.num_train_steps(config,
                                                      num_train_examples))


def _check_finite(record: dict[str, Any]) -> None:
  for name in ('loss', 'accuracy'):
    if not math.isfinite(record[name]):
      raise FloatingPointError(
          f'Non-finite {record["split"]} {name}={record[name]} at step '
          f'{record["step"]} (epoch {record["epoch"]}); stopping. '
          'Checkpoints and metrics written so far are kept.')


def _report_finished(run: run_dir.RunDir, final: dict) -> TrainState | None:
  """A finished run is finished: report its final.json, change nothing."""
  logging.info('%s is a finished run (its final.json: test accuracy %s, '
               'val accuracy %.4f at step %d); nothing to do. Delete '
               'final.json or pass --config.force_final_eval=True to '
               'evaluate its best checkpoint again.', run.path,
               final.get('test_accuracy', 'not evaluated'),
               final['val_accuracy'], final['best_step'])
  mesh = sharding_lib.DataParallelMesh()
  try:
    _, state = train_state_lib.restore(run, 'latest', mesh.replicated)
  except checkpoints.CheckpointDamagedError as e:
    # final.json stands on its own; only the state to return is missing.
    logging.warning('%s final.json is left as it is; returning no state.', e)
    return None
  return state


def train_and_evaluate(config, workdir: str) -> TrainState | None:
  """Trains ``config`` in ``workdir``, resuming if it holds a checkpoint.

  Writes ``config.json``, ``metrics.jsonl``, TensorBoard events, orbax
  checkpoints (two latest and best by val accuracy, each with its digest) and,
  at the end, ``final.json`` with val and test accuracy of the best
  checkpoint (:class:`bonnkd.run.run_dir.RunDir`), holding the workdir's lock
  meanwhile. Resuming skips damaged checkpoints. A finished run (one with
  ``final.json``) is reported and left as it is unless
  ``config.force_final_eval``.

  Returns:
    The final train state (of a finished run: its latest checkpoint, or
    None if that is damaged).

  Raises:
    errors.UserError: an invalid config, a workdir of another config or in
      use by another process, missing or damaged data or teacher (before
      anything is written or compiled), damaged checkpoints, a full disk.
  """
  validate_config(config, jax.device_count())
  run = run_dir.RunDir(workdir)
  run.check_same_run(config)
  final = run.final()
  if final is not None and not config.force_final_eval:
    return _report_finished(run, final)
  is_main = jax.process_index() == 0
  # One writer: the main process holds the workdir while the run writes.
  with run.lock() if is_main else contextlib.nullcontext():
    return _train_and_evaluate(config, run, is_main)


def _train_and_evaluate(config, run: run_dir.RunDir, is_main: bool):
  data = input_pipeline.load_splits(config.data)
  logging.info('Data: %s', {k: len(v) for k, v in data.items()})
  setup_ = setup(config, len(data['train']))
  if is_main:
    run.write_config(config)
  num_params = models.count_params(setup_.state.params)
  logging.info('Model %s: %d parameters.', config.model.name, num_params)

  ckpts = run.checkpoints()
  # Onto the live state: this mesh's placement, whatever wrote it.
  step, restored = ckpts.restore_newest_sound(setup_.state)
  state = setup_.state if restored is None else restored
  if step is not None:
    logging.info('Resumed from step %d.', step)
  log = run.open_metrics_log(int(state.step), config.tensorboard, is_main)

  try:
    with jax.set_mesh(setup_.mesh.mesh):
      state = _train_loop(setup_, state, data, ckpts, log)
      ckpts.wait()
      final = _final_evaluation(setup_, run, ckpts, state, data)
  finally:
    # Whatever happened, finish the checkpoint writes and flush the metrics.
    ckpts.wait()
    log.flush()
  final.update(phase=config.phase, model=config.model.name,
               distilled=bool(config.kd.enabled),
               num_params=num_params, step=int(state.step),
               wall_time_s=round(log.elapsed_s, 1),
               steps_per_epoch=setup_.steps_per_epoch, seed=config.seed,
               devices=f'{jax.device_count()}x {jax.devices()[0].device_kind}',
               xla_flags=os.environ.get('XLA_FLAGS', ''))
  if config.eval_test:
    log.write(final['best_step'], final['best_step'] / setup_.steps_per_epoch,
              'test', loss=final['test_loss'],
              accuracy=final['test_accuracy'])
  log.close()
  if is_main:
    run.write_final(final)
  logging.info('Final: %s', final)
  ckpts.close()
  return state


def _train_loop(setup_: Setup, state, data, ckpts, log):
  """Steps from the state's step to the end; evaluates and saves per epoch.

  Returns:
    The state after the last step.
  """
  config = setup_.config
  eval_every = config.eval_every_epochs * setup_.steps_per_epoch
  start_step = int(state.step)

  def evaluates_at(done):
    return done % eval_every == 0 or done == setup_.total_steps

  def logs_at(done):  # Where the loop waits for the steps it dispatched.
    return done % config.log_every_steps == 0 or evaluates_at(done)

  report_progress = _progress_report(setup_, log, [
      done for done in range(start_step + 1, setup_.total_steps + 1)
      if logs_at(done)])
  pending = []
  last_log = (start_step, time.time())
  # The host sends only the indices of each batch.
  train_on_devices = setup_.put_train_split(data['train'])
  for step in range(start_step, setup_.total_steps):
    indices = input_pipeline.train_indices(
        len(data['train']), step, config.batch_size, config.seed,
        jax.process_index(), jax.process_count())
    state, metrics = setup_.train_step_at(state, *train_on_devices,
                                       *setup_.mesh.put_batch(indices))
    pending.append(metrics)
    done = step + 1
    at_eval = evaluates_at(done)
    if logs_at(done):
      values = jax.device_get(pending)  # Waits for the steps dispatched.
      report_progress(done)
      pending = []
      now = time.time()
      record = log.write(
          done, done / setup_.steps_per_epoch, 'train',
          **{k: np.mean([v[k] for v in values]) for k in values[0]},
          learning_rate=setup_.schedule(done - 1),
          examples_per_sec=(done - last_log[0]) * config.batch_size
          / (now - last_log[1]))
      last_log = (done, now)
      _check_finite(record)
    if at_eval:
      with report_progress.timed('eval', wait_jax_async_dispatch=False):
        val, _ = evaluation.evaluate(setup_.eval_step,
                                     train_state_lib.variables_of(state),
                                     data['val'], config.eval_batch_size,
                                     setup_.mesh)
      record = log.write(done, done / setup_.steps_per_epoch, 'val',
                         **{k: v for k, v in val.items() if k != 'count'})
      _check_finite(record)
      ckpts.save(done, state, val['accuracy'])
      log.flush()
      last_log = (done, time.time())
  return state


def _progress_report(setup_: Setup, log, waits_at: list[int]):
  """clu's progress report (steps/s, ETA) at ``waits_at``, and only there.

  Steps are dispatched asynchronously and the loop waits for them only where
  it logs their metrics; a report on a clock of its own (clu's default, every
  60 s) would time the dispatch of steps still queued (BONN's WRN-16-3 on 2
  CPU cores: 0.78 steps/s and an ETA of 57 min, then one step in 117 s, for
  a run of 0.26 steps/s). clu's periodic actions import TensorFlow; where it
  is not installed (``config.tensorboard=False`` allows that) there is no
  report, and ``metrics.jsonl``'s ``elapsed_s`` still times the run.
  """
  try:
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    logging.info('No progress report (clu needs TensorFlow: %s).', e)
    return _NoProgressReport()
  return periodic_actions.ReportProgress(
      num_train_steps=setup_.total_steps, writer=log.writer, every_secs=None,
      on_steps=waits_at)


class _NoProgressReport:
  """What the loop calls on clu's ReportProgress, doing nothing."""

  def __call__(self, step: int) -> bool:
    del step
    return False

  @contextlib.contextmanager
  def timed(self, name: str, wait_jax_async_dispatch: bool = True):
    del name, wait_jax_async_dispatch
    yield


# How far the best checkpoint's val accuracy, evaluated again, may be from the
# value logged when it was saved: evaluation is deterministic on one device
# count; another count (a resumed run) may flip a near-tie prediction.
_VAL_REPRODUCTION_TOLERANCE = 0.005


def _final_evaluation(setup_: Setup, run: run_dir.RunDir, ckpts, state,
                      data):
  """Val and test metrics of the best checkpoint (by val accuracy).

  The best checkpoint's val accuracy is evaluated again and compared with
  the one logged when it was saved (:meth:`RunDir.check_best_reproduces`):
  a checkpoint that restores but is not what was evaluated stops the run
  here, before final.json is written.
  """
  best_step, best_state = ckpts.restore(state, which='best')
  results = {'best_step': int(best_step)}
  config = setup_.config
  for split in ('val', 'test') if config.eval_test else ('val',):
    metrics, _ = evaluation.evaluate(setup_.eval_step,
                                     train_state_lib.variables_of(best_state),
                                     data[split], config.eval_batch_size,
                                     setup_.mesh)
    results[f'{split}_examples'] = int(metrics.pop('count'))
    results.update({f'{split}_{k}': v for k, v in metrics.items()})
    if split == 'val':
      run.check_best_reproduces(best_step, results['val_accuracy'],
                                _VAL_REPRODUCTION_TOLERANCE)
  return results
