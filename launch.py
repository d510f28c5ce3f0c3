"""Launches a bonnkd run: ``python launch.py --config CONFIG --workdir DIR``.

  python launch.py --config configs/phase1_bonn_wrn.py:cpu --workdir runs/p1 \
    --config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg

Everything else lives in ``bonnkd.train.train_and_evaluate``.
"""

import logging as std_logging

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from bonnkd import train

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with a preset: file.py:preset.',
    lock_config=True)


class _HideLibraryInfo(std_logging.Filter):
  """Keeps orbax's per-save INFO lines off the console (warnings still show)."""

  def filter(self, record):
    return record.levelno > std_logging.INFO or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_HideLibraryInfo())
  # tf.data / tfds must not take accelerator memory from JAX.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())
  train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
