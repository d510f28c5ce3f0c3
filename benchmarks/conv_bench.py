"""Forward + backward time of one convolution, per lowering, per shape.

The table behind ``conv_impl='auto'`` (``bonnkd/binary/layers.py``): for the conv
shapes of the CIFAR WRNs, time ``jax.grad`` of a conv through
``lax.conv_general_dilated`` ('native') and through one GEMM over shifted
windows ('im2col'), back to back in one process, and print the speed-up.

  python -m benchmarks.conv_bench            # all shapes, batch 128
  python -m benchmarks.conv_bench --batch 64 --repeats 10
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from bonnkd.binary import layers

# (spatial size, C_in, C_out, stride) of WRN-16-k convs, k = 1, 2, 4.
SHAPES = [
    (32, 16, 16, 1), (32, 32, 32, 1), (32, 64, 64, 1),
    (32, 16, 32, 2), (16, 32, 32, 1), (16, 64, 64, 1), (16, 128, 128, 1),
    (16, 64, 128, 2), (8, 64, 64, 1), (8, 128, 128, 1), (8, 256, 256, 1),
]


def seconds_per_call(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / repeats


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--shapes', type=int, default=len(SHAPES),
                      help='time the first N shapes only')
  args = parser.parse_args(argv)
  print(f'backend={jax.default_backend()} devices={jax.devices()} '
        f'batch={args.batch}')
  print(f'{"HxW":>6} {"Cin":>4} {"Cout":>4} {"s":>2} {"native ms":>10} '
        f'{"im2col ms":>10} {"speed-up":>8} {"GFLOP/s":>8}  auto')
  rng = np.random.default_rng(0)
  for size, cin, cout, stride in SHAPES[:args.shapes]:
    x = jnp.asarray(rng.normal(size=(args.batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.1, jnp.float32)
    times = {}
    for impl in ('native', 'im2col'):
      loss = lambda x, w, impl=impl: jnp.sum(
          layers.conv2d(x, w, (stride, stride), impl=impl) ** 2)
      grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
      times[impl] = seconds_per_call(grad, x, w, repeats=args.repeats)
    out = size // stride
    flops = 3 * 2 * args.batch * out * out * 9 * cin * cout
    use_im2col = layers._use_im2col(  # pylint: disable=protected-access
        x.shape, w.shape, (stride, stride), 'auto')
    auto = 'im2col' if use_im2col else 'native'
    best = min(times.values())
    print(f'{size:>4}^2 {cin:>4} {cout:>4} {stride:>2} '
          f'{times["native"] * 1e3:>10.1f} {times["im2col"] * 1e3:>10.1f} '
          f'{times["native"] / times["im2col"]:>7.2f}x '
          f'{flops / best / 1e9:>8.1f}  {auto}', flush=True)


if __name__ == '__main__':
  main()
