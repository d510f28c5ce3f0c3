"""A frozen teacher restored from a finished bonnkd run (phase 2).

``config.kd.teacher_workdir`` names a run directory written by
``train_and_evaluate``. Its ``config.json`` says which model it trained; its
best checkpoint (by val accuracy) gives the weights and BatchNorm statistics.
The teacher is only ever applied with ``train=False`` (running statistics)
and its logits pass through ``stop_gradient``: it is never updated.
"""

from collections.abc import Callable
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from bonnkd import errors
from bonnkd import models
from bonnkd.run import run_dir
from bonnkd.training import train_state

__all__ = ['Teacher', 'load_teacher', 'bind_variables']


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


def load_teacher(workdir: str, sharding=None) -> Teacher:
  """Restores the best checkpoint of the bonnkd run in ``workdir``.

  Args:
    workdir: ``config.kd.teacher_workdir``.
    sharding: where to place the teacher's variables (the train mesh's
      replicated sharding); None: the first local device.

  Raises:
    errors.NotARunError: ``workdir`` is not a bonnkd run, or holds no
      checkpoint.
    checkpoints.CheckpointMismatchError: its checkpoint does not fit the
      model of its config.json.
  """
  try:
    run = run_dir.RunDir.open(workdir)
    model = models.create_model(run.config.model, dtype=run.config.dtype)
    step, variables = train_state.restore_variables(run, 'best', sharding)
  except errors.UserError as e:
    raise type(e)(f'config.kd.teacher_workdir={workdir!r}: {e} Train a '
                  'teacher first (e.g. configs/teacher_resnet18.py) and pass '
                  'its --workdir.') from e
  return Teacher(model=model, variables=variables, config=run.config,
                 step=step)


def bind_variables(jitted: Callable, teacher: Teacher | None, mesh):
  """``f(*args) = jitted(*args, teacher_variables)``.

  The teacher's variables (``{}`` without a teacher) are put on ``mesh``
  replicated once, and passed to the compiled function as an argument, not
  folded into it as constants. The train step and the eval step both
  take them last.
  """
  teacher_variables = (jax.device_put(teacher.variables, mesh.replicated)
                       if teacher else {})

  def bound(*args):
    return jitted(*args, teacher_variables)

  return bound
