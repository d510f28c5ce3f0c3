"""BONN's kernel and feature losses against NumPy, and their gradients."""

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np

from bonnkd.binary import bayesian_losses
from bonnkd.binary import layers
from bonnkd.binary import quantizers


def tiny_kernel(seed=0):
  # 2x2 kernels, 2 input and 3 output channels; no entry near 0.
  k = np.random.default_rng(seed).normal(size=(2, 2, 2, 3))
  return (np.sign(k) * (np.abs(k) + 0.1)).astype(np.float32)


def np_kernel_loss(k, s, nu):
  """Loop over kernels (n, i), float64, as the formula reads."""
  k, s = k.astype(np.float64), s.astype(np.float64)
  recon = prior = log_det = 0.0
  for n in range(k.shape[2]):
    for i in range(k.shape[3]):
      w = k[:, :, n, i].ravel()
      recon += np.sum((w - s[i] * np.sign(w)) ** 2)
      pos, neg = w[w > 0], -w[w <= 0]
      mu_p = pos.mean() if pos.size else 0.0
      mu_n = neg.mean() if neg.size else 0.0
      centre = np.where(w > 0, mu_p, mu_n)
      psi = np.mean((np.abs(w) - centre) ** 2) + 1e-8
      prior += np.sum(np.where(w > 0, w - mu_p, w + mu_n) ** 2) / psi
      log_det += w.size * np.log(psi)
  return 0.5 * (recon + nu * (prior + log_det)), recon, prior, log_det


def test_kernel_loss_matches_numpy():
  k, s = tiny_kernel(), np.array([0.3, 0.7, 1.1], np.float32)
  loss, parts = jax.jit(bayesian_losses.kernel_loss, static_argnums=2)(
      k, s, 0.5)
  ref, recon, prior, log_det = np_kernel_loss(k, s, 0.5)
  np.testing.assert_allclose(loss, ref, rtol=1e-5)
  np.testing.assert_allclose(parts['reconstruction'], recon, rtol=1e-5)
  np.testing.assert_allclose(parts['prior'], prior, rtol=1e-5)
  np.testing.assert_allclose(parts['log_det'], log_det, rtol=1e-5)


def test_reconstruction_is_minimal_at_xnors_scale():
  # d/dw ||k - w o sign(k)||^2 = -2 sum (|k| - w) = 0 at w = mean |k| per
  # output channel: the value the modulation vector starts from.
  k = tiny_kernel(1)
  alpha = quantizers.xnor_weight_scale(jnp.asarray(k)).reshape(-1)
  grad = jax.grad(lambda s: bayesian_losses.kernel_loss(k, s, 0.0)[0])(alpha)
  np.testing.assert_allclose(grad, 0.0, atol=1e-5)
  at_alpha = bayesian_losses.kernel_loss(k, alpha, 0.0)[0]
  for delta in (-0.05, 0.05):
    assert bayesian_losses.kernel_loss(k, alpha + delta, 0.0)[0] > at_alpha


def test_kernel_gradient_pulls_weights_to_their_modes():
  # With mu and psi held constant: d/dk = (k - w sign k) + nu (k - mu) / psi
  # (k + mu- for a negative entry), computed here by hand.
  k, s, nu = tiny_kernel(2), np.array([0.5, 0.5, 0.5], np.float32), 0.25
  grad = jax.grad(lambda k: bayesian_losses.kernel_loss(k, s, nu)[0])(k)
  expected = np.zeros_like(k, np.float64)
  for n in range(2):
    for i in range(3):
      w = k[:, :, n, i].astype(np.float64)
      pos = w > 0
      mu_p = w[pos].mean() if pos.any() else 0.0
      mu_n = (-w[~pos]).mean() if (~pos).any() else 0.0
      psi = np.mean((np.abs(w) - np.where(pos, mu_p, mu_n)) ** 2) + 1e-8
      dev = np.where(pos, w - mu_p, w + mu_n)
      expected[:, :, n, i] = (w - s[i] * np.sign(w)) + nu * dev / psi
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)
  # With respect to the modulation (the statistics do not depend on it).
  jtu.check_grads(lambda s: bayesian_losses.kernel_loss(k, s, nu)[0],
                  (s,), order=2, modes=('fwd', 'rev'), atol=1e-2, rtol=1e-2)


