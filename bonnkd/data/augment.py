"""CIFAR augmentation and normalisation as jit-able JAX functions.

They run inside the compiled train step, on whatever device holds the batch,
so the host only gathers uint8 images. Both are per-example and vmapped, so a
batch sharded over the 'data' axis is augmented where it lives.

Standard CIFAR recipe (He et al. 2016; Zagoruyko & Komodakis 2016): pad 4
pixels with zeros, take a random 32x32 crop, flip horizontally with
probability 1/2; then subtract the per-channel mean and divide by the
per-channel standard deviation of the CIFAR-10 train set.
"""

import jax
import jax.numpy as jnp

__all__ = ['CIFAR10_MEAN', 'CIFAR10_STD', 'normalize', 'random_crop_flip']

# Per-channel statistics of the 50,000 CIFAR-10 train images, in [0, 255].
CIFAR10_MEAN = (125.307, 122.950, 113.865)
CIFAR10_STD = (62.993, 62.089, 66.705)


def normalize(images: jax.Array) -> jax.Array:
  """uint8 (..., 3) -> float32 with zero mean and unit variance per channel."""
  mean = jnp.asarray(CIFAR10_MEAN, jnp.float32)
  std = jnp.asarray(CIFAR10_STD, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def _crop_flip_one(rng, image, padding: int, flip: bool):
  height, width = image.shape[:2]
  crop_rng, flip_rng = jax.random.split(rng)
  if padding:
    image = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    dy, dx = jax.random.randint(crop_rng, (2,), 0, 2 * padding + 1)
    image = jax.lax.dynamic_slice(image, (dy, dx, 0),
                                  (height, width, image.shape[-1]))
  if flip:
    image = jnp.where(jax.random.bernoulli(flip_rng), image[:, ::-1], image)
  return image


def random_crop_flip(rng: jax.Array, images: jax.Array, padding: int = 4,
                     flip: bool = True) -> jax.Array:
  """Random ``padding``-pixel zero-pad crop and horizontal flip, per image.

  Args:
    rng: a PRNG key; image ``i`` uses ``fold_in(rng, i)``, so the result does
      not depend on how the batch is sharded.
    images: (N, H, W, C), any dtype (zero padding is applied as given).
    padding: pixels of zero padding on each side; 0 disables the crop.
    flip: whether to flip each image with probability 1/2.

  Returns:
    Augmented images, same shape and dtype.
  """
  rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))(
      jnp.arange(images.shape[0]))
  return jax.vmap(lambda r, x: _crop_flip_one(r, x, padding, flip))(
      rngs, images)
