"""The base config every experiment starts from; loading and overriding it.

Config files in ``configs/`` call :func:`base_config`, override what their
phase needs and select a preset (``configs/x.py:cpu``, read by :func:`load`).
Durations are counted in epochs (``num_epochs``, ``optim.warmup_epochs``,
``eval_every_epochs``); :func:`steps_per_epoch` turns them into steps in one
place. :func:`override` applies ``key=value`` strings typed by the config's
own fields, for the benchmarks, the plan runner and the tests (``launch.py``
gets the same from ``ml_collections.config_flags``).

This module is plain data: it imports nothing heavy. Each value is validated
next to what it configures (:func:`validate` here for the schedule, the
optimizer and distillation; ``bonnkd.models.validate_config`` for
``config.model``; ``bonnkd.input_pipeline.validate_config`` for
``config.data``), all called by ``bonnkd.train.validate_config`` before
anything compiles.
"""

import ast
import importlib.util
import math
import os

import ml_collections

from bonnkd import errors

__all__ = ['base_config', 'resnet_model', 'bonn_recipe', 'smoke_preset',
           'at_smoke_scale', 'unknown_preset', 'load', 'presets_of',
           'override', 'flatten', 'validate', 'check', 'steps_per_epoch',
           'num_train_steps', 'PHASES', 'PRESETS']

PHASES = ('phase1', 'teacher', 'phase2')
# The presets every config file in configs/ defines; a file may define more
# (its own module-level PRESETS lists them all).
PRESETS = ('default', 'cpu', 'smoke')


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
  # The computation's dtype: 'float32' or 'bfloat16' (activations and
  # convolutions; parameters, optimizer state, BatchNorm statistics and the
  # loss stay float32). bfloat16 on the GPU/TPU presets.
  config.dtype = 'float32'

  config.data = ml_collections.ConfigDict()
  # 'tfds' (downloads where there is internet), 'folder' (split/class/img,
  # read with tfds.ImageFolder) or 'tarball' (cifar-10-python.tar.gz).
  config.data.source = 'tfds'
  # tfds data_dir, the image-folder root, or the tarball's path.
  config.data.dir = ''
  # Images held out of train for model selection, chosen by split_seed.
  config.data.num_val = 5000
  config.data.split_seed = 0
  # Keep a random subset (seeded, fixed) of N train / eval images (-1: all);
  # for smoke tests.
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
  # Applied to the cross-entropy with the labels; with KD, to its CE term.
  config.optim.label_smoothing = 0.0

  # Knowledge distillation (phase 2). enabled=False trains the same student
  # on the labels alone (the baseline).
  config.kd = ml_collections.ConfigDict()
  config.kd.enabled = False
  # A finished bonnkd run directory; its config.json and best checkpoint.
  config.kd.teacher_workdir = ''
  config.kd.alpha = 0.5
  config.kd.temperature = 4.0

  # Running the command of a finished run again reports its final.json and
  # changes nothing; True evaluates the best checkpoint again and rewrites it.
  config.force_final_eval = False
  # Whether final.json evaluates the best checkpoint on test too; False for
  # model selection, which reads the val split only.
  config.eval_test = True

  # BONN's Bayesian losses (bonnkd/bayesian_losses.py): lambda, theta and nu
  # of Gu et al.'s Eq. 3.108. 0 turns a term off (training is then exactly
  # the plain one). The kernel loss applies to the 1-bit convs with a
  # learned modulation vector.
  config.bonn = ml_collections.ConfigDict()
  config.bonn.kernel_weight = 0.0
  config.bonn.feature_weight = 0.0
  config.bonn.nu = 1e-4
  # Whether the kernel loss's reconstruction term trains the modulation
  # vectors too (BONN's); False: the latent kernels only.
  config.bonn.kernel_loss_trains_modulation = True
  # Momentum of the running class centres and variances (feature loss).
  config.bonn.feature_momentum = 0.9

  config.log_every_steps = 50
  config.eval_every_epochs = 1
  # Written to TensorBoard events as well as metrics.jsonl.
  config.tensorboard = True
  return config


def resnet_model(stage_sizes, widths, binarize: str = 'none',
                 binarize_what: str = 'both', quantizer: str = 'ste_sign',
                 weight_scale: str = 'modulation') -> ml_collections.ConfigDict:
  """``config.model`` for a :class:`bonnkd.models.ResNet`.

  Full precision unless ``binarize`` says which convs are 1-bit (the fields
  of the WRN's ``config.model``).
  """
  return ml_collections.ConfigDict(dict(
      name='resnet', stage_sizes=tuple(stage_sizes), widths=tuple(widths),
      binarize=binarize, binarize_what=binarize_what, quantizer=quantizer,
      weight_scale=weight_scale, conv_impl='auto'))


