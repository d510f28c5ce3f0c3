"""Inference time of one W1A1 convolution: packed XNOR-popcount vs float.

For the 1-bit 3x3 convs of the W1A1 WRN-16-3 (BONN's layout, the
``bonn_cpu`` preset) and of the W1A1 ResNet-18, at batch 1 and 128: the
forward pass of ``sign(x)`` convolved with a +-1 kernel as

* ``packed``: the input's signs packed 32 channels to a word and
  :func:`bonnkd.binary.packing.xnor_conv2d` (exact integer sums, pure
  JAX; :func:`bonnkd.binary.packing.sign_xnor_conv2d`); the packing is
  timed with it;
* ``native``: the same with the C++ kernel
  (:func:`bonnkd.cpu.xnor.sign_xnor_conv2d`, the widest instruction path
  this CPU has, the packing inside the call), what ``bonnkd.deploy`` runs
  where it is built;
* ``xla``: XLA's float convolution of the +-1 tensors, what bonnkd's
  float eval runs (``conv_impl='native'``);
* ``onednn``: oneDNN's float convolution (``bonnkd.cpu.onednn``), where
  built;
* ``torch``: PyTorch's float convolution (channels_last, oneDNN inside),
  where PyTorch is installed (``pip install -e '.[bench]'``).

All in one process, rounds alternated, medians reported with each one's
speed-up over ``xla``.

A batch-1 layer takes the native kernel ~0.03 ms, so one jitted call per
layer also times JAX's dispatch of the call, which a network's forward pays
once, not per layer. ``--chain K`` times K layers in one jitted call
instead, each on its own input and each waiting for the previous one's
output (``lax.optimization_barrier``, no work added), and reports the time
per layer: what a layer costs inside a compiled forward. PyTorch's eager
calls are timed one by one either way.

  python -m benchmarks.binary_conv_bench
  python -m benchmarks.binary_conv_bench --batch 1,128 --rounds 5 --models wrn16_3
  python -m benchmarks.binary_conv_bench --batch 1 --chain 16
"""

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import conv_bench
from benchmarks import pytorch
from bonnkd.binary import layers
from bonnkd.binary import packing
from bonnkd.binary import quantizers
from bonnkd.cpu import heap
from bonnkd.cpu import machine
from bonnkd.cpu import onednn
from bonnkd.cpu import xnor

# model -> the distinct (spatial size, C_in, C_out, stride) of its W1A1 convs.
SHAPES = {
    'wrn16_3': [(32, 48, 48, 1), (32, 48, 96, 2), (16, 96, 96, 1),
                (16, 96, 192, 2), (8, 192, 192, 1)],
    'resnet18': [(32, 64, 64, 1), (32, 64, 128, 2), (16, 128, 128, 1),
                 (16, 128, 256, 2), (8, 256, 256, 1), (8, 256, 512, 2),
                 (4, 512, 512, 1)],
}


def packed_conv(kernel_words, strides, sign_xnor_conv2d):
  return lambda x: sign_xnor_conv2d(x, kernel_words, strides)


def float_conv(kernel, strides, impl):
  return lambda x: layers.conv2d(quantizers.sign(x), kernel, strides, 'SAME',
                                 impl)


def chained(layer, length: int):
  """``layer`` on each of ``length`` inputs in one jitted call, in order.

  The inputs are distinct, so no call's result is reused; each input is
  released to its layer only once the previous layer's output exists
  (an optimization barrier: a dependency, no work), so the layers run one
  after another, as in a network, not side by side on XLA's pool. Returns
  the jitted function of a tuple of inputs and the tuple of outputs.
  """
  def forward(xs):
    ys = []
    for x in xs:
      if ys:
        x, ys[-1] = jax.lax.optimization_barrier((x, ys[-1]))
      ys.append(layer(x))
    return tuple(ys)
  return jax.jit(forward)


