"""The run directory: one object that owns everything under WORKDIR/.

``train_and_evaluate(config, workdir)`` writes::

    WORKDIR/
      config.json              the resolved config          (CONFIG_FILE)
      metrics.jsonl            one JSON record a line       (METRICS_FILE)
      events.out.tfevents.*    the same scalars, TensorBoard
      checkpoints/<step>/      orbax: 2 latest, best by val (checkpoints.py)
      damaged_checkpoints/     steps a resume found damaged, moved aside
      final.json               val/test of the best checkpoint (FINAL_FILE)
      model.npz                the packed inference file (EXPORT_FILE),
                               where one was exported into the run: kept
                               when a run is committed without checkpoints
      lock                     while a run writes: its process and host

Everything that reads or writes a run (the trainer, a teacher, ``python -m
bonnkd.tools.inspect``, ``python -m bonnkd.tools.report``, the plan runner,
the start-up flag timing) opens a :class:`RunDir`; no other module knows
these names. Its :attr:`RunDir.config` is ``config.json`` read once with
the keys added after the run was made set to what the run did without them
(``ADDED_LATER``), so every reader sees a complete config.

The run directory imports neither models nor the train state: a caller
that restores a checkpoint passes the target (shapes, dtypes, placement;
``bonnkd.training.train_state.restore`` builds it from the run's config).

**One writer.** :meth:`RunDir.lock` holds ``WORKDIR/lock`` (an exclusive
``flock``) while a run writes: a second launch on the same workdir stops
before it writes anything, naming the process and host that hold it. The
kernel releases the lock when its process dies, so a run killed with
``kill -9`` does not block the next launch, which resumes. Under several
hosts the one process that writes (process 0) holds it. ``flock`` is
advisory and local to a machine's kernel on some network filesystems: two
hosts that both think they are process 0 of different jobs are not caught
there.
"""

import contextlib
import fcntl
import functools
import json
import os
import socket
import time

import ml_collections

from bonnkd import errors
from bonnkd import fileio
from bonnkd.config import overrides
from bonnkd.run import checkpoints
from bonnkd.run import metrics_log

__all__ = ['RunDir', 'RunInUseError', 'resolve', 'is_run', 'complete',
           'CONFIG_FILE', 'METRICS_FILE', 'FINAL_FILE', 'EXPORT_FILE',
           'LOCK_FILE',
           'ADDED_LATER', 'RESUMABLE_CHANGES']

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
FINAL_FILE = 'final.json'
# python -m bonnkd.export RUN_DIR --out RUN_DIR/model.npz
EXPORT_FILE = 'model.npz'
LOCK_FILE = 'lock'

# Config keys that may differ when a run is resumed: where the data and the
# teacher are on this machine, how the run logs and evaluates, and the conv
# lowering (the same math). ``eval_test``: a model-selection run (val only)
# chosen on val reads its test split once, from the same best checkpoint,
# with ``--config.eval_test=True --config.force_final_eval=True``.
RESUMABLE_CHANGES = ('data.source', 'data.dir', 'kd.teacher_workdir',
                     'eval_batch_size', 'log_every_steps', 'tensorboard',
                     'force_final_eval', 'eval_test', 'model.conv_impl')

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
    'bonn.min_variance': 1e-4,
    'bonn.feature_normalization': 'none',
    'bonn.kernel_loss_trains_modulation': True,
    'bonn.feature_reduction': 'mean',
    'optim.name': 'sgd',
    'optim.latent_weight_decay': -1.0,
    # A ResNet had no binarization fields: it was full precision.
    'model.binarize': 'none',
    'model.binarize_what': 'both',
    'model.quantizer': 'ste_sign',
    'model.weight_scale': 'modulation',
    'model.shortcuts': 'block',
    'model.modulation_init': 'xnor',
}


class RunInUseError(errors.UserError):
  """Another process is writing the run directory."""


def is_run(path: str) -> bool:
  """Whether ``path`` is a run directory (it has a ``config.json``)."""
  return os.path.isfile(os.path.join(path, CONFIG_FILE))