# BONN's loss weights for its complete recipe (lambda, theta, nu of Eq.
# 3.108), chosen on the val split by ``configs/plans/bonn.py:cpu_select``
# (results/bonn/README.md; the test split was not read): the best of each
# weight's grid {1e-4, 1e-3, 1e-2}, each tried alone. At that short budget
# neither beat plain training on val (lambda hurt at every weight, theta
# 1e-4 tied), so these are the smallest, least harmful weights tried.
BONN_KERNEL_WEIGHT = 1e-4
BONN_FEATURE_WEIGHT = 1e-4
BONN_NU = 1e-4


def bonn_recipe(config) -> ml_collections.ConfigDict:
  """BONN's complete recipe (Gu et al., ICCV 2019) on ``config.model``.

  Every inner 3x3 conv 1-bit in weights and activations (approx_sign, the
  learned modulation vector; stem, 1x1 shortcuts and classifier
  real-valued), trained with both Bayesian losses at the weights above.
  """
  config.model.binarize = 'inner'
  config.model.binarize_what = 'both'
  config.model.quantizer = 'approx_sign'
  config.model.weight_scale = 'modulation'
  config.bonn.kernel_weight = BONN_KERNEL_WEIGHT
  config.bonn.feature_weight = BONN_FEATURE_WEIGHT
  config.bonn.nu = BONN_NU
  return config


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


