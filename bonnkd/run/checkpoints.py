"""Every orbax call of bonnkd: save, resume, keep the best, restore.

A run's checkpoints live in ``WORKDIR/checkpoints/<step>/state``, written by
``orbax.checkpoint.CheckpointManager``; a run reaches them through its
:class:`bonnkd.run.run_dir.RunDir` (``run.checkpoints()``, a
:class:`Checkpoints`). Kept are the two latest (to resume,
the older one in case the newer is damaged) and the one with the best
validation accuracy (for the final numbers and for distillation). Each
holds the whole train state as a plain pytree::

    {'step', 'params', 'batch_stats', 'opt_state'}

and carries ``{'val_accuracy': ...}`` as its metrics.

**Verified.** Orbax does not check the bytes it reads. Once orbax has
committed a step, :func:`save` writes ``<step>/bonnkd_digest.json``: the
size and SHA-256 of every file of the step. Every restore first checks them
(:func:`verify`): a file missing, truncated or changed, or a step without
its digest (the run stopped while saving it) raises a
:class:`CheckpointDamagedError` naming the step and the file, before orbax
reads anything. Resuming falls back to the newest sound step
(:func:`restore_newest_sound`), moving damaged ones aside, not deleting them.

Every restore gives
orbax a target (shapes, dtypes and the placement wanted *here*), so a
checkpoint written on 4 devices restores on 1, and back; see
``bonnkd.training.train_state.restore`` for restoring a run's state from its
config. To read one
with orbax alone (no bonnkd), on this machine's first device::

    import jax, orbax.checkpoint as ocp
    mngr = ocp.CheckpointManager(
        'WORKDIR/checkpoints', options=ocp.CheckpointManagerOptions(
            best_fn=lambda m: m['val_accuracy'], read_only=True))
    step = mngr.best_step()          # or mngr.latest_step()
    # Where the saving run's placement does not exist here (it had 4 devices,
    # this machine has 1), orbax falls back to this one.
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(fallback_sharding=here)))['state']
    state['params']                  # nested dict of arrays
"""

import hashlib
import json
import os
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from bonnkd import errors
from bonnkd import fileio

__all__ = ['Checkpoints', 'CHECKPOINT_DIR', 'DAMAGED_DIR', 'DIGEST_FILE',
           'checkpoint_dir',
           'create_manager', 'save', 'verify', 'restore',
           'restore_newest_sound', 'NoCheckpointError',
           'CheckpointMismatchError', 'CheckpointDamagedError']

CHECKPOINT_DIR = 'checkpoints'
# Damaged steps are moved here (under the workdir) when a resume skips them.
DAMAGED_DIR = 'damaged_checkpoints'
DIGEST_FILE = 'bonnkd_digest.json'
_BEST_METRIC = 'val_accuracy'


class NoCheckpointError(errors.NotARunError):
  """A directory that should hold bonnkd checkpoints holds none."""


class CheckpointMismatchError(errors.UserError, ValueError):
  """A checkpoint does not fit the model and optimizer of the config."""


