"""Augmentation: crops are windows of the padded image, flips are mirrors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonnkd.data import augment


def images(n=6, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3),
                                              dtype=np.uint8)


def find_window(padded, crop):
  """All (dy, dx, flipped) such that crop is that window of padded."""
  hits = []
  for dy in range(padded.shape[0] - 31):
    for dx in range(padded.shape[1] - 31):
      window = padded[dy:dy + 32, dx:dx + 32]
      hits += [(dy, dx, False)] * np.array_equal(window, crop)
      hits += [(dy, dx, True)] * np.array_equal(window[:, ::-1], crop)
  return hits


@pytest.mark.parametrize('use_jit', [False, True])
def test_crop_flip_outputs_are_padded_windows(use_jit):
  x = images()
  fn = jax.jit(augment.random_crop_flip, static_argnums=(2, 3)) if use_jit \
      else augment.random_crop_flip
  out = np.asarray(fn(jax.random.key(0), jnp.asarray(x), 4, True))
  assert out.shape == x.shape and out.dtype == np.uint8
  offsets = []
  for image, crop in zip(x, out):
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    hits = find_window(padded, crop)
    assert hits, 'output is not a (flipped) window of the padded image'
    offsets.append(hits[0])
  # Six random images do not all get the same offset and flip.
  assert len(set(offsets)) > 1


def test_eager_and_jit_agree():
  x = jnp.asarray(images())
  rng = jax.random.key(3)
  np.testing.assert_array_equal(
      augment.random_crop_flip(rng, x),
      jax.jit(augment.random_crop_flip)(rng, x))


def test_no_padding_no_flip_is_identity():
  x = jnp.asarray(images())
  np.testing.assert_array_equal(
      augment.random_crop_flip(jax.random.key(0), x, 0, False), x)


def test_flip_only_mirrors_about_half():
  x = images(200)
  out = np.asarray(augment.random_crop_flip(jax.random.key(1),
                                            jnp.asarray(x), 0, True))
  same = np.all(out == x, axis=(1, 2, 3))
  mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert 70 < mirrored.sum() < 130  # Binomial(200, 1/2): 100 +- 4.2 sigma.


def test_augmentation_of_an_image_does_not_depend_on_batch_size():
  # Image i uses fold_in(rng, i): a sharded or shorter batch gets the same.
  x = jnp.asarray(images(8))
  rng = jax.random.key(5)
  np.testing.assert_array_equal(augment.random_crop_flip(rng, x)[:4],
                                augment.random_crop_flip(rng, x[:4]))


def test_normalize_matches_numpy():
  x = images(2)
  expected = (x.astype(np.float64) - np.array(augment.CIFAR10_MEAN)) / \
      np.array(augment.CIFAR10_STD)
  np.testing.assert_allclose(augment.normalize(jnp.asarray(x)), expected,
                             rtol=1e-5, atol=1e-5)
