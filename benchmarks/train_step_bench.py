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
import time

import jax
import numpy as np

from bonnkd import config_lib
from bonnkd import input_pipeline
from bonnkd import models
from bonnkd import teacher as teacher_lib
from bonnkd import train


def random_teacher(teacher_config, impl: str):
  """A teacher with the model of ``teacher_config`` and random weights."""
  model_config = teacher_config.model.copy_and_resolve_references()
  model_config.conv_impl = impl
  model = models.create_model(model_config,
                              dtype=teacher_config.get('dtype', 'float32'))
  variables = model.init(jax.random.key(2), np.zeros((1, 32, 32, 3), np.float32))
  return teacher_lib.Teacher(model=model, variables=variables,
                             config=teacher_config, step=0)


def step_timer(config, teacher=None, warmup: int = 2, data: str = 'batch'):
  """Compiles the train step of ``config`` as ``train_and_evaluate`` does.

  Args:
    config: the run's config.
    teacher: a Teacher for a distillation step.
    warmup: untimed steps (compilation).
    data: 'batch' -- the step on one random uint8 batch already on the
      device; 'host' -- each step's rows gathered from a host split and sent
      (the loop before the train split moved to the devices); 'device' --
      the split on the devices, only the indices sent (``train_and_evaluate``).

  Returns:
    ``measure(steps) -> images/s`` (the state carries over between calls).
  """
  config = config.copy_and_resolve_references()
  config.kd.enabled = teacher is not None
  num_examples = 20 * config.batch_size
  run = train.setup(config, num_train_examples=num_examples, teacher=teacher)
  rng = np.random.default_rng(0)
  split = input_pipeline.Split(
      rng.integers(0, 256, (num_examples, 32, 32, 3), np.uint8),
      rng.integers(0, 10, (num_examples,), np.int32))
  batch = run.mesh.put_batch(split.images[:config.batch_size],
                             split.labels[:config.batch_size])
  on_devices = run.put_train_split(split) if data == 'device' else None
  state, step = run.state, 0

  def one_step(state, step):
    if data == 'batch':
      return run.train_step(state, *batch)
    if data == 'host':
      return run.train_step(state, *run.mesh.put_batch(
          *input_pipeline.train_batch(split, step, config.batch_size, 0)))
    indices = input_pipeline.train_indices(num_examples, step,
                                           config.batch_size, 0)
    return run.train_step_at(state, *on_devices,
                             *run.mesh.put_batch(indices))

  def measure(steps: int) -> float:
    nonlocal state, step
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = one_step(state, step)
      step += 1
    jax.block_until_ready(metrics)
    return steps * config.batch_size / (time.perf_counter() - start)

  measure(warmup)
  return measure


def images_per_sec(config, impl: str, steps: int, warmup: int = 2,
                   teacher_config=None) -> float:
  """Images/s of the jitted train step with the conv lowering ``impl``."""
  config = config_lib.override(config, [('model.conv_impl', impl)])
  teacher = (random_teacher(teacher_config, impl) if teacher_config
             else None)
  return step_timer(config, teacher, warmup)(steps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--impl', default='native,auto')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--teacher_config', default='',
                      help='time a distillation step with this teacher')
  parser.add_argument('--set', action='append', default=[],
                      help='override, e.g. --set model.width=4')
  args = parser.parse_args()
  config = config_lib.override(config_lib.load(args.config), args.set)
  print(f'backend={jax.default_backend()} devices={jax.device_count()} '
        f'model={dict(config.model)} batch={config.batch_size} '
        f'teacher={args.teacher_config or None}')
  teacher_config = (config_lib.load(args.teacher_config)
                    if args.teacher_config else None)
  results = {impl: images_per_sec(config, impl, args.steps,
                                  teacher_config=teacher_config)
             for impl in args.impl.split(',')}
  base = next(iter(results.values()))
  for impl, ips in results.items():
    print(f'{impl:>8}: {ips:8.1f} img/s  ({ips / base:.2f}x)')


if __name__ == '__main__':
  main()