class CheckpointDamagedError(errors.UserError):
  """A checkpoint's files are not those that were saved (names step, file)."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def create_manager(workdir: str, read_only: bool = False):
  """A manager keeping the two latest checkpoints and the best by val acc."""
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      # Two latest: a damaged newest one leaves one to resume from.
      ocp.checkpoint_managers.LatestN(n=2),
      ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[_BEST_METRIC], n=1,
          keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy,
      best_fn=lambda metrics: metrics[_BEST_METRIC],
      best_mode='max',
      create=not read_only,
      read_only=read_only,
  )
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler()})


def _step_dir(manager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


def _file_digests(step_dir: str) -> dict[str, list]:
  """{relative path: [size, sha256]} of every file of a checkpoint step."""
  digests = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, step_dir)
      if relative.startswith(DIGEST_FILE):  # The digest and its temp file.
        continue
      sha = hashlib.sha256()
      with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
          sha.update(chunk)
      digests[relative] = [os.path.getsize(path), sha.hexdigest()]
  return dict(sorted(digests.items()))


def save(manager, step: int, state, val_accuracy: float) -> None:
  """Saves ``state`` as ``step``, waits for orbax's commit, writes its digest.

  Raises:
    errors.StorageError: the disk is full or not writable; the checkpoints
      written before are untouched.
  """
  try:
    manager.save(step,
                 args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                 metrics={_BEST_METRIC: float(val_accuracy)})
    manager.wait_until_finished()
    if jax.process_index() == 0:
      _write_digest(_step_dir(manager, step))
    if jax.process_count() > 1:
      # No process may read the step before its digest is there.
      multihost_utils.sync_global_devices(f'bonnkd_digest_{step}')
  except OSError as e:
    raise errors.StorageError(
        f'Could not write the checkpoint of step {step} under '
        f'{manager.directory}: {e}. The checkpoints written before are '
        'kept; free space and run the same command to resume.') from e


def _write_digest(step_dir: str) -> None:
  """Writes the step's digest atomically (a crash leaves none, not half)."""
  fileio.write_json(os.path.join(step_dir, DIGEST_FILE),
                    {'files': _file_digests(step_dir)}, indent=1)


def verify(manager, step: int) -> None:
  """Checks every file of ``step`` against its digest.

  Raises:
    CheckpointDamagedError: naming the step and the first files missing,
      truncated or changed, or saying that the digest itself is missing.
  """
  step_dir = _step_dir(manager, step)
  digest_path = os.path.join(step_dir, DIGEST_FILE)
  try:
    with open(digest_path) as f:
      expected = json.load(f)['files']
  except FileNotFoundError:
    raise CheckpointDamagedError(
        f'The checkpoint at step {step} ({step_dir}) has no {DIGEST_FILE}: '
        'it was not completely written (the run stopped while saving it?).'
    ) from None
  except (ValueError, KeyError) as e:
    raise CheckpointDamagedError(
        f'The checkpoint at step {step}: {digest_path} is damaged ({e}).'
    ) from e
  found = _file_digests(step_dir)
  problems = []
  for relative, (size, sha) in expected.items():
    if relative not in found:
      problems.append(f'{relative} is missing')
    elif found[relative][0] != size:
      problems.append(f'{relative} has {found[relative][0]} bytes, '
                      f'{size} were saved')
    elif found[relative][1] != sha:
      problems.append(f'{relative} differs from what was saved (SHA-256)')
  if problems:
    more = f' (+{len(problems) - 3} more)' if len(problems) > 3 else ''
    raise CheckpointDamagedError(
        f'The checkpoint at step {step} ({step_dir}) is damaged: '
        f'{"; ".join(problems[:3])}{more}.')


def restore(manager, target, step: int | None = None, which: str = 'latest'):
  """Restores ``step`` (or the 'latest' / 'best' one) onto ``target``.

  Args:
    manager: from :func:`create_manager`.
    target: a pytree of arrays or ``jax.ShapeDtypeStruct`` giving the
      structure, shapes, dtypes and placement to restore to (a leaf with no
      sharding restores as a numpy array), e.g. the live train state or
      ``bonnkd.training.train_state.abstract_train_state(config, sharding)``.
    step: an explicit step, or None to use ``which``.
    which: 'latest' or 'best'.

  Returns:
    (step, restored pytree of ``target``'s type).

  Raises:
    NoCheckpointError: no checkpoint in the manager's directory.
    CheckpointMismatchError: the checkpoint does not fit ``target``.
  """
  if step is None:
    step = manager.latest_step() if which == 'latest' else manager.best_step()
  if step is None:
    raise NoCheckpointError(
        f'No {which} checkpoint under {manager.directory}.')
  verify(manager, step)
  return step, _restore_verified(manager, target, step)


def _restore_verified(manager, target, step: int):
  """Restores a step whose files were verified onto ``target``."""
  abstract = jax.tree.map(ocp.tree.to_shape_dtype_struct, target)
  _check_fits(manager, step, abstract)
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  return restored['state']


