"""Forward + backward time of one convolution, per lowering, per shape.

The table behind ``conv_impl='auto'`` (``bonnkd/binary/layers.py``): for the
conv shapes of the CIFAR WRNs, time ``jax.grad`` of a conv (forward, input
and weight gradients) through ``lax.conv_general_dilated`` ('native'), one
GEMM over shifted windows ('im2col') and oneDNN's convolution as a custom
call ('onednn', where ``bonnkd.cpu.onednn`` is built), back to back in one
process, rounds alternated, and print each one's median and its speed-up
over native.

  python -m benchmarks.conv_bench            # all shapes, batch 128
  python -m benchmarks.conv_bench --batch 64 --repeats 10 --impls native,onednn
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bonnkd.binary import layers
from bonnkd.cpu import heap
from bonnkd.cpu import machine
from bonnkd.cpu import onednn

# (spatial size, C_in, C_out, stride) of WRN-16-k convs, k = 1, 2, 4.
SHAPES = [
    (32, 16, 16, 1), (32, 32, 32, 1), (32, 64, 64, 1),
    (32, 16, 32, 2), (16, 32, 32, 1), (16, 64, 64, 1), (16, 128, 128, 1),
    (16, 64, 128, 2), (8, 64, 64, 1), (8, 128, 128, 1), (8, 256, 256, 1),
]


def seconds_per_call(fn, *args, repeats: int, min_seconds: float = 0.0
                     ) -> float:
  """Mean seconds of a call, after one untimed call.

  At least ``repeats`` calls, and more until they last ``min_seconds``
  (``timeit``'s autorange): a call of 0.1 ms timed 5 times is mostly the
  clock's and the scheduler's noise.
  """
  jax.block_until_ready(fn(*args))
  calls, start = 0, time.perf_counter()
  while calls < repeats or time.perf_counter() - start < min_seconds:
    jax.block_until_ready(fn(*args))
    calls += 1
  return (time.perf_counter() - start) / calls


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--shapes', type=int, default=len(SHAPES),
                      help='time the first N shapes only')
  parser.add_argument('--impls', default='native,im2col,onednn',
                      help="lowerings; 'onednn' is skipped where unbuilt")
  args = parser.parse_args(argv)
  impls = [i for i in args.impls.split(',')
           if i != 'onednn' or onednn.available()]
  print(f'backend={jax.default_backend()} devices={jax.devices()} '
        f'batch={args.batch} cpu={machine.cpu_name()}; ms per forward + '
        f'backward, medians of {args.rounds} alternated rounds')
  print(f'{"HxW":>6} {"Cin":>4} {"Cout":>4} {"s":>2} '
        + ' '.join(f'{i + " ms":>10}' for i in impls)
        + ' ' + ' '.join(f'{"x " + i:>9}' for i in impls[1:])
        + '  auto')
  rng = np.random.default_rng(0)
  for size, cin, cout, stride in SHAPES[:args.shapes]:
    x = jnp.asarray(rng.normal(size=(args.batch, size, size, cin)),
                    jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.1, jnp.float32)
    grads = {}
    for impl in impls:
      loss = lambda x, w, impl=impl: jnp.sum(
          layers.conv2d(x, w, (stride, stride), impl=impl) ** 2)
      grads[impl] = jax.jit(jax.grad(loss, argnums=(0, 1)))
    times = {impl: [] for impl in impls}
    for _ in range(args.rounds):
      for impl in impls:
        times[impl].append(seconds_per_call(grads[impl], x, w,
                                            repeats=args.repeats))
    ms = {impl: 1e3 * statistics.median(t) for impl, t in times.items()}
    auto = layers.lowering(x.shape, w.shape, (stride, stride), 'auto')
    print(f'{size:>4}^2 {cin:>4} {cout:>4} {stride:>2} '
          + ' '.join(f'{ms[i]:>10.2f}' for i in impls) + ' '
          + ' '.join(f'{ms[impls[0]] / ms[i]:>8.2f}x' for i in impls[1:])
          + f'  {auto}', flush=True)


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  main()
