"""Images/s of a config's real train step, on random data.

The one timer behind the benchmarks (``benchmarks/``) and the XLA:CPU flag
choice at start-up (:mod:`bonnkd.xla_cpu_flags`): it builds the run exactly as
``train_and_evaluate`` does (:func:`bonnkd.train.setup`: model, state, mesh,
the jitted step) and times that step on random uint8 batches; the speed of a
step does not depend on the pixel values.

  measure = step_timing.step_timer(config)   # compiles, two untimed steps
  measure(10)                                # images/s over 10 steps
"""

import time

import jax
import numpy as np

from bonnkd import input_pipeline
from bonnkd import train


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
