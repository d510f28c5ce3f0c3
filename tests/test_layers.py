"""Convolution lowerings and the binarizable QuantConv layer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bonnkd import errors
from bonnkd import models
from bonnkd.binary import layers
from bonnkd.binary import quantizers


def np_conv_same(x, w, stride):
  """Direct NumPy convolution with XLA's SAME padding (pads lo=total//2)."""
  n, h, wd, _ = x.shape
  kh, kw, _, co = w.shape
  out_h, out_w = -(-h // stride), -(-wd // stride)
  pad_h = max((out_h - 1) * stride + kh - h, 0)
  pad_w = max((out_w - 1) * stride + kw - wd, 0)
  xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                  (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
  out = np.zeros((n, out_h, out_w, co), np.float64)
  for i in range(out_h):
    for j in range(out_w):
      patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
      out[:, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
  return out


@pytest.mark.parametrize('impl', ['native', 'im2col'])
@pytest.mark.parametrize('kernel,stride', [(3, 1), (3, 2), (1, 1), (1, 2)])
def test_conv2d_matches_numpy(impl, kernel, stride):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  w = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
  out = jax.jit(lambda x, w: layers.conv2d(x, w, (stride, stride),
                                           impl=impl))(x, w)
  np.testing.assert_allclose(out, np_conv_same(x, w, stride), rtol=1e-4,
                             atol=1e-4)


def test_im2col_gradients_match_native():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 16, 16, 8)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(3, 3, 8, 6)).astype(np.float32))
  grads = {}
  for impl in ('native', 'im2col'):
    loss = lambda x, w, impl=impl: jnp.sum(
        jnp.sin(layers.conv2d(x, w, (2, 2), impl=impl)))
    grads[impl] = jax.grad(loss, argnums=(0, 1))(x, w)
  for a, b in zip(grads['native'], grads['im2col']):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unknown_conv_impl_raises():
  with pytest.raises(ValueError, match='im2col'):
    layers.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)),
                  impl='winograd')


def _init(layer, x):
  return layer.init(jax.random.key(0), x)


def test_full_precision_conv_has_only_a_kernel():
  layer = layers.QuantConv(4)
  params = _init(layer, jnp.zeros((1, 8, 8, 3)))['params']
  assert set(params) == {'kernel'}


@pytest.mark.parametrize('scale', ['none', 'xnor', 'modulation'])
def test_binary_conv_equals_numpy_sign_conv_times_scale(scale):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
  layer = layers.QuantConv(5, binarize_weights=True, binarize_inputs=True,
                           weight_scale=scale)
  params = _init(layer, jnp.asarray(x))['params']
  kernel = np.asarray(params['kernel'])
  expected = np_conv_same(np.where(x >= 0, 1.0, -1.0),
                          np.where(kernel >= 0, 1.0, -1.0), 1)
  if scale != 'none':
    expected *= np.abs(kernel).reshape(-1, 5).mean(0)
  out = layer.apply({'params': params}, jnp.asarray(x))
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  # The only extra parameter is the modulation vector, C_out values.
  expected_keys = {'kernel', 'modulation'} if scale == 'modulation' else {
      'kernel'}
  assert set(params) == expected_keys


def test_modulation_starts_at_xnor_alpha_and_is_trained():
  x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 6, 6, 3)),
                  jnp.float32)
  layer = layers.QuantConv(5, binarize_weights=True, weight_scale='modulation')
  params = _init(layer, x)['params']
  np.testing.assert_allclose(
      params['modulation'],
      quantizers.xnor_weight_scale(params['kernel']).reshape(-1), rtol=1e-6)

  def loss(p):
    return jnp.mean((layer.apply({'params': p}, x) - 1.0) ** 2)

  grads = jax.grad(loss)(params)
  assert np.all(np.abs(grads['modulation']) > 0)
  # The latent kernel also gets the STE gradient.
  assert np.any(np.abs(grads['kernel']) > 0)
  tx = optax.sgd(0.1)
  updates, _ = tx.update(grads, tx.init(params))
  new = optax.apply_updates(params, updates)
  assert loss(new) < loss(params)
  assert not np.allclose(new['modulation'], params['modulation'])


def test_modulation_init_xnor_is_mean_abs_k_and_normal_is_standard_normal():
  x = jnp.zeros((1, 4, 4, 64), jnp.float32)
  for scale in layers.MODULATED_SCALES:
    xnor = layers.QuantConv(512, binarize_weights=True, weight_scale=scale)
    params = _init(xnor, x)['params']
    np.testing.assert_allclose(
        params['modulation'],
        np.mean(np.abs(np.asarray(params['kernel'])), axis=(0, 1, 2)),
        rtol=1e-5)
    normal = layers.QuantConv(512, binarize_weights=True, weight_scale=scale,
                              modulation_init='normal')
    params = _init(normal, x)['params']
    w = np.asarray(params['modulation'], np.float64)
    # BONN's random w: N(0, 1) per output channel, whatever the kernel's
    # scale (Kaiming here: mean |k| ~ 0.05); 512 draws, 5 standard errors.
    assert w.shape == (512,)
    assert abs(w.mean()) < 5 / np.sqrt(512)
    assert abs(w.std() - 1.0) < 5 / np.sqrt(2 * 512)
    assert abs(np.mean(np.abs(w)) - np.sqrt(2 / np.pi)) < 0.1
    assert np.mean(w < 0) > 0.4
  with pytest.raises(ValueError, match='modulation_init.*normal'):
    _init(layers.QuantConv(4, binarize_weights=True, modulation_init='ones'),
          x)


