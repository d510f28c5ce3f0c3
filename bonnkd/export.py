r"""A run's best checkpoint as one inference file, its 1-bit kernels packed.

  python -m bonnkd.export RUN_DIR --out model.npz

The file is a NumPy ``.npz``, readable without JAX or bonnkd::

  with np.load('model.npz') as f:
    header = json.loads(bytes(f['header']))
    kernel_words = f['group0_block0/conv1/kernel']   # uint32, packed

``header`` (JSON) holds ``format`` ('bonnkd-inference'), ``version``, the
run's ``config`` (model and data), the checkpoint's ``step`` and
``val_accuracy``, the ``run_dir`` it came from, and ``ops``: the forward
pass in eval mode as a list of operations on named tensors, run in order
(``bonnkd.deploy`` runs it). Every other entry is an array named
``<layer>/<name>``:

* a 1-bit kernel (``weights: 'packed'``) is ``uint32`` of shape
  ``(kh, kw, ceil(C_in / 32), C_out)``: the signs of the latent kernel packed
  along the input channels, bit 1 for +1
  (:func:`bonnkd.binary.packing.pack_kernel_np`); its per-output-channel
  scale (BONN's modulation, or XNOR's mean |W| computed from the latent
  kernel) is ``<layer>/scale``;
* a real kernel (the stem, the 1x1 shortcuts, the classifier) stays float32;
* a BatchNorm is ``mean``, ``mul`` = gamma / sqrt(var + eps) and ``bias``:
  ``y = (x - mean) * mul + bias``, the running statistics folded into one
  multiply-add as flax computes it in eval mode.

A conv op reads ``inputs: 'sign'`` (its input is binarized: a W1A1 conv,
XNOR-popcount when its weights are packed too) or ``'real'``. Operations:
``normalize``, ``conv``, ``batch_norm``, ``relu``, ``hard_tanh``, ``add``,
``spatial_mean``, ``dense``; each names its input(s) ``x`` (``y``) and its
result ``out``.
"""

import argparse
from collections.abc import Sequence
import io
import json
import os
import sys
import zipfile

import flax.linen as nn
import jax
import numpy as np

from bonnkd import errors
from bonnkd import fileio
from bonnkd import models
from bonnkd.binary import layers
from bonnkd.binary import packing
from bonnkd.binary import quantizers
from bonnkd.data import augment
from bonnkd.run import run_dir as run_dir_lib
from bonnkd.training import train_state

__all__ = ['FORMAT', 'VERSION', 'Program', 'program_of', 'program_of_run',
           'export', 'save', 'nbytes', 'load', 'float32_bytes']

FORMAT = 'bonnkd-inference'
VERSION = 1


class Program:
  """The ops and arrays of an exported model (see the module docstring)."""

  def __init__(self, header: dict, arrays: dict[str, np.ndarray]):
    self.header = header
    self.arrays = arrays

  @property
  def ops(self) -> list[dict]:
    return self.header['ops']

  def packed_layers(self) -> list[str]:
    return [op['name'] for op in self.ops
            if op['op'] == 'conv' and op['weights'] == 'packed']


def _conv_specs(model: nn.Module) -> dict[str, dict]:
  """Every QuantConv of ``model``: its path -> what the export needs of it."""
  specs = {}
  for path, (module, input_shape) in models.quant_convs(
      model, train_state.IMAGE_SHAPE).items():
    signs = module.quantizer in quantizers.SIGN_QUANTIZERS
    specs[path] = dict(
        binary_weights=module.binarize_weights and signs,
        binary_inputs=module.binarize_inputs and signs,
        reads_raw=module.binarize_inputs,
        weight_scale=module.weight_scale if module.binarize_weights
        else 'none',
        strides=list(module.strides), channels=int(input_shape[-1]),
        features=module.features)
  return specs


def _at(tree, path: str):
  for name in path.split('/'):
    tree = tree[name]
  return tree


