"""BONN's Bayesian kernel and feature losses (Gu et al., ICCV 2019).

From "Bayesian Optimized 1-Bit CNNs" (journal / book version, Eq. 3.108),
for every 1-bit conv layer l, output channel i and input channel n, with
latent kernel k, binary kernel k^ = sign(k) and modulation vector w::

    L_B = lambda/2 * sum_{l,i,n} { ||k^ - w o k||^2
                                   + nu (k+ - mu_i+)^T (Psi_i+)^-1 (k+ - mu_i+)
                                   + nu (k- + mu_i-)^T (Psi_i-)^-1 (k- + mu_i-)
                                   + nu log det(Psi^l) }
        + theta/2 * sum_m { ||f_m - c_m||^2
                            + sum_n [ sigma_{m,n}^-2 (f_{m,n} - c_{m,n})^2
                                      + log sigma_{m,n}^2 ] }

Readings chosen here (the sources reach us as extracted text):

* **Reconstruction.** bonnkd's 1-bit conv computes ``conv(x, sign(k)) * w``:
  the kernel it stands for is ``w o sign(k)``. So the reconstruction error
  is ``||k - w o sign(k)||^2`` (the latent kernel approximated by the scaled
  binary one), whose optimum over ``w`` is XNOR-Net's mean |k| per output
  channel, the value the modulation starts from (:func:`kernel_loss`; a
  test checks that optimum). Read literally, ``||k^ - w o k||^2`` would
  scale the latent kernel instead, with optimum ``sum|k| / sum k^2``.
  Nothing keeps ``w`` positive: where training turns a channel's
  modulation negative, the target ``w sign(k)`` has the opposite sign of
  ``k`` and the term pulls that channel's latent weights toward zero
  (``results/bonn/v1/README.md`` measures both effects on a trained WRN).
  As in BONN, the term's gradient reaches both ``k`` and ``w``;
  ``config.bonn.kernel_loss_trains_modulation=False`` (not BONN's) holds
  ``w`` constant in it (``stop_gradient``), so that the term shapes the
  latent kernel only and the modulation follows the task loss alone.
* **The two-mode prior, learned (BONN's, Eqs. 3.118-3.119).** In a conv
  of ``weight_scale='layer_modulation'`` (BONN's 1-bit conv) each output
  channel i has its own prior, a mean magnitude ``mu_i`` (``prior_mean``)
  and a variance ``sigma_i^2`` (``exp(prior_log_var)``), initialised from
  the kernel (:func:`bonnkd.binary.layers.prior_init`) and learned by the
  optimizer from this loss's gradient: ``Psi_i = sigma_i^2 I``, the
  positive entries pulled toward ``mu_i`` and the negative ones toward
  ``-mu_i``, ``log det Psi_i = n log sigma_i^2`` over the channel's
  ``n = kh kw C_in`` entries.
* **The two-mode prior, from batch statistics (bonnkd's earlier reading,
  the convs of ``weight_scale='modulation'``).** Per kernel (one (i, n)
  pair, its kh x kw entries): ``mu+`` the mean of its positive entries, ``mu-`` the mean
  magnitude of its negative ones, ``Psi = psi I`` with ``psi`` the variance
  of ``|k|`` around its mode's mean. They are statistics of the current
  latent kernel, recomputed at every step and held constant for the
  gradient (``stop_gradient``), not learned: the term then pulls each
  weight toward the centre of its mode, ``d/dk = 2 nu (k - mu+) / psi`` for
  a positive entry, which is the prior's role in the paper; ``log det Psi``
  is reported but has no gradient.
* **Feature term.** ``f_m`` are the features before the classifier, ``c``
  the class centres and ``sigma^2`` the per-class, per-dimension variances,
  both running averages (:func:`update_class_statistics`), as centre-loss
  implementations keep them; its gradient reaches only ``f``. Each running
  variance is kept at or above a floor (``config.bonn.min_variance``), as
  ``1/sigma^2`` is unbounded: pulling the features to their centres shrinks
  sigma^2, which raises the weight, which pulls harder. At a floor of 1e-4
  that loop pinned every feature of the W1A1 proxy to centres that had not
  yet separated (theta 1e-4 summed: val 11.60%, the loss at its floor
  1/2 x 128 x 128 x log 1e-4; results/bonn/w1a1_select/summary.md), while
  the within-class variances of a trained W1A1 WRN-10-2's features on val
  are 0.013 at least (0.075 on average). A constant floor is not enough:
  below it the weighted term is a plain centre loss of weight
  1/min_variance, which training lowers by shrinking every feature. At
  floor 1e-2 (theta 1e-4 and 1e-3, summed) the trained proxies' features
  vary 23x and 1,000x less over the val split than a plain network's
  (``bonnkd.tools.class_features``: per-dimension variance 5.4e-3 and
  1.2e-4 against 0.12), every within-class variance under the floor, and
  val accuracy fell to 48.86% and 20.02% (plain 59.48%). Nor can a floor
  that follows the batch's spread but is held constant in the gradient
  (tried: rho 0.1 of each dimension's batch variance collapsed the same
  way within an epoch): with the statistics constant, the gradient of
  every term points toward smaller features. What removes that direction
  is the loss on features standardised over the batch, the mean and
  variance in the gradient (:func:`standardize`,
  ``config.bonn.feature_normalization='batch'``, not BONN's): scaling the
  features then changes nothing the loss sees. Measured, it is not enough
  either: theta 1e-4, 1e-3 and 1e-2 gave 49.08%, 24.58% and 10.12%, the
  network silencing its features instead (the median dimension constant
  over the val split, the rest heavy-tailed). BONN's Algorithm 5 (line
  15) names no floor. BONN's
  centre-loss form sums over the batch's examples (``reduction='sum'``,
  ``config.bonn.feature_reduction='sum'``); bonnkd first averaged
  (``'mean'``, the config's default, which every earlier run has:
  ``theta`` then does not depend on the batch size, and is ``batch_size``
  times weaker than the same ``theta`` summed).

``bonnkd.train.train_step`` adds ``lambda * network_kernel_loss`` and
``theta * feature_loss`` when ``config.bonn.kernel_weight`` /
``feature_weight`` are above 0.
"""

