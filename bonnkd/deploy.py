"""Runs an exported model (``bonnkd.export``) on a split: accuracy, size, speed.

  python -m bonnkd.deploy model.npz --data_source folder \\
      --data_dir ../shared/data/cifar10-jpeg [--split test] [--batch_size 128] \\
      [--compare] [--json]

The 1-bit convolutions with 1-bit inputs run on their packed bits: XNOR and
popcount, exact integer sums, in the native kernel (:mod:`bonnkd.cpu.xnor`,
which packs the input's signs inside the call) where it is built, else in
pure JAX (:func:`bonnkd.binary.packing.sign_xnor_conv2d`); a 1-bit kernel
on real inputs (the seed's stem) is unpacked to +-1 and convolved in
float32; real layers run as exported. A 1-bit conv whose count reaches
only the signs of the next 1-bit convs, through its scale, a BatchNorm or a
hard tanh (BONN's WRN block: conv1 -> bn2 -> conv2), writes those signs
packed instead (:func:`binary_outputs`, Larq Compute Engine's binary
output, exact: each channel's sign is an interval of integer counts), so no
float activation lies between the two; ``--no_binary_outputs`` runs every
op as exported. ``--compare`` also
restores the run's checkpoint (``run_dir`` in the file's header, or
``--run_dir``) and runs bonnkd's float eval of it on the same batches,
alternated batch by batch in this process, and reports both speeds, the
largest logit difference and whether every prediction agrees.

:func:`make_forward` is the forward pass for code: ``images (N, 32, 32, 3)
uint8 -> logits``.
"""

import argparse
from collections.abc import Callable, Sequence
import copy
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bonnkd import errors
from bonnkd import export
from bonnkd import models
from bonnkd.binary import layers
from bonnkd.binary import packing
from bonnkd.binary import quantizers
from bonnkd.cpu import conv_autotune
from bonnkd.cpu import heap
from bonnkd.cpu import xnor
from bonnkd.data import augment
from bonnkd.data import input_pipeline
from bonnkd.training import train_state

__all__ = ['XNOR_IMPLS', 'XnorKernels', 'xnor_kernels', 'binary_outputs',
           'make_forward', 'float_forward', 'load_split', 'run']


XNOR_IMPLS = ('auto', 'native', 'jax')


@dataclasses.dataclass(frozen=True)
class XnorKernels:
  """The XNOR-popcount convs a packed forward runs (one implementation).

  sign_conv: ``(x, kernel_words, strides, padding) -> int32``, the conv of
    sign(x), x real.
  words_conv: ``(x_words, kernel_words, channels, strides, padding) ->
    int32``, of packed signs.
  sign_conv_bits: ``(x, kernel_words, lo, hi, strides, padding) -> uint32``,
    the packed bits of ``lo <= count <= hi`` (a binary output).
  """
  sign_conv: Callable
  words_conv: Callable
  sign_conv_bits: Callable


def xnor_kernels(impl: str = 'auto') -> XnorKernels:
  """'native' (:mod:`bonnkd.cpu.xnor`, the signs packed inside the calls),
  'jax' (:mod:`bonnkd.binary.packing`) or 'auto' (native where built, on
  CPU)."""
  if impl not in XNOR_IMPLS:
    raise errors.ConfigError(f'xnor impl must be one of {XNOR_IMPLS}, got '
                             f'{impl!r}.')
  if impl == 'native' or (impl == 'auto' and xnor.available()):
    return XnorKernels(xnor.sign_xnor_conv2d, xnor.xnor_conv2d,
                       xnor.sign_xnor_conv2d_bits)
  if impl == 'auto':
    xnor.why_unavailable()  # Logs once why.
  return XnorKernels(packing.sign_xnor_conv2d, packing.xnor_conv2d,
                     packing.sign_xnor_conv2d_bits)


def _binary_xnor(op: dict) -> bool:
  return (op['op'] == 'conv' and op['weights'] == 'packed'
          and op['inputs'] == 'sign')


def _batch_norm(x, arrays: dict, name: str):
  """The exported BatchNorm (JAX or NumPy): (x - mean) * mul + bias."""
  return ((x - arrays[f'{name}/mean']) * arrays[f'{name}/mul']
          + arrays[f'{name}/bias'])