class _Builder:
  """Appends ops and their arrays; names each result after its op."""

  def __init__(self, variables, specs):
    self.params = variables['params']
    self.stats = variables.get('batch_stats', {})
    self.specs = specs
    self.ops: list[dict] = []
    self.arrays: dict[str, np.ndarray] = {}

  def _emit(self, op: dict) -> str:
    op.setdefault('out', f'{op.get("name", op["op"])}:{len(self.ops)}')
    self.ops.append(op)
    return op['out']

  def _array(self, key: str, value) -> None:
    self.arrays[key] = np.asarray(value)

  def normalize(self, x: str) -> str:
    self._array('normalize/mean', np.float32(augment.CIFAR10_MEAN))
    self._array('normalize/std', np.float32(augment.CIFAR10_STD))
    return self._emit(dict(op='normalize', name='normalize', x=x))

  def reads_raw(self, conv: str) -> bool:
    """Whether ``conv`` binarizes its input (so no ReLU precedes it)."""
    return self.specs[conv]['reads_raw']

  def has(self, layer: str) -> bool:
    return layer in self.specs

  def conv(self, name: str, x: str) -> str:
    spec = self.specs[name]
    kernel = np.asarray(_at(self.params, name)['kernel'], np.float32)
    if spec['binary_weights']:
      self._array(f'{name}/kernel', packing.pack_kernel_np(kernel))
    else:
      self._array(f'{name}/kernel', kernel)
    # As in training (XNOR's alpha recomputed from the latent kernel, the
    # modulation or BONN's layer mean of it), computed as the layer does.
    scale = jax.jit(layers.output_scale, static_argnums=0)(
        spec['weight_scale'], kernel,
        _at(self.params, name).get('modulation'))
    if scale is not None:
      self._array(f'{name}/scale', np.asarray(scale, np.float32))
    return self._emit(dict(
        op='conv', name=name, x=x, strides=spec['strides'],
        padding='SAME', channels=spec['channels'],
        features=spec['features'],
        weights='packed' if spec['binary_weights'] else 'float32',
        inputs='sign' if spec['binary_inputs'] else 'real',
        scale=scale is not None))

  def batch_norm(self, name: str, x: str) -> str:
    stats, params = _at(self.stats, name), _at(self.params, name)
    # flax's eval-mode BatchNorm: (x - mean) * (rsqrt(var + eps) * scale)
    # + bias, the multiplier computed as XLA computes it there.
    eps = models.BATCH_NORM_EPSILON
    mul = jax.jit(lambda v, s: jax.lax.rsqrt(v + eps) * s)(
        stats['var'], params['scale'])
    self._array(f'{name}/mean', np.asarray(stats['mean'], np.float32))
    self._array(f'{name}/mul', np.asarray(mul, np.float32))
    self._array(f'{name}/bias', np.asarray(params['bias'], np.float32))
    return self._emit(dict(op='batch_norm', name=name, x=x))

  def unary(self, op: str, x: str) -> str:
    return self._emit(dict(op=op, x=x))

  def add(self, x: str, y: str) -> str:
    return self._emit(dict(op='add', x=x, y=y))

  def dense(self, name: str, x: str) -> str:
    params = _at(self.params, name)
    self._array(f'{name}/kernel', np.asarray(params['kernel'], np.float32))
    self._array(f'{name}/bias', np.asarray(params['bias'], np.float32))
    return self._emit(dict(op='dense', name=name, x=x, out='logits'))