import jax
import jax.numpy as jnp

__all__ = ['kernel_loss', 'network_kernel_loss', 'FEATURE_REDUCTIONS',
           'FEATURE_NORMALIZATIONS', 'standardize', 'feature_loss',
           'update_class_statistics']

_EPS = 1e-8


def _mode_statistics(kernel: jax.Array):
  """Per kernel (i, n): mu+, mu- (magnitudes) and psi, held constant."""
  k = jax.lax.stop_gradient(kernel)
  positive = k > 0
  axes = (0, 1)  # The kh x kw entries of one (input, output) channel pair.
  n_pos = jnp.sum(positive, axes)
  n_neg = jnp.sum(~positive, axes)
  mu_pos = jnp.sum(jnp.where(positive, k, 0.0), axes) / jnp.maximum(n_pos, 1)
  mu_neg = jnp.sum(jnp.where(positive, 0.0, -k), axes) / jnp.maximum(n_neg, 1)
  centre = jnp.where(positive, mu_pos, mu_neg)
  psi = jnp.mean((jnp.abs(k) - centre) ** 2, axes) + _EPS
  return mu_pos, mu_neg, psi


def _learned_prior(kernel, prior_mean, prior_log_var):
  """(prior, log_det) of BONN's learned per-channel prior (Eqs. 3.118-3.119).

  ``sum_{entries} (|k| - mu_i)^2 / sigma_i^2`` and ``n sum_i log sigma_i^2``,
  both differentiable in ``k``, ``mu`` and ``log sigma^2``.
  """
  variance = jnp.exp(prior_log_var)
  prior = jnp.sum((jnp.abs(kernel) - prior_mean) ** 2 / variance)
  entries = kernel.size // kernel.shape[-1]
  return prior, entries * jnp.sum(prior_log_var)


def kernel_loss(kernel: jax.Array, scale: jax.Array, nu: float,
                trains_modulation: bool = True, prior_mean=None,
                prior_log_var=None):
  """BONN's kernel loss of one 1-bit conv layer, without lambda.

  Args:
    kernel: the latent kernel, (kh, kw, C_in, C_out).
    scale: the modulation vector ``w``, (C_out,).
    nu: weight of the Gaussian-mixture prior.
    trains_modulation: whether the loss has a gradient on ``scale`` (BONN's);
      False holds it constant.
    prior_mean, prior_log_var: BONN's learned prior, each (C_out,); None:
      the prior from the kernel's own statistics (see the module docstring).

  Returns:
    (loss, {'reconstruction', 'prior', 'log_det'}): loss =
    1/2 (reconstruction + nu (prior + log_det)), each summed over the
    layer's kernels.
  """
  if not trains_modulation:
    scale = jax.lax.stop_gradient(scale)
  reconstruction = jnp.sum((kernel - scale * jnp.sign(kernel)) ** 2)
  if prior_mean is not None:
    prior, log_det = _learned_prior(kernel, prior_mean, prior_log_var)
  else:
    mu_pos, mu_neg, psi = _mode_statistics(kernel)
    deviation = jnp.where(kernel > 0, kernel - mu_pos, kernel + mu_neg)
    prior = jnp.sum(deviation ** 2 / psi)
    log_det = kernel.shape[0] * kernel.shape[1] * jnp.sum(jnp.log(psi))
  loss = 0.5 * (reconstruction + nu * (prior + log_det))
  return loss, {'reconstruction': reconstruction, 'prior': prior,
                'log_det': log_det}


