"""Train-step throughput (images/s) of a config, per convolution lowering.

Runs the real jitted ``bonnkd.train.train_step`` (augmentation, forward,
backward, SGD update) on random uint8 batches and reports images/s for each
``--impl``, measured back to back in one process so the ratio is meaningful
on a noisy machine.

  python -m benchmarks.train_step_bench --config configs/phase1_bonn_wrn.py:cpu
  python -m benchmarks.train_step_bench --config configs/phase1_bonn_wrn.py:cpu \
      --impl native,im2col,auto --steps 10
  # A distillation step: the student plus the forward pass of a teacher
  # (random weights of the teacher config's model; speed does not depend on
  # the values).
  python -m benchmarks.train_step_bench --config configs/phase2_kd_student.py:cpu \
      --teacher_config configs/phase1_bonn_wrn.py:cpu --impl auto
"""

import argparse

import jax
import numpy as np

from bonnkd import models
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import step_timing
from bonnkd.training import teacher as teacher_lib


def random_teacher(teacher_config, impl: str):
  """A teacher with the model of ``teacher_config`` and random weights."""
  model_config = teacher_config.model.copy_and_resolve_references()
  model_config.conv_impl = impl
  model = models.create_model(model_config, dtype=teacher_config.dtype)
  variables = model.init(jax.random.key(2), np.zeros((1, 32, 32, 3), np.float32))
  return teacher_lib.Teacher(model=model, variables=variables,
                             config=teacher_config, step=0)


def images_per_sec(config, impl: str, steps: int, warmup: int = 2,
                   teacher_config=None) -> float:
  """Images/s of the jitted train step with the conv lowering ``impl``."""
  config = overrides.override(config, [('model.conv_impl', impl)])
  teacher = (random_teacher(teacher_config, impl) if teacher_config
             else None)
  return step_timing.step_timer(config, teacher, warmup)(steps)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--impl', default='native,auto')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--teacher_config', default='',
                      help='time a distillation step with this teacher')
  parser.add_argument('--set', action='append', default=[],
                      help='override, e.g. --set model.width=4')
  args = parser.parse_args(argv)
  config = overrides.override(files.load(args.config), args.set)
  print(f'backend={jax.default_backend()} devices={jax.device_count()} '
        f'model={dict(config.model)} batch={config.batch_size} '
        f'teacher={args.teacher_config or None}')
  teacher_config = (files.load(args.teacher_config)
                    if args.teacher_config else None)
  results = {impl: images_per_sec(config, impl, args.steps,
                                  teacher_config=teacher_config)
             for impl in args.impl.split(',')}
  base = next(iter(results.values()))
  for impl, ips in results.items():
    print(f'{impl:>8}: {ips:8.1f} img/s  ({ips / base:.2f}x)')


if __name__ == '__main__':
  main()
