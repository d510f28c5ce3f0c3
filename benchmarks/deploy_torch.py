"""An exported 1-bit model: bonnkd's packed forward next to PyTorch's float eval.

  pip install -e '.[bench]'        # PyTorch (CPU), for this benchmark only
  python -m benchmarks.deploy_torch FILE --data_source folder \\
      --data_dir ../shared/data/cifar10-jpeg [--batch_size 128] [--limit N]

PyTorch runs the same exported program (``bonnkd.export``: the op list and
its arrays) as a PyTorch user would run the float model: every conv a
float32 ``torch.nn.functional.conv2d`` (the 1-bit kernels unpacked to +-1,
the 1-bit inputs signed), channels_last, under ``torch.inference_mode``,
BatchNorm folded as in the file. bonnkd runs it packed
(``bonnkd.deploy.make_forward``: XNOR-popcount where both operands are 1-bit).
Batches alternate between the two; img/s over the split, the ratio, and
whether every prediction agrees (an independent check of the packed path).
Name the CPU (``lscpu``) next to any figure.
"""

import argparse
import json

import jax
import numpy as np

from benchmarks import pytorch
from bonnkd import deploy
from bonnkd import errors
from bonnkd import export
from bonnkd.binary import packing
from bonnkd.cpu import heap
from bonnkd.data import input_pipeline


def torch_forward(program: export.Program):
  """``images (N, 32, 32, 3) uint8 -> logits``: the program in PyTorch float."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  def nchw(v, ndim=4):  # A per-channel vector, broadcast over (N, C, ...).
    return torch.from_numpy(np.array(v, np.float32)).view(
        1, -1, *(1,) * (ndim - 2))

  # Writable copies: PyTorch refuses to wrap read-only NumPy memory.
  arrays = {key: np.array(value) for key, value in program.arrays.items()}
  ops = program.ops
  weights = {}
  for op in ops:
    if op['op'] != 'conv':
      continue
    kernel = arrays[f'{op["name"]}/kernel']
    if op['weights'] == 'packed':
      kernel = packing.unpack_kernel_np(kernel, op['channels'])
    # HWIO -> OIHW, in channels_last memory as the activations.
    weights[op['name']] = torch.from_numpy(
        np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)),
                             np.float32)).contiguous(
                                 memory_format=torch.channels_last)

  def conv(op, x):
    kh = weights[op['name']].shape[2]
    if op['inputs'] == 'sign':
      x = torch.where(x >= 0, 1.0, -1.0)
    stride = tuple(op['strides'])
    if stride == (1, 1) or kh == 1:
      y = F.conv2d(x, weights[op['name']], stride=stride, padding=kh // 2)
    else:  # SAME for an even input and stride 2: pad (0, 1) as XLA does.
      pad = max((x.shape[2] - 1) // stride[0] * stride[0] + kh - x.shape[2], 0)
      x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
      y = F.conv2d(x, weights[op['name']], stride=stride)
    if op['scale']:
      y = y * nchw(arrays[f'{op["name"]}/scale'])
    return y

  def apply(images):
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float()
    values = {'images': x.contiguous(memory_format=torch.channels_last)}
    for op in ops:
      kind, x = op['op'], values.get(op.get('x'))
      name = op.get('name')
      if kind == 'normalize':
        y = ((x - nchw(arrays['normalize/mean']))
             / nchw(arrays['normalize/std']))
      elif kind == 'conv':
        y = conv(op, x)
      elif kind == 'batch_norm':
        # After the pooling (ResNet's head_bn) x is (N, C).
        y = ((x - nchw(arrays[f'{name}/mean'], x.dim()))
             * nchw(arrays[f'{name}/mul'], x.dim())
             + nchw(arrays[f'{name}/bias'], x.dim()))
      elif kind == 'relu':
        y = torch.relu(x)
      elif kind == 'hard_tanh':
        y = torch.clamp(x, -1.0, 1.0)
      elif kind == 'add':
        y = x + values[op['y']]
      elif kind == 'spatial_mean':
        y = x.mean((2, 3))
      elif kind == 'dense':
        y = (x @ torch.from_numpy(arrays[f'{name}/kernel'])
             + torch.from_numpy(arrays[f'{name}/bias']))
      else:
        raise ValueError(f'Unknown op {kind!r}.')
      values[op['out']] = y
    return values['logits'].numpy()

  def forward(images):
    with torch.inference_mode():
      return apply(images)

  return forward


def compare(program: export.Program, split: input_pipeline.Split,
            batch_size: int, xnor_impl: str = 'auto') -> dict:
  """img/s of both forwards over ``split``, batches alternated.

  ``bonnkd.deploy.run`` with PyTorch as the float forward, its keys named
  for this comparison.
  """
  result = deploy.run(program, split, batch_size, torch_forward(program),
                      xnor_impl)
  return {'examples': result['examples'], 'batch_size': batch_size,
          'packed_accuracy': result['accuracy'],
          'packed_images_per_sec': result['images_per_sec'],
          'torch_accuracy': result['float_accuracy'],
          'torch_images_per_sec': result['float_images_per_sec'],
          'packed_over_torch': result['speedup'],
          'predictions_equal': result['predictions_equal'],
          'binary_outputs': result['binary_outputs']}


@errors.exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('file', help='the exported .npz (python -m bonnkd.export)')
  parser.add_argument('--data_source', choices=('folder', 'tarball', 'tfds'))
  parser.add_argument('--data_dir')
  parser.add_argument('--split', choices=('test', 'val'), default='test')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--limit', type=int, default=-1)
  parser.add_argument('--threads', type=int, default=0,
                      help="PyTorch's intra-op threads (0: its default)")
  parser.add_argument('--xnor', choices=deploy.XNOR_IMPLS, default='auto')
  args = parser.parse_args(argv)
  torch = pytorch.require()
  if args.threads:
    torch.set_num_threads(args.threads)
  program = export.load(args.file)
  split = deploy.load_split(program, args.split, args.data_source,
                            args.data_dir, args.limit)
  result = compare(program, split, args.batch_size, args.xnor)
  print(f'torch {torch.__version__} ({torch.get_num_threads()} threads), '
        f'jax {jax.__version__}; {args.file}')
  print(json.dumps(result, sort_keys=True))
  return result


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  main()
