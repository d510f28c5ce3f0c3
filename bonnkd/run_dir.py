"""A run directory: its files, its config, and restoring its state.

``train_and_evaluate(config, workdir)`` writes::

    WORKDIR/
      config.json              the resolved config          (CONFIG_FILE)
      metrics.jsonl            one JSON record a line       (METRICS_FILE)
      events.out.tfevents.*    the same scalars, TensorBoard
      checkpoints/<step>/      orbax: 2 latest, best by val (CHECKPOINT_DIR)
      final.json               val/test of the best checkpoint (FINAL_FILE)

Everything that reads a run (the trainer when it resumes, a teacher, ``python
-m bonnkd.inspect``, ``python -m bonnkd.report``) goes through this module.
A state is always restored onto the abstract train state of the run's own
``config.json`` placed as the caller asks (replicated on the current mesh,
or on one local device), so a checkpoint moves between machines with any
number of devices.
"""

import json
import os

import ml_collections

from bonnkd import checkpointing
from bonnkd import config_lib
from bonnkd import errors
from bonnkd import train_state

__all__ = ['CONFIG_FILE', 'METRICS_FILE', 'FINAL_FILE', 'CHECKPOINT_DIR',
           'resolve', 'read_config', 'write_config', 'check_same_run',
           'read_final', 'write_json', 'restore_state', 'restore_variables']

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
FINAL_FILE = 'final.json'
CHECKPOINT_DIR = checkpointing.CHECKPOINT_DIR

# Config keys that may differ when a run is resumed: where the data and the
# teacher are on this machine, how the run logs and evaluates, and the conv
# lowering (the same math).
RESUMABLE_CHANGES = ('data.source', 'data.dir', 'kd.teacher_workdir',
                     'eval_batch_size', 'log_every_steps', 'tensorboard',
                     'force_final_eval', 'model.conv_impl')

# Config keys added after runs were made, each with the value that does what
# a run without it did: a run directory whose config.json predates a key
# continues under a config that leaves the key at that value.
ADDED_LATER = {
    'dtype': 'float32',
    'eval_test': True,
    'bonn.kernel_weight': 0.0,
    'bonn.feature_weight': 0.0,
    'bonn.nu': 1e-4,
    'bonn.feature_momentum': 0.9,
    'bonn.kernel_loss_trains_modulation': True,
    # A ResNet had no binarization fields: it was full precision.
    'model.binarize': 'none',
    'model.binarize_what': 'both',
    'model.quantizer': 'ste_sign',
    'model.weight_scale': 'modulation',
}


def resolve(path: str) -> str:
  """The run directory of ``path``: a run directory or its checkpoints/.

  Raises:
    errors.NotARunError: ``path`` is neither (says what is missing).
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise errors.NotARunError(f'{path!r} does not exist or is not a folder.')
  if (os.path.basename(path) == CHECKPOINT_DIR
      and not os.path.exists(os.path.join(path, CONFIG_FILE))):
    path = os.path.dirname(path)
  if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
    raise errors.NotARunError(
        f'{path!r} is not a bonnkd run directory: it has no {CONFIG_FILE} '
        '(a run directory is the --workdir of launch.py).')
  return path


def read_config(run_dir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (its ``config.json``)."""
  path = os.path.join(resolve(run_dir), CONFIG_FILE)
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except json.JSONDecodeError as e:
    raise errors.NotARunError(f'{path!r} is not valid JSON: {e}.') from e


def write_json(path: str, obj) -> None:
  """Writes ``obj`` as JSON atomically (a crash leaves the old file).

  Raises:
    errors.StorageError: the disk is full or not writable.
  """
  tmp = path + '.tmp'
  try:
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
  except OSError as e:
    raise errors.StorageError(
        f'Could not write {path}: {e}. The files written before are kept.'
    ) from e


def check_same_run(run_dir: str, config) -> None:
  """Checks that ``config`` continues the run already in ``run_dir``.

  Raises:
    errors.ConfigError: the run directory holds a run of another config
      (names the keys that differ; those in RESUMABLE_CHANGES may).
  """
  if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
    return
  saved = config_lib.flatten(read_config(run_dir).to_dict())
  # Through JSON, as config.json was written: tuples become lists.
  wanted = config_lib.flatten(json.loads(json.dumps(config.to_dict())))
  saved = {**{k: v for k, v in ADDED_LATER.items() if k in wanted}, **saved}
  differ = sorted(k for k in set(saved) | set(wanted)
                  if saved.get(k) != wanted.get(k)
                  and k not in RESUMABLE_CHANGES)
  if differ:
    detail = ', '.join(f'{k}: {saved.get(k)!r} there, {wanted.get(k)!r} here'
                       for k in differ[:4])
    raise errors.ConfigError(
        f'--workdir={run_dir!r} holds a run of another config ({detail}'
        f'{" ..." if len(differ) > 4 else ""}). Resume it with its own '
        'config, or start this one in a new --workdir.')


def write_config(run_dir: str, config) -> None:
  write_json(os.path.join(run_dir, CONFIG_FILE), config.to_dict())


def read_final(run_dir: str) -> dict | None:
  """The run's ``final.json``, or None while it is not finished."""
  path = os.path.join(run_dir, FINAL_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise errors.NotARunError(
        f'{path} is damaged ({e}); delete it to evaluate the run again.'
    ) from e


def restore_state(run_dir: str, which: str = 'best', sharding=None,
                  config=None):
  """The train state of a run's best (or latest) checkpoint.

  Args:
    run_dir: a run directory (or its checkpoints/ folder).
    which: 'best' (by val accuracy) or 'latest'.
    sharding: where to place every array, e.g. a mesh's replicated
      sharding; None: this process's first local device.
    config: the run's config, if already read.

  Returns:
    (step, TrainState with ``apply_fn`` and ``tx`` unset).

  Raises:
    errors.NotARunError: not a run directory.
    checkpointing.NoCheckpointError: it holds no checkpoint.
    checkpointing.CheckpointMismatchError: the checkpoint does not fit the
      model of its config.json.
  """
  run_dir = resolve(run_dir)
  config = read_config(run_dir) if config is None else config
  if not os.path.isdir(checkpointing.checkpoint_dir(run_dir)):
    raise checkpointing.NoCheckpointError(
        f'{run_dir!r} holds no checkpoint yet (no {CHECKPOINT_DIR}/ folder).')
  target = train_state.abstract_train_state(config, sharding)
  manager = checkpointing.create_manager(run_dir, read_only=True)
  try:
    return checkpointing.restore(manager, target, which=which)
  finally:
    manager.close()


def restore_variables(run_dir: str, which: str = 'best', sharding=None):
  """``{'params', 'batch_stats'}`` of a run's best (or latest) checkpoint.

  As :func:`restore_state`, without the optimizer state.

  Returns:
    (step, {'params': ..., 'batch_stats': ...}).
  """
  step, state = restore_state(run_dir, which, sharding)
  return step, {'params': state.params, 'batch_stats': state.batch_stats}