def _hard_tanh(x):
  return x.clip(-1, 1)


# The steps a binary output looks through: per channel and monotone.
_SIGN_STEPS = {'batch_norm': lambda op, x, a: _batch_norm(x, a, op['name']),
               'hard_tanh': lambda op, x, a: _hard_tanh(x)}


def _sign_steps(op: dict, consumers: dict) -> list[dict] | None:
  """The BatchNorm / hard tanh ops from ``op``'s count to 1-bit convs'
  signs, each read by the next alone, or None where the count goes
  elsewhere."""
  steps, value = [], op['out']
  while (len(consumers[value]) == 1
         and consumers[value][0]['op'] in _SIGN_STEPS):
    steps.append(consumers[value][0])
    value = steps[-1]['out']
  readers = consumers[value]
  if value == 'logits' or not readers or not all(
      _binary_xnor(r) and r['x'] == value for r in readers):
    return None
  return steps


def binary_outputs(program: export.Program) -> export.Program:
  """``program`` with each 1-bit conv whose count reaches only the signs of
  1-bit convs (through its scale, BatchNorms, hard tanh) writing those signs
  packed (``out_bits``; the readers ``x_bits``).

  A channel's sign after those steps is ``step(count) >= 0`` with ``step``
  monotone, so it is ``lo <= count <= hi`` for integers found by evaluating
  the steps, in float32 as :func:`make_forward` runs them, at every count
  (:func:`bonnkd.binary.packing.sign_intervals_np`): exact, not an
  approximation of the unfused forward. The file is not changed.
  """
  ops = copy.deepcopy(program.ops)
  arrays = dict(program.arrays)
  consumers = {op['out']: [] for op in ops}
  consumers['images'] = []
  for op in ops:
    for key in ('x', 'y'):
      if key in op:
        consumers[op[key]].append(op)
  dropped = set()
  for op in ops:
    if (not _binary_xnor(op) or op.get('x_bits')
        or op['features'] > xnor.MAX_BITS_FEATURES):
      continue
    steps = _sign_steps(op, consumers)
    if steps is None:
      continue
    name = op['name']

    def step(count, op=op, steps=steps, name=name):
      y = count * arrays[f'{name}/scale'] if op['scale'] else count
      for s in steps:
        y = _SIGN_STEPS[s['op']](s, y, arrays)
      return np.broadcast_to(y, (len(count), op['features']))

    kh, kw = arrays[f'{name}/kernel'].shape[:2]
    try:
      lo, hi = packing.sign_intervals_np(step, kh * kw * op['channels'])
    except ValueError:
      continue  # Not monotone: left unfused.
    arrays[f'{name}/lo'], arrays[f'{name}/hi'] = lo, hi
    op['out_bits'] = True
    value = steps[-1]['out'] if steps else op['out']
    for reader in consumers[value]:
      reader['x'], reader['x_bits'] = op['out'], True
    dropped.update(id(s) for s in steps)
  header = dict(program.header, ops=[op for op in ops
                                     if id(op) not in dropped])
  return export.Program(header, arrays)


def _conv(op: dict, x, arrays: dict, kernels: XnorKernels):
  """A conv op: XNOR-popcount where both operands are 1-bit."""
  name = op['name']
  kernel = arrays[f'{name}/kernel']
  strides, padding = tuple(op['strides']), op['padding']
  if _binary_xnor(op):
    if op.get('out_bits'):
      return kernels.sign_conv_bits(x, kernel, arrays[f'{name}/lo'],
                                    arrays[f'{name}/hi'], strides, padding)
    if op.get('x_bits'):
      y = kernels.words_conv(x, kernel, op['channels'], strides, padding)
    else:
      y = kernels.sign_conv(x, kernel, strides, padding)
    y = y.astype(jnp.float32)
  else:
    if op['weights'] == 'packed':
      kernel = packing.unpack_kernel(kernel, op['channels'])
    if op['inputs'] == 'sign':
      x = quantizers.sign(x)
    y = layers.conv2d(x, kernel, strides, padding, 'auto')
  if op['scale']:
    y = y * arrays[f'{name}/scale']
  return y


