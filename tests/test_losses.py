"""The KD loss against an independent NumPy reference, and its gradients."""

import jax
from jax import test_util as jtu
import numpy as np
import pytest

from bonnkd.training import losses


def np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kd_loss(s, t, y, alpha, temp, smoothing=0.0):
  s, t = s.astype(np.float64), t.astype(np.float64)
  # Smoothed one-hot: 1 - eps on the label, plus eps / K on every class.
  targets = np.full(s.shape, smoothing / s.shape[-1])
  targets[np.arange(len(y)), y] += 1.0 - smoothing
  ce = -(targets * np_log_softmax(s)).sum(-1).mean()
  log_p, log_q = np_log_softmax(t / temp), np_log_softmax(s / temp)
  kl = (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
  return alpha * ce + (1 - alpha) * temp**2 * kl, ce, kl


def logits(seed, n=8, k=10, scale=3.0):
  return (np.random.default_rng(seed).normal(size=(n, k)) * scale).astype(
      np.float32)


LABELS = np.array([0, 1, 2, 3, 4, 5, 6, 9])


@pytest.mark.parametrize('alpha,temp,smoothing', [
    (0.5, 4.0, 0.0), (0.1, 1.0, 0.0), (0.9, 2.5, 0.0), (0.5, 4.0, 0.1)])
def test_matches_numpy_reference(alpha, temp, smoothing):
  s, t = logits(0), logits(1)
  loss, aux = jax.jit(losses.kd_loss, static_argnums=(3, 4, 5))(
      s, t, LABELS, alpha, temp, smoothing)
  ref, ce, kl = np_kd_loss(s, t, LABELS, alpha, temp, smoothing)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  np.testing.assert_allclose(aux['ce'], ce, rtol=1e-5)
  np.testing.assert_allclose(aux['kl'], kl, rtol=1e-5)


def test_alpha_one_is_cross_entropy():
  s, t = logits(2), logits(3)
  loss, _ = losses.kd_loss(s, t, LABELS, 1.0, 4.0)
  ce = -np_log_softmax(s.astype(np.float64))[np.arange(8), LABELS].mean()
  np.testing.assert_allclose(loss, ce, rtol=1e-6)


def test_identical_logits_give_zero_kl():
  s = logits(4)
  loss, aux = losses.kd_loss(s, s, LABELS, 0.0, 3.0)
  np.testing.assert_allclose(aux['kl'], 0.0, atol=1e-6)
  np.testing.assert_allclose(loss, 0.0, atol=1e-5)


def test_soft_term_scales_with_temperature_squared():
  s, t = logits(5), logits(6)
  for temp in (1.0, 2.0, 8.0):
    loss, aux = losses.kd_loss(s, t, LABELS, 0.0, temp)
    np.testing.assert_allclose(loss, temp**2 * aux['kl'], rtol=1e-6)
  # Hinton's point: with T^2, the soft-target gradient keeps its scale as T
  # grows (it tends to (s - t) / N for large T); without it, it shrinks.
  s, t = logits(5, scale=0.5), logits(6, scale=0.5)
  grad = lambda temp: jax.grad(
      lambda x: losses.kd_loss(x, t, LABELS, 0.0, temp)[0])(s)
  g10, g20 = grad(10.0), grad(20.0)
  np.testing.assert_allclose(g10, g20, rtol=0.05, atol=1e-4)
  centred = lambda z: z - z.mean(-1, keepdims=True)
  np.testing.assert_allclose(g20, (centred(s) - centred(t)) / (10 * 8),
                             rtol=0.05, atol=1e-3)


def test_no_gradient_reaches_the_teacher():
  s, t = logits(7), logits(8)
  g_teacher = jax.grad(lambda t: losses.kd_loss(s, t, LABELS, 0.3, 4.0)[0])(t)
  np.testing.assert_array_equal(g_teacher, np.zeros_like(t))


def test_student_gradients_check_numerically():
  s, t = logits(9, scale=1.0), logits(10, scale=1.0)
  fn = lambda x: losses.kd_loss(x, t, LABELS, 0.4, 3.0)[0]
  jtu.check_grads(fn, (s,), order=2, modes=['rev'], atol=5e-2, rtol=5e-2)