def _wide_resnet(model: models.WideResNet, b: _Builder, x: str) -> None:
  """:class:`bonnkd.models.WideResNet`'s eval forward, op by op."""

  def act(y, conv):  # BN -> sign for a 1-bit-input conv, BN -> ReLU else.
    return y if b.reads_raw(conv) else b.unary('relu', y)

  x = b.conv('stem', x)
  for group in range(3):
    for block in range((model.depth - 4) // 6):
      p = f'group{group}_block{block}'
      preact = b.batch_norm(f'{p}/bn1', x)
      y = b.conv(f'{p}/conv1', act(preact, f'{p}/conv1'))
      if b.has(f'{p}/shortcut'):
        x = b.conv(f'{p}/shortcut', act(preact, f'{p}/shortcut'))
      if model.shortcuts == 'every_conv':
        x = y = b.add(x, y)
      y = act(b.batch_norm(f'{p}/bn2', y), f'{p}/conv2')
      y = b.conv(f'{p}/conv2', y)
      x = b.add(x, y)
  x = b.unary('relu', b.batch_norm('bn', x))
  b.dense('head', b.unary('spatial_mean', x))


def _resnet(model: models.ResNet, b: _Builder, x: str) -> None:
  """:class:`bonnkd.models.ResNet`'s eval forward, op by op."""
  act = 'hard_tanh' if b.reads_raw('stage0_block0/conv1') else 'relu'
  x = b.unary(act, b.batch_norm('stem_bn', b.conv('stem', x)))
  for stage, blocks in enumerate(model.stage_sizes):
    for block in range(blocks):
      p = f'stage{stage}_block{block}'
      y = b.batch_norm(f'{p}/bn1', b.conv(f'{p}/conv1', x))
      if b.has(f'{p}/shortcut'):
        x = b.batch_norm(f'{p}/shortcut_bn', b.conv(f'{p}/shortcut', x))
      if model.shortcuts == 'every_conv':
        x = y = b.unary(act, b.add(x, y))
      else:
        y = b.unary(act, y)
      y = b.batch_norm(f'{p}/bn2', b.conv(f'{p}/conv2', y))
      x = b.unary(act, b.add(x, y))
  x = b.unary('spatial_mean', x)
  if 'head_bn' in b.stats:
    x = b.batch_norm('head_bn', x)
  b.dense('head', x)


def float32_bytes(variables) -> int:
  """Bytes of a model's parameters and BatchNorm statistics as float32."""
  return 4 * sum(int(np.size(leaf)) for leaf in jax.tree.leaves(variables))


def program_of(config, variables, **about) -> Program:
  """The inference program of ``config``'s model with ``variables``.

  Args:
    config: the run's config (its ``model``, ``dtype`` and ``data``).
    variables: ``{'params', 'batch_stats'}``.
    **about: more header fields (step, val_accuracy, run_dir).
  """
  model = models.create_model(config.model, dtype='float32')
  builder = _Builder(variables, _conv_specs(model))
  x = builder.normalize('images')
  {'wide_resnet': _wide_resnet, 'resnet': _resnet}[config.model.name](
      model, builder, x)
  header = dict(format=FORMAT, version=VERSION,
                config=dict(model=config.model.to_dict(),
                            dtype=config.dtype, data=config.data.to_dict()),
                float32_bytes=float32_bytes(variables), ops=builder.ops,
                **about)
  return Program(header, builder.arrays)


def _write(program: Program, f) -> None:
  header = np.frombuffer(json.dumps(program.header).encode(), np.uint8)
  np.savez(f, header=header, **program.arrays)


def save(program: Program, path: str) -> int:
  """Writes ``program`` to ``path`` (atomically); returns the file's bytes."""
  fileio.write_with(path, lambda f: _write(program, f))
  return os.path.getsize(path)


def nbytes(program: Program) -> int:
  """The bytes :func:`save` would write for ``program``."""
  buffer = io.BytesIO()
  _write(program, buffer)
  return buffer.tell()


def load(path: str) -> Program:
  """The program in an exported file (NumPy only).

  Raises:
    errors.ConfigError: no such file, not a bonnkd inference file, or one of
      a newer version.
  """
  if not os.path.isfile(path):
    raise errors.ConfigError(f'{path!r} does not exist or is not a file.')
  try:
    with np.load(path) as f:
      if 'header' not in f.files:
        raise errors.ConfigError(f'{path} is not a bonnkd inference file (no '
                                 'header).')
      header = json.loads(bytes(f['header']))
      arrays = {k: f[k] for k in f.files if k != 'header'}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    if isinstance(e, errors.ConfigError):
      raise
    raise errors.ConfigError(f'{path} is not a bonnkd inference file: {e}.'
                             ) from e
  if header.get('format') != FORMAT or header.get('version', 0) > VERSION:
    raise errors.ConfigError(
        f'{path}: format {header.get("format")!r} version '
        f'{header.get("version")}; this bonnkd reads {FORMAT!r} up to '
        f'version {VERSION}.')
  return Program(header, arrays)


def program_of_run(run_dir: str, which: str = 'best') -> Program:
  """The inference program of a run's best (or latest) checkpoint."""
  run = run_dir_lib.RunDir.open(run_dir)
  step, variables = train_state.restore_variables(run, which)
  about = dict(step=int(step), run_dir=run.path, checkpoint=which)
  final = run.final()
  if final and which == 'best':
    about['val_accuracy'] = final.get('val_accuracy')
  return program_of(run.config, jax.device_get(variables), **about)


def export(run_dir: str, out: str, which: str = 'best') -> dict:
  """Writes a run's checkpoint as an inference file; returns its summary."""
  program = program_of_run(run_dir, which)
  file_bytes = save(program, out)
  return dict(out=out, file_bytes=file_bytes,
              float32_bytes=program.header['float32_bytes'],
              packed_layers=len(program.packed_layers()),
              step=program.header['step'])


def _args(argv: Sequence[str]):
  parser = argparse.ArgumentParser(
      prog='python -m bonnkd.export',
      description="Writes a run's checkpoint as one inference file, its "
      '1-bit kernels packed (the format: bonnkd/export.py).')
  parser.add_argument('run_dir', help='the run directory')
  parser.add_argument('--out', required=True, help='the file to write (.npz)')
  parser.add_argument('--checkpoint', choices=('best', 'latest'),
                      default='best')
  return parser.parse_args(argv)


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
  args = _args(argv)
  done = export(args.run_dir, args.out, args.checkpoint)
  print(f'{done["out"]}: {done["file_bytes"]:,} bytes, '
        f'{done["packed_layers"]} packed 1-bit layers; the variables as '
        f'float32 are {done["float32_bytes"]:,} bytes '
        f'({done["float32_bytes"] / done["file_bytes"]:.1f}x); step '
        f'{done["step"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