def restore_newest_sound(manager, target, workdir: str):
  """Restores the newest step whose files match its digest (for resuming).

  Damaged steps are moved to ``WORKDIR/damaged_checkpoints/`` (so that the
  run can save those steps again), each with a warning saying why.

  Returns:
    (step, restored state), or (None, None) if there is no checkpoint.

  Raises:
    CheckpointDamagedError: every checkpoint is damaged (names each).
  """
  damaged, sound = [], None
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      verify(manager, step)
    except CheckpointDamagedError as e:
      damaged.append((step, str(e)))
      logging.warning('%s Trying an earlier checkpoint.', e)
      continue
    sound = step
    break
  if damaged and jax.process_index() == 0:
    for step, _ in damaged:
      _move_aside(manager, step, workdir)
  if damaged and jax.process_count() > 1:
    multihost_utils.sync_global_devices('bonnkd_damaged_moved_aside')
  manager.reload()
  if sound is None:
    if damaged:
      raise CheckpointDamagedError(
          'No sound checkpoint to resume from (moved to '
          f'{os.path.join(workdir, DAMAGED_DIR)}): '
          + ' '.join(message for _, message in damaged))
    return None, None
  # Verified above: its files are not hashed a second time.
  return sound, _restore_verified(manager, target, sound)


def _move_aside(manager, step: int, workdir: str) -> None:
  target = os.path.join(os.path.abspath(workdir), DAMAGED_DIR,
                        f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
  os.makedirs(os.path.dirname(target), exist_ok=True)
  os.replace(_step_dir(manager, step), target)
  logging.warning('Moved the damaged checkpoint of step %d to %s.', step,
                  target)


def _check_fits(manager, step: int, abstract) -> None:
  """Compares the saved arrays' names and shapes with the target's.

  Orbax would find a mismatch too, but only after its asynchronous reads have
  started, with a message naming one array at best; this names them all.
  """
  saved = ocp.tree.to_flat_dict(manager.item_metadata(step)['state'])
  wanted = ocp.tree.to_flat_dict(abstract)
  missing = sorted(set(wanted) - set(saved))
  unexpected = sorted(set(saved) - set(wanted))
  wrong = sorted(k for k in set(wanted) & set(saved)
                 if tuple(saved[k].shape) != tuple(wanted[k].shape))
  if missing or unexpected or wrong:
    def describe(what, keys, shapes=False):
      names = [('/'.join(map(str, k))
                + (f' saved {tuple(saved[k].shape)} vs config '
                   f'{tuple(wanted[k].shape)}' if shapes else ''))
               for k in keys[:3]]
      more = f' (+{len(keys) - 3} more)' if len(keys) > 3 else ''
      return f'{what}: {", ".join(names)}{more}'
    detail = '; '.join(
        describe(what, keys, what == 'wrong shape')
        for what, keys in (('missing', missing), ('unexpected', unexpected),
                           ('wrong shape', wrong)) if keys)
    raise CheckpointMismatchError(
        f'The checkpoint at step {step} under {manager.directory} does not '
        f'fit the model of its config ({detail}).')


class Checkpoints:
  """A run's checkpoints: orbax's manager with digests and move-aside.

  Made by :meth:`bonnkd.run.run_dir.RunDir.checkpoints`; a context manager
  that waits for pending writes and closes the manager on exit.
  """

  def __init__(self, workdir: str, read_only: bool = False):
    self.workdir = os.path.abspath(workdir)
    self.manager = create_manager(self.workdir, read_only=read_only)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def save(self, step: int, state, val_accuracy: float) -> None:
    """:func:`save`: the step, committed, with its digest."""
    save(self.manager, step, state, val_accuracy)

  def restore(self, target, step: int | None = None, which: str = 'latest'):
    """:func:`restore`: (step, state) of a verified step onto ``target``."""
    return restore(self.manager, target, step, which)

  def restore_newest_sound(self, target):
    """:func:`restore_newest_sound`: for resuming, damaged steps aside."""
    return restore_newest_sound(self.manager, target, self.workdir)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
