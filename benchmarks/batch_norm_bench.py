"""One BatchNorm in training mode, forward and backward: flax's vs bonnkd's.

  python -m benchmarks.batch_norm_bench [--rounds 5]

For the activation shapes of the CPU benchmarks' models (WRN-16-1 and
WRN-10-2 at batch 128, WRN-16-4 at batch 64): the gradient, with respect
to the input, scale and bias, of ``sum(BN(x) * w)`` with the running
statistics updated, jitted, for ``flax.linen.BatchNorm`` and
:class:`bonnkd.batch_norm.BatchNorm` (its hand-written gradient). Rounds
alternate between the two in this process; medians and the ratio. Name the
CPU (``lscpu``) next to any figure.
"""

import argparse
import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import conv_bench
from bonnkd import batch_norm
from bonnkd.cpu import heap
from bonnkd.cpu import machine

# (batch, height, width, channels) of the models' BatchNorms.
SHAPES = {
    'wrn16_1_b128': [(128, 32, 32, 16), (128, 16, 16, 32), (128, 8, 8, 64)],
    'wrn10_2_b128': [(128, 32, 32, 32), (128, 16, 16, 64), (128, 8, 8, 128)],
    'wrn16_4_b64': [(64, 32, 32, 64), (64, 16, 16, 128), (64, 8, 8, 256)],
}


def train_step_of(module: nn.Module, shape):
  """Jitted (x, w) -> the gradients, and the new batch statistics."""
  variables = module.init(jax.random.key(0), jnp.zeros(shape),
                          use_running_average=False)

  def loss(params, x, w):
    y, updates = module.apply({**variables, 'params': params}, x,
                              use_running_average=False,
                              mutable=['batch_stats'])
    return jnp.sum(y * w), updates

  grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
  return jax.jit(lambda x, w: grad(variables['params'], x, w))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default=','.join(SHAPES))
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--min_round_s', type=float, default=0.05)
  args = parser.parse_args(argv)
  print(f'backend={jax.default_backend()} cpu={machine.cpu_name()}; ms per '
        f'forward + backward of one BatchNorm, medians of {args.rounds} '
        'alternated rounds')
  print(f'{"model":>13} {"shape":>18} {"flax ms":>9} {"bonnkd ms":>9} '
        f'{"flax/bonnkd":>11}')
  rng = np.random.default_rng(0)
  modules = {'flax': nn.BatchNorm(momentum=0.9, epsilon=1e-5),
             'bonnkd': batch_norm.BatchNorm(momentum=0.9, epsilon=1e-5)}
  for model in args.models.split(','):
    for shape in SHAPES[model]:
      x = jnp.asarray(rng.normal(size=shape), jnp.float32)
      w = jnp.asarray(rng.normal(size=shape), jnp.float32)
      steps = {name: train_step_of(m, shape) for name, m in modules.items()}
      times = {name: [] for name in steps}
      for _ in range(args.rounds):
        for name, step in steps.items():
          times[name].append(conv_bench.seconds_per_call(
              step, x, w, repeats=5, min_seconds=args.min_round_s))
      ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
      print(f'{model:>13} {"x".join(map(str, shape)):>18} {ms["flax"]:>9.3f} '
            f'{ms["bonnkd"]:>9.3f} {ms["flax"] / ms["bonnkd"]:>10.2f}x',
            flush=True)


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  main()