def _apply(ops: list[dict], arrays: dict, images, kernels: XnorKernels):
  values = {'images': images}
  for op in ops:
    kind, x = op['op'], values.get(op.get('x'))
    if kind == 'normalize':
      y = ((x.astype(jnp.float32) - arrays['normalize/mean'])
           / arrays['normalize/std'])
    elif kind == 'conv':
      y = _conv(op, x, arrays, kernels)
    elif kind == 'batch_norm':
      y = _batch_norm(x, arrays, op['name'])
    elif kind == 'relu':
      y = jax.nn.relu(x)
    elif kind == 'hard_tanh':
      y = _hard_tanh(x)
    elif kind == 'add':
      y = x + values[op['y']]
    elif kind == 'spatial_mean':
      y = jnp.mean(x, axis=(1, 2))
    elif kind == 'dense':
      y = x @ arrays[f'{op["name"]}/kernel'] + arrays[f'{op["name"]}/bias']
    else:
      raise errors.ConfigError(f'Unknown op {kind!r} in the exported model '
                               '(written by a newer bonnkd?).')
    values[op['out']] = y
  return values['logits']


def make_forward(program: export.Program, xnor_impl: str = 'auto',
                 fuse: bool = True) -> Callable:
  """``images (N, 32, 32, 3) uint8 -> logits (N, classes)``, jitted.

  ``xnor_impl``: which XNOR-popcount convs (:func:`xnor_kernels`); ``fuse``:
  binary outputs where they apply (:func:`binary_outputs`), else every op
  as exported.
  """
  if fuse:
    program = binary_outputs(program)
  arrays = {k: jnp.asarray(v) for k, v in program.arrays.items()}
  ops, kernels = program.ops, xnor_kernels(xnor_impl)
  return jax.jit(lambda images: _apply(ops, arrays, images, kernels))


def float_forward(config, variables) -> Callable:
  """bonnkd's float eval of a checkpoint: the same logits as training's."""
  model = models.create_model(config.model, dtype=config.dtype)
  apply = jax.jit(lambda v, images: model.apply(
      v, augment.normalize(images), train=False))
  return lambda images: apply(variables, images)


def _timed(forward, images):
  start = time.perf_counter()
  logits = np.asarray(jax.block_until_ready(forward(images)))
  return logits, time.perf_counter() - start


def run(program: export.Program, split: input_pipeline.Split,
        batch_size: int, compare: Callable | None = None,
        xnor_impl: str = 'auto', fuse: bool = True) -> dict:
  """Accuracy and speed of the packed forward (and of ``compare``) on split.

  Both forwards are compiled on the first batch, then every batch is timed,
  the two alternated batch by batch.
  """
  if fuse:
    program = binary_outputs(program)
  packed = make_forward(program, xnor_impl, fuse=False)
  batches = list(input_pipeline.eval_batches(split, batch_size))
  forwards = {'packed': packed}
  if compare is not None:
    forwards['float'] = compare
  for forward in forwards.values():  # Compile.
    jax.block_until_ready(forward(batches[0][0]))
  seconds = dict.fromkeys(forwards, 0.0)
  predictions = {name: [] for name in forwards}
  max_diff = 0.0
  for images, _, mask in batches:
    logits = {}
    for name, forward in forwards.items():
      logits[name], took = _timed(forward, images)
      seconds[name] += took
      predictions[name].append(np.argmax(logits[name], -1)[mask > 0])
    if compare is not None:
      max_diff = max(max_diff, float(np.max(np.abs(
          logits['packed'] - logits['float'])[mask > 0], initial=0.0)))
  examples = len(split)
  result = dict(examples=examples, batch_size=batch_size,
                binary_outputs=sum(op.get('out_bits', False)
                                   for op in program.ops))
  for name in forwards:
    predicted = np.concatenate(predictions[name])
    prefix = '' if name == 'packed' else 'float_'
    result[f'{prefix}accuracy'] = float(np.mean(predicted == split.labels))
    result[f'{prefix}images_per_sec'] = examples / seconds[name]
  if compare is not None:
    result['speedup'] = result['images_per_sec'] / result[
        'float_images_per_sec']
    result['predictions_equal'] = bool(np.array_equal(
        np.concatenate(predictions['packed']),
        np.concatenate(predictions['float'])))
    result['max_logit_diff'] = max_diff
  return result