def resolve(path: str) -> str:
  """The run directory of ``path``: a run directory or its checkpoints/.

  Raises:
    errors.NotARunError: ``path`` is neither (says what is missing).
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise errors.NotARunError(f'{path!r} does not exist or is not a folder.')
  if (os.path.basename(path) == checkpoints.CHECKPOINT_DIR
      and not os.path.exists(os.path.join(path, CONFIG_FILE))):
    path = os.path.dirname(path)
  if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
    raise errors.NotARunError(
        f'{path!r} is not a bonnkd run directory: it has no {CONFIG_FILE} '
        '(a run directory is the --workdir of launch.py).')
  return path


def complete(saved: dict) -> ml_collections.ConfigDict:
  """A saved config with every key of ``ADDED_LATER`` it lacks set."""
  config = ml_collections.ConfigDict(saved)
  for key, value in ADDED_LATER.items():
    *parents, leaf = key.split('.')
    node = config
    for name in parents:
      if name not in node:
        node[name] = ml_collections.ConfigDict()
      node = node[name]
    if leaf not in node:
      node[leaf] = value
  return config


class RunDir:
  """Everything under one WORKDIR: config, metrics, checkpoints, final.json.

  ``RunDir(path)`` is any directory, a run or not yet (the trainer's
  workdir); :meth:`open` is an existing run (or its ``checkpoints/``
  folder), for readers.
  """

  def __init__(self, path: str):
    self.path = os.path.abspath(os.fspath(path))
    self._metrics_log = None

  @classmethod
  def open(cls, path: str) -> 'RunDir':
    """An existing run directory (or its checkpoints/ folder).

    Raises:
      errors.NotARunError: ``path`` is not one (says what is missing).
    """
    return cls(resolve(path))

  def _file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def name(self) -> str:
    return os.path.basename(self.path)

  def exists(self) -> bool:
    """Whether a run was started here (its ``config.json`` is written)."""
    return is_run(self.path)

  # The config.

  @functools.cached_property
  def config(self) -> ml_collections.ConfigDict:
    """``config.json``, read once, completed with ``ADDED_LATER``.

    Raises:
      errors.NotARunError: there is no ``config.json``, or it is damaged.
    """
    path = self._file(CONFIG_FILE)
    if not os.path.isfile(path):
      raise errors.NotARunError(
          f'{self.path!r} is not a bonnkd run directory: it has no '
          f'{CONFIG_FILE} (a run directory is the --workdir of launch.py).')
    try:
      with open(path) as f:
        return complete(json.load(f))
    except json.JSONDecodeError as e:
      raise errors.NotARunError(f'{path!r} is not valid JSON: {e}.') from e

  def write_config(self, config) -> None:
    os.makedirs(self.path, exist_ok=True)
    fileio.write_json(self._file(CONFIG_FILE), config.to_dict())
    self.__dict__.pop('config', None)

  def check_same_run(self, config) -> None:
    """Checks that ``config`` continues the run already here, if any.

    Raises:
      errors.ConfigError: the directory holds a run of another config
        (names the keys that differ; those in RESUMABLE_CHANGES may).
    """
    if not self.exists():
      return
    saved = overrides.flatten(self.config.to_dict())
    # Through JSON, as config.json was written: tuples become lists.
    wanted = overrides.flatten(json.loads(json.dumps(config.to_dict())))
    differ = sorted(k for k in set(saved) | set(wanted)
                    if saved.get(k) != wanted.get(k)
                    and k not in RESUMABLE_CHANGES)
    if differ:
      detail = ', '.join(
          f'{k}: {saved.get(k)!r} there, {wanted.get(k)!r} here'
          for k in differ[:4])
      raise errors.ConfigError(
          f'--workdir={self.path!r} holds a run of another config ({detail}'
          f'{" ..." if len(differ) > 4 else ""}). Resume it with its own '
          'config, or start this one in a new --workdir.')

  # final.json.

  def final(self) -> dict | None:
    """The run's ``final.json``, or None while it is not finished."""
    path = self._file(FINAL_FILE)
    if not os.path.exists(path):
      return None
    try:
      with open(path) as f:
        return json.load(f)
    except json.JSONDecodeError as e:
      raise errors.NotARunError(
          f'{path} is damaged ({e}); delete it to evaluate the run again.'
      ) from e

  def finished_final(self) -> dict:
    """``final.json`` of a finished run.

    Raises:
      errors.NotARunError: the run is not finished.
    """
    final = self.final()
    if final is None:
      raise errors.NotARunError(
          f'{self.path!r} has no {FINAL_FILE}: the run is not finished (run '
          'its launch.py command again to finish it).')
    return final

  def write_final(self, final: dict) -> None:
    fileio.write_json(self._file(FINAL_FILE), final)

  def exported_model(self) -> str | None:
    """The path of the run's ``model.npz`` (``bonnkd.export``), or None."""
    path = self._file(EXPORT_FILE)
    return path if os.path.isfile(path) else None

  # metrics.jsonl and TensorBoard.

  def metrics(self) -> list[dict]:
    """The records of ``metrics.jsonl`` (lines cut short are skipped)."""
    return metrics_log.read_jsonl(self._file(METRICS_FILE))

  def open_metrics_log(self, resume_step: int = 0, tensorboard: bool = True,
                       is_main: bool = True) -> metrics_log.MetricsLog:
    """The log a run appends to; records past ``resume_step`` are dropped."""
    self._metrics_log = metrics_log.MetricsLog(
        self._file(METRICS_FILE), resume_step, tensorboard, is_main)
    return self._metrics_log

  def check_best_reproduces(self, step: int, val_accuracy: float,
                            tolerance: float) -> None:
    """Checks the best checkpoint's val accuracy, evaluated again.

    The value logged when step ``step`` was saved (the open metrics log's,
    else ``metrics.jsonl``'s) must be within ``tolerance``.

    Raises:
      checkpoints.CheckpointDamagedError: it is not: the checkpoint restores
        but is not the state that was evaluated.
    """
    if self._metrics_log is not None:
      logged = self._metrics_log.logged(step, 'val')
    else:
      logged = next((r for r in self.metrics()
                     if r['step'] == step and r['split'] == 'val'), None)
    if logged is not None and abs(logged['accuracy'] - val_accuracy) > (
        tolerance):
      raise checkpoints.CheckpointDamagedError(
          f'The best checkpoint (step {step}) under '
          f'{checkpoints.checkpoint_dir(self.path)} evaluates to val accuracy '
          f'{val_accuracy:.4f}, but {logged["accuracy"]:.4f} was logged when '
          'it was saved: it is not the state that was evaluated. final.json '
          'is not written.')

  # Checkpoints.

  def checkpoints(self, read_only: bool = False) -> checkpoints.Checkpoints:
    """The run's orbax checkpoints (a context manager)."""
    if read_only and not os.path.isdir(checkpoints.checkpoint_dir(self.path)):
      raise checkpoints.NoCheckpointError(
          f'{self.path!r} holds no checkpoint yet (no '
          f'{checkpoints.CHECKPOINT_DIR}/ folder).')
    return checkpoints.Checkpoints(self.path, read_only=read_only)

  def has_checkpoints(self) -> bool:
    """Whether the run has a ``checkpoints/`` folder with a step in it."""
    path = checkpoints.checkpoint_dir(self.path)
    return os.path.isdir(path) and any(
        name.isdigit() for name in os.listdir(path))

  def restore(self, target, which: str = 'best'):
    """(step, state) of the best (or latest) checkpoint, onto ``target``.

    Raises:
      checkpoints.NoCheckpointError: no checkpoint yet.
      checkpoints.CheckpointDamagedError: its files are not those saved.
      checkpoints.CheckpointMismatchError: it does not fit ``target``.
    """
    with self.checkpoints(read_only=True) as ckpts:
      return ckpts.restore(target, which=which)

  # The lock.

  @contextlib.contextmanager
  def lock(self):
    """Holds ``WORKDIR/lock`` while the body writes the run.

    A directory this creates and leaves empty is removed again (a launch
    stopped by a user error writes nothing).

    Raises:
      RunInUseError: another live process holds it (names its pid, host and
        start time).
    """
    created = not os.path.isdir(self.path)
    os.makedirs(self.path, exist_ok=True)
    path = self._file(LOCK_FILE)
    f = _acquire(path)
    try:
      f.seek(0)
      f.truncate()
      f.write(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                          'since': time.strftime('%Y-%m-%d %H:%M:%S')}))
      f.flush()
      yield self
    finally:
      os.unlink(path)
      f.close()
      if created and not os.listdir(self.path):
        os.rmdir(self.path)


def _acquire(path: str):
  """The open lock file at ``path``, exclusively flock-ed by this process.

  A lock file unlinked by its releasing holder between our open and our
  flock is not the lock any more: take the new one.
  """
  while True:
    f = open(path, 'a+')  # pylint: disable=consider-using-with
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read()
      f.close()
      raise RunInUseError(_in_use_message(os.path.dirname(path), holder))
    try:
      same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if same:
      return f
    f.close()


def _in_use_message(workdir: str, holder: str) -> str:
  try:
    who = json.loads(holder)
    by = (f"process {who['pid']} on host {who['host']} (since "
          f"{who['since']})")
  except (ValueError, KeyError, TypeError):
    by = 'another process'
  return (f'--workdir={workdir!r} is in use: {by} is writing it. Wait for '
          'it to finish or stop it, then run the same command to resume; or '
          'use another --workdir.')
