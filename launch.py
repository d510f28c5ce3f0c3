"""Launches a bonnkd run: ``python launch.py --config CONFIG --workdir DIR``.

  python launch.py --config configs/phase1_bonn_wrn.py:cpu --workdir runs/p1 \
    --config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg

Several hosts (each process runs this same command): ``--distributed`` on a
TPU pod or under SLURM, where JAX finds the cluster itself; elsewhere also
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.

On a CPU, ``--xla_cpu_flags=auto`` (the default, or ``$BONNKD_XLA_CPU_FLAGS``)
sets the XLA:CPU flags that time fastest for this config on this machine,
measured once and cached (``bonnkd.cpu.xla_cpu_flags``); ``--xla_cpu_flags=default``
keeps XLA's own; and malloc keeps XLA:CPU's freed buffers for the next step
(``bonnkd.cpu.heap``; ``BONNKD_KEEP_FREED_BUFFERS=0`` turns it off).

A mistake in the input (config value, preset, data path, teacher run) prints
one line and exits with status 1. Everything else lives in
``bonnkd.train.train_and_evaluate``.
"""

import logging as std_logging

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from bonnkd import errors
from bonnkd import train
from bonnkd.cpu import heap
from bonnkd.cpu import xla_cpu_flags
from bonnkd.training import sharding

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with a preset: file.py:preset.',
    lock_config=True)
flags.mark_flags_as_required(['config'])
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False,
    'Join a multi-process job (jax.distributed.initialize) before anything '
    'else; without --coordinator_address JAX detects TPU pods and SLURM.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'HOST:PORT of process 0 (with --distributed).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', 0, 'Number of processes (with --coordinator_address).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', -1, 'This process, in [0, num_processes).')
_XLA_CPU_FLAGS = flags.DEFINE_string(
    'xla_cpu_flags', xla_cpu_flags.default_mode(),
    'auto: the XLA:CPU flags measured fastest for this config on this machine '
    '(cached; a run of under bonnkd.cpu.xla_cpu_flags.MIN_STEPS steps keeps '
    "XLA's); or a name in bonnkd.cpu.xla_cpu_flags.CANDIDATES, e.g. default. "
    f'Default: ${xla_cpu_flags.MODE_ENV}, else auto.')


class _HideLibraryInfo(std_logging.Filter):
  """Keeps orbax's per-save INFO lines off the console (warnings still show)."""

  def filter(self, record):
    return record.levelno > std_logging.INFO or '/orbax/' not in record.pathname


def _hide_gpus_from_tensorflow():
  """tf.data / tfds must not take accelerator memory from JAX.

  tfds may download CIFAR-10 before XLA's flags are timed. A host without
  TensorFlow (config.data.source='tarball', config.tensorboard=False) has
  nothing to hide.
  """
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  tf.config.set_visible_devices([], 'GPU')


@errors.exit_on_user_error
def main(argv):
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _COORDINATOR.value and not (
      _NUM_PROCESSES.value > 0 and 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value):
    raise errors.UserError(
        f'--coordinator_address={_COORDINATOR.value!r} needs '
        f'--num_processes > 0 and --process_id in [0, num_processes), got '
        f'{_NUM_PROCESSES.value} and {_PROCESS_ID.value}.')
  config = flags.FLAGS.config
  distributed = _DISTRIBUTED.value or bool(_COORDINATOR.value)
  logging.get_absl_handler().addFilter(_HideLibraryInfo())
  train.validate_config(config)
  _hide_gpus_from_tensorflow()
  # Before JAX's backend starts (XLA reads XLA_FLAGS then), after the config
  # and the data are checked, so that a mistake is not measured. Several
  # processes would time each other: they take a cached choice or XLA's
  # defaults.
  xla_cpu_flags.apply(config, _XLA_CPU_FLAGS.value, measure=not distributed)
  if distributed:
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                    _PROCESS_ID.value)
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())
  train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
