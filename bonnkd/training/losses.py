"""Losses: cross-entropy and the knowledge-distillation loss of Hinton et al.

Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in
a Neural Network", arXiv:1503.02531, Sec. 2)::

    L_KD = a * CE(y, softmax(s)) + (1 - a) * T^2 * KL(softmax(t/T) || softmax(s/T))

with student logits ``s``, teacher logits ``t``, labels ``y``, weight ``a``
(``alpha``) and temperature ``T``. The soft-target gradients scale as 1/T^2,
so the T^2 factor keeps their magnitude unchanged when T changes. The teacher
is a constant: no gradient flows into ``t``.
"""

import jax
import jax.numpy as jnp
import optax

__all__ = ['cross_entropy', 'distillation_kl', 'kd_loss']


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy against (smoothed) one-hot labels."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def distillation_kl(student_logits: jax.Array, teacher_logits: jax.Array,
                    temperature: float) -> jax.Array:
  r"""Per-example :math:`KL(\mathrm{softmax}(t/T) \| \mathrm{softmax}(s/T))`.

  :math:`\sum_k p_k (\log p_k - \log q_k)` with :math:`p = softmax(t/T)` and
  :math:`q = softmax(s/T)`, computed from log-softmaxes for stability. The
  teacher logits are wrapped in ``stop_gradient``.
  """
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array,
            labels: jax.Array, alpha: float, temperature: float,
            label_smoothing: float = 0.0):
  """Mean Hinton KD loss over the batch (see the module docstring).

  Args:
    student_logits: (N, K).
    teacher_logits: (N, K); treated as constants.
    labels: (N,) integer class ids.
    alpha: weight of the hard-label cross-entropy, in [0, 1].
    temperature: softmax temperature T > 0 of the soft targets.
    label_smoothing: smoothing of the one-hot labels of the CE term only
      (``config.optim.label_smoothing``); the soft targets are the teacher's.

  Returns:
    (loss, {'ce': mean CE (with smoothing), 'kl': mean KL at temperature T}).
  """
  ce = jnp.mean(cross_entropy(student_logits, labels, label_smoothing))
  kl = jnp.mean(distillation_kl(student_logits, teacher_logits, temperature))
  loss = alpha * ce + (1.0 - alpha) * temperature**2 * kl
  return loss, {'ce': ce, 'kl': kl}
