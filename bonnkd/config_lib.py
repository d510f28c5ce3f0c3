"""The base config every experiment starts from, and its validation.

Config files in ``configs/`` call :func:`base_config`, override what their
phase needs and select a preset (``configs/x.py:cpu``). Durations are counted
in epochs (``num_epochs``, ``optim.warmup_epochs``, ``eval_every_epochs``);
:func:`steps_per_epoch` turns them into steps in one place.
"""

import math

import ml_collections

from bonnkd import layers
from bonnkd import models
from bonnkd import quantizers

__all__ = ['base_config', 'resnet_model', 'smoke_preset', 'unknown_preset',
           'validate', 'steps_per_epoch', 'PHASES']

PHASES = ('phase1', 'teacher', 'phase2')
DATA_SOURCES = ('tfds', 'folder', 'tarball')


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all phases; every field is overridable."""
  config = ml_collections.ConfigDict()
  # What the run is, for reports: 'phase1' (binarized WRN), 'teacher'
  # (full-precision teacher) or 'phase2' (student, with or without KD).
  config.phase = 'phase1'
  # Seeds parameter init, augmentation and data order (not the val split).
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'wide_resnet'
  config.model.depth = 16
  config.model.width = 4
  # Which convs are 1-bit: one of models.BINARIZE_MODES.
  config.model.binarize = 'first_conv'
  # What of those convs is 1-bit: 'weights', 'activations' or 'both'.
  config.model.binarize_what = 'weights'
  config.model.quantizer = 'ste_sign'
  # 'none', 'xnor' (mean |W|) or 'modulation' (learned, BONN/MCN).
  config.model.weight_scale = 'modulation'
  config.model.dropout_rate = 0.0
  # 'auto' picks the fast lowering per backend (see bonnkd.layers.conv2d).
  config.model.conv_impl = 'auto'

  config.data = ml_collections.ConfigDict()
  # 'tfds' (downloads where there is internet), 'folder' (split/class/img,
  # read with tfds.ImageFolder) or 'tarball' (cifar-10-python.tar.gz).
  config.data.source = 'tfds'
  # tfds data_dir, the image-folder root, or the tarball's path.
  config.data.dir = ''
  # Images held out of train for model selection, chosen by split_seed.
  config.data.num_val = 5000
  config.data.split_seed = 0
  # Keep only the first N train / eval images (-1: all); for smoke tests.
  config.data.train_limit = -1
  config.data.eval_limit = -1
  # Random crop padding; 0 disables crop. Flip is a coin per image.
  config.data.crop_padding = 4
  config.data.flip = True

  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 30.0

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 0.1
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.weight_decay = 5e-4
  config.optim.warmup_epochs = 1.0
  config.optim.label_smoothing = 0.0

  # Knowledge distillation (phase 2). enabled=False trains the same student
  # on the labels alone (the baseline).
  config.kd = ml_collections.ConfigDict()
  config.kd.enabled = False
  # A finished bonnkd run directory; its config.json and best checkpoint.
  config.kd.teacher_workdir = ''
  config.kd.alpha = 0.5
  config.kd.temperature = 4.0

  config.log_every_steps = 50
  config.eval_every_epochs = 1
  # Written to TensorBoard events as well as metrics.jsonl.
  config.tensorboard = True
  return config


def resnet_model(stage_sizes, widths) -> ml_collections.ConfigDict:
  """``config.model`` for a :class:`bonnkd.models.ResNet` (full precision)."""
  return ml_collections.ConfigDict(dict(
      name='resnet', stage_sizes=tuple(stage_sizes), widths=tuple(widths),
      conv_impl='auto'))


def smoke_preset(config) -> ml_collections.ConfigDict:
  """Shrinks data and schedule to a few hundred images for tests (< 1 min)."""
  config.data.num_val = 128
  config.data.train_limit = 256
  config.data.eval_limit = 128
  config.num_epochs = 2.0
  config.batch_size = 32
  config.eval_batch_size = 64
  config.optim.lr = 0.05
  config.optim.warmup_epochs = 0.5
  config.log_every_steps = 4
  return config


def unknown_preset(config_name: str, preset: str) -> ValueError:
  return ValueError(
      f"Unknown preset {preset!r} for {config_name}; known presets: "
      "'' (default), 'cpu', 'smoke'.")


def steps_per_epoch(num_train_examples: int, batch_size: int) -> int:
  """Optimizer steps in one pass over the train split (last batch dropped)."""
  return max(num_train_examples // batch_size, 1)


def num_train_steps(config, num_train_examples: int) -> int:
  return int(math.ceil(
      config.num_epochs * steps_per_epoch(num_train_examples,
                                          config.batch_size)))


def _check(ok: bool, key: str, value, expected: str):
  if not ok:
    raise ValueError(f'Invalid config.{key}={value!r}: expected {expected}.')


def validate(config, num_devices: int = 1) -> None:
  """Raises one ValueError naming the key, its value and what was expected.

  Called before anything is compiled or written.
  """
  _check(config.phase in PHASES, 'phase', config.phase, f'one of {PHASES}')
  m = config.model
  _check(m.name in ('wide_resnet', 'resnet'), 'model.name', m.name,
         "'wide_resnet' or 'resnet'")
  if m.name == 'wide_resnet':
    _check(m.depth >= 10 and (m.depth - 4) % 6 == 0, 'model.depth', m.depth,
           'an integer 6n + 4 with n >= 1 (10, 16, 22, 28, ...)')
    _check(m.width >= 1, 'model.width', m.width, 'a positive integer')
    _check(m.binarize in models.BINARIZE_MODES, 'model.binarize', m.binarize,
           f'one of {models.BINARIZE_MODES}')
    _check(m.binarize_what in models.BINARIZE_WHAT, 'model.binarize_what',
           m.binarize_what, f'one of {models.BINARIZE_WHAT}')
    _check(m.quantizer in quantizers.QUANTIZERS, 'model.quantizer',
           m.quantizer, f'one of {sorted(quantizers.QUANTIZERS)}')
    _check(m.weight_scale in layers.WEIGHT_SCALES, 'model.weight_scale',
           m.weight_scale, f'one of {layers.WEIGHT_SCALES}')
    _check(0.0 <= m.dropout_rate < 1.0, 'model.dropout_rate',
           m.dropout_rate, 'a float in [0, 1)')
  if m.name == 'resnet':
    _check(len(m.stage_sizes) == len(m.widths) and len(m.widths) > 0
           and min(m.stage_sizes) > 0 and min(m.widths) > 0,
           'model.widths', (tuple(m.stage_sizes), tuple(m.widths)),
           'positive stage_sizes and widths of the same length')
  _check(m.conv_impl in layers.CONV_IMPLS, 'model.conv_impl', m.conv_impl,
         f'one of {layers.CONV_IMPLS}')

  d = config.data
  _check(d.source in DATA_SOURCES, 'data.source', d.source,
         f'one of {DATA_SOURCES}')
  _check(d.source == 'tfds' or bool(d.dir), 'data.dir', d.dir,
         f"the path of the data for data.source={d.source!r}")
  _check(d.num_val >= 0, 'data.num_val', d.num_val, 'an integer >= 0')
  _check(d.crop_padding >= 0, 'data.crop_padding', d.crop_padding,
         'an integer >= 0')

  _check(config.batch_size > 0 and config.batch_size % num_devices == 0,
         'batch_size', config.batch_size,
         f'a positive multiple of the device count ({num_devices})')
  _check(config.eval_batch_size > 0
         and config.eval_batch_size % num_devices == 0,
         'eval_batch_size', config.eval_batch_size,
         f'a positive multiple of the device count ({num_devices})')
  _check(config.num_epochs > 0, 'num_epochs', config.num_epochs, 'a number > 0')
  o = config.optim
  _check(o.lr > 0, 'optim.lr', o.lr, 'a learning rate > 0')
  _check(0 <= o.momentum < 1, 'optim.momentum', o.momentum, 'a float in [0, 1)')
  _check(o.weight_decay >= 0, 'optim.weight_decay', o.weight_decay,
         'a float >= 0')
  _check(0 <= o.warmup_epochs <= config.num_epochs, 'optim.warmup_epochs',
         o.warmup_epochs, f'a number in [0, num_epochs={config.num_epochs}]')
  _check(0 <= o.label_smoothing < 1, 'optim.label_smoothing',
         o.label_smoothing, 'a float in [0, 1)')
  _check(config.log_every_steps > 0, 'log_every_steps', config.log_every_steps,
         'a positive integer')
  _check(config.eval_every_epochs > 0, 'eval_every_epochs',
         config.eval_every_epochs, 'a positive integer')
  if config.kd.enabled:
    _check(bool(config.kd.teacher_workdir), 'kd.teacher_workdir',
           config.kd.teacher_workdir, 'the workdir of a finished teacher run')
    _check(0 <= config.kd.alpha <= 1, 'kd.alpha', config.kd.alpha,
           'a float in [0, 1]')
    _check(config.kd.temperature > 0, 'kd.temperature',
           config.kd.temperature, 'a temperature > 0')
