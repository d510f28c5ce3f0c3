"""Every orbax call of bonnkd: save, resume, keep the best, restore for eval.

A run's checkpoints live in ``WORKDIR/checkpoints/<step>/state``, written by
``orbax.checkpoint.CheckpointManager``. Two are kept: the latest (to resume)
and the one with the best validation accuracy (for the final numbers and for
distillation). Each holds the whole train state as a plain pytree::

    {'step', 'params', 'batch_stats', 'opt_state'}

and carries ``{'val_accuracy': ...}`` as its metrics. To read one with orbax
alone (no bonnkd)::

    import orbax.checkpoint as ocp
    mngr = ocp.CheckpointManager(
        'WORKDIR/checkpoints', options=ocp.CheckpointManagerOptions(
            best_fn=lambda m: m['val_accuracy'], read_only=True))
    step = mngr.best_step()          # or mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))['state']
    state['params']                  # nested dict of numpy arrays
"""

import os

import jax
import orbax.checkpoint as ocp

__all__ = ['CHECKPOINT_DIR', 'create_manager', 'save', 'restore',
           'NoCheckpointError']

CHECKPOINT_DIR = 'checkpoints'
_BEST_METRIC = 'val_accuracy'


class NoCheckpointError(FileNotFoundError):
  """A directory that should hold bonnkd checkpoints holds none."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def create_manager(workdir: str, read_only: bool = False):
  """A manager keeping the latest checkpoint and the best by val accuracy."""
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=1),
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
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager, step: int, state, val_accuracy: float) -> None:
  """Saves asynchronously; ``manager.wait_until_finished()`` to block."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
               metrics={_BEST_METRIC: float(val_accuracy)})


def restore(manager, target, step: int | None = None, which: str = 'latest'):
  """Restores ``step`` (or the 'latest' / 'best' one) onto ``target``'s layout.

  Args:
    manager: from :func:`create_manager`.
    target: a pytree of arrays or ``jax.ShapeDtypeStruct`` (with shardings)
      giving the structure, shapes, dtypes and placement to restore to.
    step: an explicit step, or None to use ``which``.
    which: 'latest' or 'best'.

  Returns:
    (step, restored pytree).

  Raises:
    NoCheckpointError: no checkpoint in the manager's directory.
    ValueError: the checkpoint does not fit ``target`` (names the mismatch).
  """
  if step is None:
    step = manager.latest_step() if which == 'latest' else manager.best_step()
  if step is None:
    raise NoCheckpointError(
        f'No {which} checkpoint under {manager.directory}.')
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  try:
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f'The checkpoint at step {step} under {manager.directory} does not '
        f'fit the model of this config: {str(e)[:500]}') from e
  return step, restored['state']


def restore_variables(workdir: str, which: str = 'best'):
  """The model variables of a run's best (or latest) checkpoint, as saved.

  Restores without a target (host arrays, whatever the saving run's layout)
  and keeps ``params`` and ``batch_stats``; the optimizer state is dropped.

  Returns:
    (step, {'params': ..., 'batch_stats': ...}).

  Raises:
    NoCheckpointError: ``workdir`` holds no checkpoint.
  """
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise NoCheckpointError(f'{workdir!r} has no {CHECKPOINT_DIR}/ folder.')
  manager = create_manager(workdir, read_only=True)
  step = manager.latest_step() if which == 'latest' else manager.best_step()
  if step is None:
    raise NoCheckpointError(f'No {which} checkpoint under {directory}.')
  state = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  manager.close()
  return step, {'params': state['params'],
                'batch_stats': state.get('batch_stats') or {}}