def at_smoke_scale(config) -> ml_collections.ConfigDict:
  """A copy of ``config`` at smoke size, its model's layout kept.

  The data and schedule of :func:`smoke_preset`; a WRN becomes WRN-10-1 and
  a ResNet gets one block a stage at 1/8 of its widths, with the same
  binarization, quantizer and scales. For exercising a full-size preset's
  code paths (the notebook's accelerator branch in CI) in seconds.
  """
  config = smoke_preset(config.copy_and_resolve_references())
  if config.model.name == 'wide_resnet':
    config.model.depth, config.model.width = 10, 1
  else:
    config.model.stage_sizes = tuple(1 for _ in config.model.stage_sizes)
    config.model.widths = tuple(max(w // 8, 4) for w in config.model.widths)
  return config


def unknown_preset(config_name: str, preset: str,
                   presets=PRESETS) -> errors.ConfigError:
  known = ', '.join("'' (default)" if p == 'default' else repr(p)
                    for p in presets)
  return errors.ConfigError(
      f'Unknown preset {preset!r} for {config_name}; known presets: {known}.')


def presets_of(path: str) -> tuple[str, ...]:
  """The presets of a config file (its PRESETS, else the common ones)."""
  return tuple(getattr(_config_module(path), 'PRESETS', PRESETS))


def _config_module(path: str):
  """The config file ``path`` as a module (ConfigError if it is not one)."""
  if not os.path.isfile(path):
    raise errors.ConfigError(f'Config file {path!r} does not exist.')
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise errors.ConfigError(f'Config file {path!r} defines no get_config().')
  return module


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of ``'path/to/file.py[:preset]'``, as ``launch.py`` reads it.

  Raises:
    errors.ConfigError: no such file, or it has no ``get_config``, or the
      preset is unknown.
  """
  path, _, preset = spec.partition(':')
  return _config_module(path).get_config(preset)


def flatten(tree, prefix: str = '') -> dict:
  """{'a.b': value} of a nested config or dict (the keys of overrides)."""
  flat = {}
  for key, value in tree.items():
    if hasattr(value, 'items'):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _parse(key: str, text: str, old):
  """``text`` as a value of the type of ``old`` (the field's current value)."""
  if isinstance(old, bool):
    lowered = text.strip().lower()
    if lowered in ('true', '1', 'yes'):
      return True
    if lowered in ('false', '0', 'no'):
      return False
    raise errors.ConfigError(
        f'Invalid override {key}={text!r}: expected a boolean (True/False).')
  if isinstance(old, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise errors.ConfigError(
        f'Invalid override {key}={text!r}: expected a '
        f'{type(old).__name__} like {old!r}.') from e
  if isinstance(old, float) and isinstance(value, int):
    value = float(value)
  if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(old)(value)
  if old is not None and not isinstance(value, type(old)):
    raise errors.ConfigError(
        f'Invalid override {key}={text!r}: expected a '
        f'{type(old).__name__} like {old!r}.')
  return value


def override(config, items) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``'a.b=value'`` items applied.

  Each value is parsed as the type of the field it replaces: ``'False'``
  gives ``False`` for a boolean (not ``bool('False')``), ``'3'`` gives
  ``3.0`` for a float, ``'(1, 2)'`` a tuple. Items may also be
  ``(key, value)`` pairs of Python values, set as they are.

  Raises:
    errors.ConfigError: an unknown key, or a value of the wrong type.
  """
  config = config.copy_and_resolve_references()
  for item in items:
    if isinstance(item, str):
      key, sep, text = item.partition('=')
      if not sep:
        raise errors.ConfigError(
            f'Invalid override {item!r}: expected key=value.')
    else:
      key, text = item
    *parents, leaf = key.strip().split('.')
    node = config
    for i, name in enumerate(parents + [leaf]):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        raise errors.ConfigError(
            f'Invalid override {key}: the config has no field '
            f'{".".join((parents + [leaf])[:i + 1])!r}.')
      if i < len(parents):
        node = node[name]
    node[leaf] = _parse(key, text, node[leaf]) if isinstance(text, str) \
        else text
  return config


def steps_per_epoch(num_train_examples: int, batch_size: int) -> int:
  """Optimizer steps in one pass over the train split (last batch dropped)."""
  return max(num_train_examples // batch_size, 1)


def num_train_steps(config, num_train_examples: int) -> int:
  return int(math.ceil(
      config.num_epochs * steps_per_epoch(num_train_examples,
                                          config.batch_size)))


def check(ok: bool, key: str, value, expected: str) -> None:
  """Raises a ConfigError naming ``config.<key>``, its value and ``expected``."""
  if not ok:
    raise errors.ConfigError(
        f'Invalid config.{key}={value!r}: expected {expected}.')


def validate(config, num_devices: int = 1) -> None:
  """Checks the phase, batch sizes, schedule, optimizer and distillation.

  Raises one ConfigError naming the key, its value and what was expected.
  ``config.model`` and ``config.data`` are checked by their own modules;
  ``bonnkd.train.validate_config`` runs every check.
  """
  check(config.phase in PHASES, 'phase', config.phase, f'one of {PHASES}')
  check(config.batch_size > 0 and config.batch_size % num_devices == 0,
        'batch_size', config.batch_size,
        f'a positive multiple of the device count ({num_devices})')
  check(config.eval_batch_size > 0
        and config.eval_batch_size % num_devices == 0,
        'eval_batch_size', config.eval_batch_size,
        f'a positive multiple of the device count ({num_devices})')
  check(config.num_epochs > 0, 'num_epochs', config.num_epochs, 'a number > 0')
  o = config.optim
  check(o.lr > 0, 'optim.lr', o.lr, 'a learning rate > 0')
  check(0 <= o.momentum < 1, 'optim.momentum', o.momentum, 'a float in [0, 1)')
  check(o.weight_decay >= 0, 'optim.weight_decay', o.weight_decay,
        'a float >= 0')
  check(0 <= o.warmup_epochs <= config.num_epochs, 'optim.warmup_epochs',
        o.warmup_epochs, f'a number in [0, num_epochs={config.num_epochs}]')
  check(0 <= o.label_smoothing < 1, 'optim.label_smoothing',
        o.label_smoothing, 'a float in [0, 1)')
  check(config.log_every_steps > 0, 'log_every_steps', config.log_every_steps,
        'a positive integer')
  check(config.eval_every_epochs > 0, 'eval_every_epochs',
        config.eval_every_epochs, 'a positive integer')
  b = config.bonn
  check(b.kernel_weight >= 0, 'bonn.kernel_weight', b.kernel_weight,
        'a weight >= 0')
  check(b.feature_weight >= 0, 'bonn.feature_weight', b.feature_weight,
        'a weight >= 0')
  check(b.nu >= 0, 'bonn.nu', b.nu, 'a weight >= 0')
  check(0 <= b.feature_momentum < 1, 'bonn.feature_momentum',
        b.feature_momentum, 'a float in [0, 1)')
  trains = b.get('kernel_loss_trains_modulation', True)
  check(isinstance(trains, bool), 'bonn.kernel_loss_trains_modulation',
        trains, 'True or False')
  if b.kernel_weight > 0:
    m = config.model
    check(m.get('weight_scale') == 'modulation' and m.get('binarize', 'none')
          != 'none' and m.get('binarize_what') in ('weights', 'both'),
          'bonn.kernel_weight', b.kernel_weight,
          "0 unless the model has 1-bit weights with weight_scale="
          "'modulation' (BONN's kernel loss regularises those)")
  if config.kd.enabled:
    check(bool(config.kd.teacher_workdir), 'kd.teacher_workdir',
          config.kd.teacher_workdir, 'the workdir of a finished teacher run')
    check(0 <= config.kd.alpha <= 1, 'kd.alpha', config.kd.alpha,
          'a float in [0, 1]')
    check(config.kd.temperature > 0, 'kd.temperature',
          config.kd.temperature, 'a temperature > 0')