def _args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m bonnkd.deploy',
      description='Runs an exported model (python -m bonnkd.export) on a '
      'split and reports accuracy, file size and images/s.')
  parser.add_argument('file', help='the exported .npz')
  parser.add_argument('--data_source', choices=('folder', 'tarball', 'tfds'),
                      help="default: the run's config.data.source")
  parser.add_argument('--data_dir', help="default: the run's config.data.dir")
  parser.add_argument('--split', choices=('test', 'val'), default='test')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--limit', type=int, default=-1,
                      help='a random subset of this many examples (default: '
                      'all of the split)')
  parser.add_argument('--compare', action='store_true',
                      help="also run bonnkd's float eval of the checkpoint, "
                      'alternated, and compare')
  parser.add_argument('--run_dir', help='the run of --compare (default: '
                      "the header's run_dir)")
  parser.add_argument('--json', action='store_true',
                      help='print one JSON object')
  parser.add_argument('--xnor', choices=XNOR_IMPLS, default='auto',
                      help='the XNOR-popcount conv: native (C++, where '
                      'built), jax, or auto (native where built)')
  parser.add_argument('--no_binary_outputs', action='store_true',
                      help='every 1-bit conv writes its counts, as exported '
                      '(default: those whose next layers are 1-bit write '
                      'their signs packed)')
  args = parser.parse_args(argv)
  if args.batch_size < 1:
    parser.error(f'--batch_size must be >= 1, got {args.batch_size}')
  return args


def _float_of(header: dict, run_dir: str | None) -> Callable:
  run_dir = run_dir or header['run_dir']
  step, variables = train_state.restore_variables(run_dir,
                                                  header['checkpoint'])
  if step != header['step']:
    raise errors.ConfigError(
        f'{run_dir}: its {header["checkpoint"]} checkpoint is step {step}, '
        f'the file was exported from step {header["step"]}.')
  config = ml_collections.ConfigDict(header['config'])
  return float_forward(config, variables)


def load_split(program: export.Program, split: str,
               data_source: str | None = None, data_dir: str | None = None,
               limit: int = -1) -> input_pipeline.Split:
  """``split`` of the exported run's data, or of the source / dir given.

  Raises:
    errors.ConfigError, errors.DataError: a bad source, or data that is not
      there (one message naming it), before anything is read.
  """
  return input_pipeline.load_split(program.header['config']['data'], split,
                                   data_source, data_dir, limit)


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
  args = _args(argv)
  program = export.load(args.file)
  header = program.header
  split = load_split(program, args.split, args.data_source, args.data_dir,
                     args.limit)
  config = ml_collections.ConfigDict(header['config'])
  # Each float conv (the packed model's real layers, and every conv of the
  # float eval) in the lowering measured fastest here, as in training.
  conv_autotune.tune(models.create_model(config.model, dtype=config.dtype),
                     args.batch_size)
  compare = _float_of(header, args.run_dir) if args.compare else None
  fuse = not args.no_binary_outputs
  result = run(program, split, args.batch_size, compare, args.xnor, fuse)
  result.update(file=args.file, split=args.split,
                file_bytes=os.path.getsize(args.file),
                float32_bytes=header['float32_bytes'],
                packed_layers=len(program.packed_layers()))
  if args.json:
    print(json.dumps(result, sort_keys=True))
    return 0
  sizes = result['file_bytes'], result['float32_bytes']
  print(f'{args.file}: {sizes[0]:,} bytes ({sizes[1]:,} as float32, '
        f'{sizes[1] / sizes[0]:.1f}x smaller), {result["packed_layers"]} '
        f'packed 1-bit layers, {result["binary_outputs"]} of them writing '
        'packed signs')
  print(f'{args.split}: {result["examples"]:,} examples, accuracy '
        f'{100 * result["accuracy"]:.2f}%, {result["images_per_sec"]:,.1f} '
        f'img/s (batch {args.batch_size})')
  if compare is not None:
    print(f'float eval: accuracy {100 * result["float_accuracy"]:.2f}%, '
          f'{result["float_images_per_sec"]:,.1f} img/s; packed '
          f'{result["speedup"]:.2f}x; predictions '
          f'{"all equal" if result["predictions_equal"] else "DIFFER"}, '
          f'largest logit difference {result["max_logit_diff"]:.2e}')
  return 0


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  sys.exit(main())