def test_kernel_loss_held_off_the_modulation():
  # trains_modulation=False: the same loss and kernel gradient, none on the
  # scale.
  k, s, nu = tiny_kernel(3), np.array([0.2, 0.9, 1.4], np.float32), 0.25
  def loss(trains_modulation):
    return lambda k, s: bayesian_losses.kernel_loss(k, s, nu,
                                                    trains_modulation)[0]
  (dk, ds), (dk_held, ds_held) = (jax.grad(loss(t), (0, 1))(k, s)
                                  for t in (True, False))
  np.testing.assert_allclose(loss(False)(k, s), loss(True)(k, s))
  np.testing.assert_array_equal(dk_held, dk)
  assert np.all(np.abs(ds) > 0.1)
  np.testing.assert_array_equal(ds_held, 0.0)
  # Through a network's parameters: every modulation, however deep.
  params = {'a': {'kernel': k, 'modulation': s},
            'b': {'c': {'kernel': 2 * k, 'modulation': s}, 'bias': s}}
  grads = jax.grad(bayesian_losses.network_kernel_loss)(params, nu, False)
  np.testing.assert_array_equal(grads['a']['modulation'], 0.0)
  np.testing.assert_array_equal(grads['b']['c']['modulation'], 0.0)
  np.testing.assert_array_equal(grads['a']['kernel'], dk)
  np.testing.assert_array_equal(grads['b']['bias'], 0.0)


def test_feature_loss_matches_numpy_and_its_gradient_checks():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(6, 4)).astype(np.float32)
  y = np.array([0, 1, 1, 2, 0, 2])
  c = rng.normal(size=(3, 4)).astype(np.float32)
  v = rng.uniform(0.5, 2.0, size=(3, 4)).astype(np.float32)
  d2 = (f - c[y]) ** 2
  per_example = d2.sum(-1) + (d2 / v[y] + np.log(v[y])).sum(-1)
  # BONN's centre-loss form sums over the examples; bonnkd's first reading
  # averaged.
  np.testing.assert_allclose(bayesian_losses.feature_loss(f, y, c, v),
                             0.5 * np.sum(per_example), rtol=1e-5)
  np.testing.assert_allclose(
      bayesian_losses.feature_loss(f, y, c, v, reduction='mean'),
      0.5 * np.mean(per_example), rtol=1e-5)
  jtu.check_grads(lambda f: bayesian_losses.feature_loss(f, y, c, v, 'mean'),
                  (f,), order=2, modes=('fwd', 'rev'), atol=1e-2, rtol=1e-2)
  jtu.check_grads(lambda f: bayesian_losses.feature_loss(f, y, c, v), (f,),
                  order=1, modes=('rev',), atol=1e-2, rtol=1e-2)
  # No gradient reaches the running statistics.
  g_c, g_v = jax.grad(bayesian_losses.feature_loss, argnums=(2, 3))(f, y, c,
                                                                     v)
  assert not np.any(g_c) and not np.any(g_v)


def test_standardized_features_give_the_loss_no_scale_or_shift_direction():
  rng = np.random.default_rng(4)
  f = rng.normal(size=(8, 3)) * np.array([0.01, 1.0, 5.0]) + 2.0
  y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
  # Against NumPy, float64: (f - mean) / sqrt(var + eps) per dimension.
  np.testing.assert_allclose(
      bayesian_losses.standardize(f.astype(np.float32)),
      (f - f.mean(0)) / np.sqrt(f.var(0) + 1e-5), rtol=1e-4, atol=1e-5)
  c = rng.normal(size=(2, 3)).astype(np.float32)
  v = np.full((2, 3), 1e-2, np.float32)
  def loss(features):
    return bayesian_losses.feature_loss(
        bayesian_losses.standardize(features), y, c, v)
  f32 = f.astype(np.float32)
  g = np.asarray(jax.grad(loss)(f32), np.float64)
  # No gradient along shifting or scaling any dimension (up to eps, which
  # weighs most in the 0.01-scaled first one).
  np.testing.assert_allclose(g.sum(0), 0.0, atol=1e-3 * np.abs(g).sum())
  np.testing.assert_allclose((g * (f - f.mean(0))).sum(0), 0.0,
                             atol=2e-3 * np.abs(g * f).sum())
  # Without the standardisation the same loss has a gradient toward
  # smaller features: the scaling direction is far from 0.
  g_raw = np.asarray(jax.grad(bayesian_losses.feature_loss)(f32, y, c, v))
  assert (g_raw * f).sum() > 0.5 * np.abs(g_raw * f).sum()
  # The gradient itself, by finite differences (on unit-scale features:
  # float32 differences of the 0.01-scaled dimension are too coarse).
  jtu.check_grads(loss, (rng.normal(size=(8, 3)).astype(np.float32),),
                  order=1, modes=('rev',), atol=1e-2, rtol=1e-2)


def test_class_statistics_move_toward_the_batch_and_absent_classes_stay():
  f = np.array([[1.0, 2.0], [3.0, 2.0], [10.0, 0.0]], np.float32)
  y = np.array([0, 0, 2])
  centres = np.zeros((3, 2), np.float32)
  variances = np.ones((3, 2), np.float32)
  c, v = bayesian_losses.update_class_statistics(centres, variances, f, y,
                                                 momentum=0.5,
                                                 min_variance=1e-4)
  # Class 0: batch mean (2, 2); centre 0.5 * 0 + 0.5 * (2, 2) = (1, 1).
  np.testing.assert_allclose(c[0], [1.0, 1.0])
  # Its spread around the new centre: mean of ((0, 1)^2, (2, 1)^2) = (2, 1).
  np.testing.assert_allclose(v[0], [0.5 + 0.5 * 2.0, 0.5 + 0.5 * 1.0])
  np.testing.assert_allclose(c[2], [5.0, 0.0])
  np.testing.assert_allclose(v[2], [0.5 + 0.5 * 25.0, 0.5])
  # Class 1 is not in the batch: unchanged.
  np.testing.assert_array_equal(c[1], centres[1])
  np.testing.assert_array_equal(v[1], variances[1])