def torch_conv(kernel, stride):
  """PyTorch's float conv of sign(x), NHWC in and out (channels_last)."""
  import torch  # pylint: disable=g-import-not-at-top
  weight = torch.from_numpy(np.ascontiguousarray(
      np.transpose(kernel, (3, 2, 0, 1)))).contiguous(
          memory_format=torch.channels_last)

  def forward(x):
    with torch.inference_mode():
      t = torch.from_numpy(x).permute(0, 3, 1, 2)  # a channels_last view
      y = torch.nn.functional.conv2d(torch.where(t >= 0, 1.0, -1.0), weight,
                                     stride=stride, padding=1)
      return y.permute(0, 2, 3, 1).numpy()
  return forward


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='wrn16_3,resnet18')
  parser.add_argument('--batch', default='1,128')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--min_round_s', type=float, default=0.05,
                      help='each round repeats a forward until it lasts this '
                      'long (batch 1 calls take ~0.1 ms)')
  parser.add_argument('--impls', default='native,packed,xla,onednn,torch',
                      help="'native', 'onednn' and 'torch' are skipped where "
                      'absent')
  parser.add_argument('--xnor_path', default='auto',
                      choices=sorted(xnor.PATHS),
                      help="the native kernel's instruction path (default: "
                      'the widest this CPU has)')
  parser.add_argument('--shapes', type=int, default=None,
                      help='time the first N shapes of each model only')
  parser.add_argument('--chain', type=int, default=1,
                      help='layers per jitted call, each on its own input, '
                      'one after another; times are per layer (PyTorch: '
                      'one call per layer)')
  args = parser.parse_args(argv)
  if args.chain < 1:
    parser.error(f'--chain must be >= 1, got {args.chain}')
  impls = [i for i in args.impls.split(',')
           if (i != 'onednn' or onednn.available())
           and (i != 'native' or xnor.available())
           and (i != 'torch' or pytorch.available())]
  print(f'backend={jax.default_backend()} cpu={machine.cpu_name()} native '
        f'paths={sorted(xnor.paths())} (timed: {args.xnor_path}); ms per '
        f'forward of one W1A1 3x3 conv'
        + (f' ({args.chain} chained in one jitted call)' if args.chain > 1
           else '')
        + f', medians of {args.rounds} alternated rounds; x: speed-up over '
        'xla')
  print(f'{"model":>9} {"batch":>5} {"HxW":>6} {"Cin":>4} {"Cout":>4} '
        f'{"s":>2} ' + ' '.join(f'{i + " ms":>10}' for i in impls) + ' '
        + ' '.join(f'{"x " + i:>9}' for i in impls if i != 'xla'))
  rng = np.random.default_rng(0)
  for model in args.models.split(','):
    for batch in (int(b) for b in args.batch.split(',')):
      for size, cin, cout, stride in SHAPES[model][:args.shapes]:
        x = rng.normal(size=(batch, size, size, cin)).astype(np.float32)
        kernel = rng.normal(size=(3, 3, cin, cout)).astype(np.float32)
        signs = np.where(kernel >= 0, 1.0, -1.0).astype(np.float32)
        strides = (stride, stride)
        make = {
            'packed': lambda: packed_conv(
                jnp.asarray(packing.pack_kernel_np(kernel)), strides,
                packing.sign_xnor_conv2d),
            'native': lambda: packed_conv(
                jnp.asarray(packing.pack_kernel_np(kernel)), strides,
                functools.partial(xnor.sign_xnor_conv2d,
                                  path=args.xnor_path)),
            'xla': lambda: float_conv(jnp.asarray(signs), strides, 'native'),
            'onednn': lambda: float_conv(jnp.asarray(signs), strides,
                                         'onednn'),
            'torch': lambda: torch_conv(signs, stride),
        }
        chain = {impl: 1 if impl == 'torch' else args.chain
                 for impl in impls}
        xs = tuple(jnp.asarray(rng.normal(size=x.shape).astype(np.float32))
                   for _ in range(args.chain - 1))
        forwards = {impl: make[impl]() if impl == 'torch'
                    else chained(make[impl](), chain[impl]) for impl in impls}
        inputs = {impl: x if impl == 'torch' else (jnp.asarray(x),) + xs
                  for impl in impls}
        times = {impl: [] for impl in impls}
        for _ in range(args.rounds):
          for impl in impls:
            times[impl].append(conv_bench.seconds_per_call(
                forwards[impl], inputs[impl], repeats=args.repeats,
                min_seconds=args.min_round_s) / chain[impl])
        ms = {impl: 1e3 * statistics.median(t) for impl, t in times.items()}
        base = ms.get('xla', ms[impls[0]])
        print(f'{model:>9} {batch:>5} {size:>4}^2 {cin:>4} {cout:>4} '
              f'{stride:>2} ' + ' '.join(f'{ms[i]:>10.3f}' for i in impls)
              + ' ' + ' '.join(f'{base / ms[i]:>8.2f}x' for i in impls
                               if i != 'xla'), flush=True)


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  main()