def network_kernel_loss(params, nu: float,
                        trains_modulation: bool = True) -> jax.Array:
  """The kernel loss summed over every layer with a modulation vector.

  Those are the 1-bit convs of ``weight_scale`` 'modulation' or
  'layer_modulation': each holds ``kernel`` and ``modulation`` side by side,
  and the latter its learned prior too.
  ``trains_modulation=False`` gives the loss no gradient on the modulations.
  """
  total = jnp.zeros((), jnp.float32)
  def visit(tree):
    nonlocal total
    if 'modulation' in tree and 'kernel' in tree:
      total = total + kernel_loss(
          tree['kernel'], tree['modulation'], nu, trains_modulation,
          tree.get('prior_mean'), tree.get('prior_log_var'))[0]
    for value in tree.values():
      if isinstance(value, dict):
        visit(value)
  visit(params)
  return total


FEATURE_REDUCTIONS = ('sum', 'mean')
FEATURE_NORMALIZATIONS = ('none', 'batch')


def standardize(features: jax.Array, eps: float = 1e-5) -> jax.Array:
  """(f - mean) / sqrt(var + eps) per dimension over the batch, (N, D).

  The mean and variance are in the gradient (as in BatchNorm), so a loss
  of the result has no gradient along scaling or shifting a dimension:
  ``sum_m g_{m,n} = 0`` and ``sum_m g_{m,n} f_{m,n} = 0`` up to ``eps``.
  """
  mean = jnp.mean(features, axis=0)
  var = jnp.var(features, axis=0)
  return (features - mean) * jax.lax.rsqrt(var + eps)


def feature_loss(features: jax.Array, labels: jax.Array, centres: jax.Array,
                 variances: jax.Array, reduction: str = 'sum') -> jax.Array:
  """BONN's feature loss, without theta (Eq. 3.108's second sum).

  Args:
    features: (N, D), the features before the classifier.
    labels: (N,) class ids.
    centres: (K, D) running class centres c (constant).
    variances: (K, D) running per-class variances sigma^2 (constant, > 0).
    reduction: 'sum' over the batch's examples m (BONN's) or 'mean'.

  Returns:
    the sum (or mean) over m of 1/2 (||f_m - c||^2 + sum_n [(f - c)^2 /
    sigma^2 + log sigma^2]).
  """
  c = jax.lax.stop_gradient(centres)[labels]
  var = jax.lax.stop_gradient(variances)[labels]
  d2 = (features - c) ** 2
  per_example = jnp.sum(d2, -1) + jnp.sum(d2 / var + jnp.log(var), -1)
  if reduction not in FEATURE_REDUCTIONS:
    raise ValueError(f'reduction must be one of {FEATURE_REDUCTIONS}, '
                     f'got {reduction!r}.')
  reduce = jnp.sum if reduction == 'sum' else jnp.mean
  return 0.5 * reduce(per_example)


def update_class_statistics(centres, variances, features, labels,
                            momentum: float, min_variance: float):
  """Running class centres and variances from one batch of features.

  Each class present in the batch moves by ``1 - momentum`` toward the
  batch's mean (and variance around the new centre) of its features; a
  class absent from the batch keeps its statistics. Every variance is then
  at least ``min_variance`` (``config.bonn.min_variance``; the module
  docstring says why).

  Returns:
    (centres, variances), each (K, D).
  """
  features = jax.lax.stop_gradient(features)
  one_hot = jax.nn.one_hot(labels, centres.shape[0], dtype=features.dtype)
  counts = jnp.sum(one_hot, 0)[:, None]
  present = counts > 0
  mean = one_hot.T @ features / jnp.maximum(counts, 1)
  new_centres = jnp.where(present,
                          momentum * centres + (1 - momentum) * mean, centres)
  spread = one_hot.T @ (features - new_centres[labels]) ** 2 / jnp.maximum(
      counts, 1)
  new_variances = jnp.where(
      present, momentum * variances + (1 - momentum) * spread, variances)
  return new_centres, jnp.maximum(new_variances, min_variance)