def test_class_variances_stay_at_or_above_the_floor():
  # Two features of class 0 equal to its centre: their spread is 0, so its
  # variances fall from 1 to 0.5, 0.25, 0.125 (momentum 0.5) until the
  # floor, 0.2, holds them.
  f = np.array([[1.0, 2.0], [1.0, 2.0]], np.float32)
  y = np.array([0, 0])
  c = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
  v = np.ones((2, 2), np.float32)
  for expected in (0.5, 0.25, 0.2, 0.2):
    c, v = bayesian_losses.update_class_statistics(c, v, f, y, momentum=0.5,
                                                   min_variance=0.2)
    np.testing.assert_allclose(v[0], [expected, expected])
  # Class 1 never seen: its variance 1 is above the floor and stays.
  np.testing.assert_array_equal(v[1], [1.0, 1.0])


def np_learned_prior(k, mu, log_var):
  """BONN's learned per-channel prior (Eqs. 3.118-3.119), looped, float64."""
  k = k.astype(np.float64)
  prior = log_det = 0.0
  for i in range(k.shape[3]):
    w = k[..., i].ravel()
    var = np.exp(np.float64(log_var[i]))
    # Positive entries toward +mu_i, negative ones toward -mu_i.
    prior += np.sum(np.where(w > 0, w - mu[i], w + mu[i]) ** 2) / var
    log_det += w.size * np.log(var)
  return prior, log_det


def test_learned_prior_matches_numpy_and_its_gradient_checks():
  k, s = tiny_kernel(4), np.array([0.3, 0.7, 1.1], np.float32)
  mu = np.array([0.5, 0.9, 1.2], np.float32)
  log_var = np.array([-1.0, 0.0, 0.5], np.float32)
  loss, parts = bayesian_losses.kernel_loss(k, s, 0.5, True, mu, log_var)
  prior, log_det = np_learned_prior(k, mu, log_var)
  recon = np.sum((k - s * np.sign(k)) ** 2)
  np.testing.assert_allclose(parts['prior'], prior, rtol=1e-5)
  np.testing.assert_allclose(parts['log_det'], log_det, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.5 * (recon + 0.5 * (prior + log_det)),
                             rtol=1e-5)
  # The prior's parameters are learned: gradients checked numerically.
  jtu.check_grads(
      lambda m, v: bayesian_losses.kernel_loss(k, s, 0.5, True, m, v)[0],
      (mu, log_var), order=1, modes=('rev',), atol=1e-2, rtol=1e-2)


def test_learned_prior_is_optimal_at_the_channels_mean_and_variance():
  # d/dmu_i = 0 at mu_i = mean |k| over the channel; d/dlog_var_i = 0 at
  # sigma_i^2 = mean (|k| - mu_i)^2: prior_init's values.
  k = tiny_kernel(5)
  mu, log_var = layers.prior_init(jnp.asarray(k))
  magnitude = np.abs(k).reshape(-1, 3)
  np.testing.assert_allclose(mu, magnitude.mean(0), rtol=1e-6)
  np.testing.assert_allclose(np.exp(log_var), magnitude.var(0), rtol=1e-4)
  s = np.ones(3, np.float32)
  g_mu, g_var = jax.grad(
      lambda m, v: bayesian_losses.kernel_loss(k, s, 1.0, True, m, v)[0],
      argnums=(0, 1))(mu, log_var)
  np.testing.assert_allclose(g_mu, 0.0, atol=1e-4)
  np.testing.assert_allclose(g_var, 0.0, atol=1e-4)


def test_network_loss_uses_a_layers_learned_prior_where_it_has_one():
  k, s = tiny_kernel(6), np.array([0.3, 0.7, 1.1], np.float32)
  mu, log_var = layers.prior_init(jnp.asarray(k))
  params = {'bonn': {'kernel': k, 'modulation': s, 'prior_mean': mu,
                     'prior_log_var': log_var},
            'mcn': {'kernel': k, 'modulation': s}}
  total = bayesian_losses.network_kernel_loss(params, 0.1)
  expected = (bayesian_losses.kernel_loss(k, s, 0.1, True, mu, log_var)[0]
              + bayesian_losses.kernel_loss(k, s, 0.1)[0])
  np.testing.assert_allclose(total, expected, rtol=1e-6)
