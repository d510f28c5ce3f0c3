"""Every orbax call of bonnkd: save, resume, keep the best, restore.

A run's checkpoints live in ``WORKDIR/checkpoints/<step>/state``, written by
``orbax.checkpoint.CheckpointManager``. Two are kept: the latest (to resume)
and the one with the best validation accuracy (for the final numbers and for
distillation). Each holds the whole train state as a plain pytree::

    {'step', 'params', 'batch_stats', 'opt_state'}

and carries ``{'val_accuracy': ...}`` as its metrics. Every restore gives
orbax a target (shapes, dtypes and the placement wanted *here*), so a
checkpoint written on 4 devices restores on 1, and back; see
``bonnkd.run_dir`` for restoring a run's state from its config. To read one
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

import os

import jax
import orbax.checkpoint as ocp

from bonnkd import errors

__all__ = ['CHECKPOINT_DIR', 'checkpoint_dir', 'create_manager', 'save',
           'restore', 'NoCheckpointError', 'CheckpointMismatchError']

CHECKPOINT_DIR = 'checkpoints'
_BEST_METRIC = 'val_accuracy'


class NoCheckpointError(errors.NotARunError):
  """A directory that should hold bonnkd checkpoints holds none."""


class CheckpointMismatchError(errors.UserError, ValueError):
  """A checkpoint does not fit the model and optimizer of the config."""


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
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler()})


def save(manager, step: int, state, val_accuracy: float) -> None:
  """Saves asynchronously; ``manager.wait_until_finished()`` to block."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
               metrics={_BEST_METRIC: float(val_accuracy)})


def restore(manager, target, step: int | None = None, which: str = 'latest'):
  """Restores ``step`` (or the 'latest' / 'best' one) onto ``target``.

  Args:
    manager: from :func:`create_manager`.
    target: a pytree of arrays or ``jax.ShapeDtypeStruct`` giving the
      structure, shapes, dtypes and placement to restore to (a leaf with no
      sharding restores as a numpy array), e.g. the live train state or
      ``bonnkd.train_state.abstract_train_state(config, sharding)``.
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
  abstract = jax.tree.map(ocp.tree.to_shape_dtype_struct, target)
  _check_fits(manager, step, abstract)
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  return step, restored['state']


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