def test_models_pass_modulation_init_to_every_modulated_conv():
  x = jnp.zeros((1, 8, 8, 3), jnp.float32)
  for model in (models.WideResNet(depth=10, width=1, binarize='inner',
                                  weight_scale='layer_modulation',
                                  modulation_init='normal'),
                models.ResNet(stage_sizes=(1, 1), widths=(8, 16),
                              binarize='inner', modulation_init='normal')):
    params = model.init(jax.random.key(0), x)['params']
    flat = {'/'.join(k.key for k in path): v for path, v in
            jax.tree_util.tree_leaves_with_path(params)}
    modulations = {p: v for p, v in flat.items() if p.endswith('/modulation')}
    assert len(modulations) == len(models.latent_kernel_paths(model)) > 0
    for path, w in modulations.items():
      kernel = flat[path.replace('/modulation', '/kernel')]
      # Not XNOR's start (positive, mean |k|): signed, far larger.
      assert not np.allclose(
          w, np.mean(np.abs(np.asarray(kernel)), axis=(0, 1, 2)))
  with pytest.raises(errors.ConfigError, match='model.modulation_init'):
    models.WideResNet(depth=10, width=1, binarize='inner',
                      modulation_init='ones')


def test_bonns_conv_scales_by_the_layer_mean_of_the_modulations_magnitude():
  # BONN, Eq. 3.111: the forward pass replaces every w_i by the layer's
  # average (of |w_i|, as RBONN's code); the vector itself is learned.
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
  layer = layers.QuantConv(5, binarize_weights=True, binarize_inputs=True,
                           weight_scale='layer_modulation')
  params = dict(_init(layer, jnp.asarray(x))['params'])
  assert set(params) == {'kernel', 'modulation', 'prior_mean',
                         'prior_log_var'}
  w = np.array([0.5, -1.5, 1.0, 2.0, -0.25], np.float32)
  params['modulation'] = jnp.asarray(w)
  kernel = np.asarray(params['kernel'])
  expected = np_conv_same(np.where(x >= 0, 1.0, -1.0),
                          np.where(kernel >= 0, 1.0, -1.0), 1)
  expected *= np.mean(np.abs(w))  # 1.05, one scalar for the layer
  out = layer.apply({'params': params}, jnp.asarray(x))
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  # d out_sum / d w_i = sum(conv) * sign(w_i) / C_out.
  grads = jax.grad(lambda p: jnp.sum(layer.apply({'params': p},
                                                 jnp.asarray(x))))(params)
  conv_sum = expected.sum() / np.mean(np.abs(w))
  np.testing.assert_allclose(grads['modulation'], conv_sum * np.sign(w) / 5,
                             rtol=1e-4)
  # The prior is read by the kernel loss only: no gradient from the output.
  assert not np.any(grads['prior_mean']) and not np.any(grads['prior_log_var'])


def test_bonns_conv_clips_the_kernels_gradient_where_w_times_k_leaves_one():
  # BONN, Eq. 3.113: d sign(k) / dk = 1 where |w_i k| <= 1, else 0.
  x = jnp.ones((1, 1, 1, 2), jnp.float32)
  layer = layers.QuantConv(2, kernel_size=(1, 1), binarize_weights=True,
                           weight_scale='layer_modulation')
  params = dict(_init(layer, x)['params'])
  # Kernel (1, 1, 2 in, 2 out); channel 0 has w = 2, channel 1 w = 0.5.
  params['kernel'] = jnp.asarray([[[[0.4, 0.4], [0.6, 3.0]]]], jnp.float32)
  params['modulation'] = jnp.asarray([2.0, 0.5], jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(layer.apply({'params': p}, x)))(params)
  # out_i = mean|w| * sum_n sign(k_ni); d/dk_ni = mean|w| * 1{|w_i k_ni| <= 1}
  # |w k| = [[0.8, 0.2], [1.2, 1.5]]: only k_10 and k_11 are clipped.
  np.testing.assert_allclose(grads['kernel'][0, 0],
                             1.25 * np.array([[1.0, 1.0], [0.0, 0.0]]))


def test_bonns_conv_needs_a_sign_quantizer():
  with pytest.raises(errors.ConfigError, match='model.weight_scale'):
    models.WideResNet(depth=10, width=1, binarize='inner',
                      weight_scale='layer_modulation', quantizer='identity')
