"""Checks of the schedule, optimizer, BONN's loss weights and distillation.

Each value is validated next to what it configures: here the fields of the
base config; ``bonnkd.models.validate_config`` checks ``config.model``,
``bonnkd.data.input_pipeline.validate_config`` checks ``config.data``; all
are called by ``bonnkd.train.validate_config`` before anything compiles.
"""

from bonnkd import errors
from bonnkd.binary import bayesian_losses
from bonnkd.config import defaults

__all__ = ['OPTIMIZERS', 'check', 'validate']

# bonnkd.training.train_state.create_optimizer builds each.
OPTIMIZERS = ('sgd', 'adam')


def check(ok: bool, key: str, value, expected: str) -> None:
  """A ConfigError naming ``config.<key>``, its value and ``expected``."""
  if not ok:
    raise errors.ConfigError(
        f'Invalid config.{key}={value!r}: expected {expected}.')


def validate(config, num_devices: int = 1) -> None:
  """Checks the phase, batch sizes, schedule, optimizer and distillation.

  Raises one ConfigError naming the key, its value and what was expected.
  ``config.model`` and ``config.data`` are checked by their own modules,
  and whether the model has what the kernel loss regularises by
  ``bonnkd.train.validate_config``, which runs every check.
  """
  check(config.phase in defaults.PHASES, 'phase', config.phase,
        f'one of {defaults.PHASES}')
  check(config.batch_size > 0 and config.batch_size % num_devices == 0,
        'batch_size', config.batch_size,
        f'a positive multiple of the device count ({num_devices})')
  check(config.eval_batch_size > 0
        and config.eval_batch_size % num_devices == 0,
        'eval_batch_size', config.eval_batch_size,
        f'a positive multiple of the device count ({num_devices})')
  check(config.num_epochs > 0, 'num_epochs', config.num_epochs, 'a number > 0')
  o = config.optim
  check(o.name in OPTIMIZERS, 'optim.name', o.name, f'one of {OPTIMIZERS}')
  check(o.lr > 0, 'optim.lr', o.lr, 'a learning rate > 0')
  check(0 <= o.momentum < 1, 'optim.momentum', o.momentum, 'a float in [0, 1)')
  check(o.weight_decay >= 0, 'optim.weight_decay', o.weight_decay,
        'a float >= 0')
  check(o.latent_weight_decay >= 0 or o.latent_weight_decay == -1,
        'optim.latent_weight_decay', o.latent_weight_decay,
        'a float >= 0, or -1 for optim.weight_decay')
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
  check(b.min_variance > 0, 'bonn.min_variance', b.min_variance,
        'a variance > 0')
  check(b.feature_normalization in bayesian_losses.FEATURE_NORMALIZATIONS,
        'bonn.feature_normalization', b.feature_normalization,
        f'one of {bayesian_losses.FEATURE_NORMALIZATIONS}')
  check(isinstance(b.kernel_loss_trains_modulation, bool),
        'bonn.kernel_loss_trains_modulation', b.kernel_loss_trains_modulation,
        'True or False')
  if config.kd.enabled:
    check(bool(config.kd.teacher_workdir), 'kd.teacher_workdir',
          config.kd.teacher_workdir, 'the workdir of a finished teacher run')
    check(0 <= config.kd.alpha <= 1, 'kd.alpha', config.kd.alpha,
          'a float in [0, 1]')
    check(config.kd.temperature > 0, 'kd.temperature',
          config.kd.temperature, 'a temperature > 0')
