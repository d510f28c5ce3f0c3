"""Evaluation: every example of a split counted once, in eval mode.

One evaluation serves training (val every epoch, val and test of the best
checkpoint at the end) and the report (test confusion matrices): the jitted
:func:`eval_step` over padded, masked batches, and :func:`evaluate`, which
sums its outputs over a split.
"""

import collections
from collections.abc import Callable
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bonnkd.data import augment
from bonnkd.data import input_pipeline
from bonnkd.training import losses
from bonnkd.training import sharding as sharding_lib
from bonnkd.training import teacher as teacher_lib

__all__ = ['eval_step', 'make_eval_fn', 'evaluate']


def eval_step(variables, images, labels, mask, teacher_variables=None, *,
              model, teacher=None, temperature: float = 1.0):
  """Masked sums over one eval batch (BatchNorm uses running statistics).

  With a teacher (``bonnkd.training.teacher.Teacher``), also the student-teacher
  top-1 agreement and the KL term of the KD loss at ``temperature``.

  Returns:
    ({'loss_sum', 'correct', 'count'[, 'agreement', 'kl']},
     (predictions, mask)).
  """
  images = augment.normalize(images)
  logits = model.apply(variables, images, train=False)
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


def make_eval_fn(model, mesh: sharding_lib.DataParallelMesh, teacher=None,
                 temperature: float = 1.0) -> Callable:
  """``(variables, images, labels, mask) -> (sums, (predictions, mask))``.

  Jitted over ``mesh``: variables (and the teacher's) replicated, the batch
  sharded over 'data'. The teacher's variables are an argument of the
  compiled function, not constants folded into it.
  """
  return teacher_lib.bind_variables(jax.jit(
      functools.partial(eval_step, model=model, teacher=teacher,
                        temperature=temperature),
      in_shardings=(mesh.replicated, mesh.batch, mesh.batch, mesh.batch,
                    mesh.replicated),
      out_shardings=(mesh.replicated, mesh.replicated)), teacher, mesh)


def evaluate(eval_fn: Callable, variables, split: input_pipeline.Split,
             batch_size: int, mesh: sharding_lib.DataParallelMesh):
  """Mean metrics and per-example predictions over every example of split.

  Args:
    eval_fn: from :func:`make_eval_fn`.
    variables: ``{'params', 'batch_stats'}`` to evaluate.
    split: host arrays (every process holds the whole split).
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
        eval_fn(variables, *mesh.put_batch(images, labels, mask)))
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
