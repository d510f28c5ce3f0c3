"""Images/s of a config's real train step, on random data.

The one timer behind the benchmarks (``benchmarks/``) and the XLA:CPU flag
choice at start-up (:mod:`bonnkd.cpu.xla_cpu_flags`): it builds the run
exactly as ``train_and_evaluate`` does (:func:`bonnkd.train.setup`: model, state, mesh,
the jitted step) and times that step on random uint8 batches; the speed of a
step does not depend on the pixel values.

  measure = step_timing.step_timer(config)   # compiles, two untimed steps
  measure(10)                                # images/s over 10 steps
"""

import time

import jax
import numpy as np

from bonnkd import train
from bonnkd.data import input_pipeline


def step_timer(config, teacher=None, warmup: int = 2):
  """Compiles the train step of ``config`` as ``train_and_evaluate`` does.

  The step is the run's own: the (random) train split held on the devices,
  each step sent only the indices of its rows.

  Args:
    config: the run's config.
    teacher: a Teacher for a distillation step.
    warmup: untimed steps (compilation).

  Returns:
    ``measure(steps) -> images/s`` (the state carries over between calls).
  """
  config = config.copy_and_resolve_references()
  config.kd.enabled = teacher is not None
  num_examples = 20 * config.batch_size
  run = train.setup(config, num_train_examples=num_examples, teacher=teacher)
  on_devices = run.put_train_split(random_split(num_examples))

  def one_step(state, step):
    indices = input_pipeline.train_indices(num_examples, step,
                                           config.batch_size, 0)
    return run.train_step_at(state, *on_devices, *run.mesh.put_batch(indices))

  return timer(one_step, run.state, config.batch_size, warmup)


def timer(one_step, state, batch_size: int, warmup: int = 2):
  """``measure(steps) -> images/s`` of ``one_step(state, step)``.

  ``one_step`` returns ``(state, metrics)``; the state carries over between
  calls of ``measure``, which waits for the last step's metrics. ``warmup``
  untimed steps (the compilation) run first.
  """
  step = 0

  def measure(steps: int) -> float:
    nonlocal state, step
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = one_step(state, step)
      step += 1
    jax.block_until_ready(metrics)
    return steps * batch_size / (time.perf_counter() - start)

  measure(warmup)
  return measure


def random_split(num_examples: int, seed: int = 0) -> input_pipeline.Split:
  """Random uint8 images and labels: a step's speed ignores the pixels."""
  rng = np.random.default_rng(seed)
  return input_pipeline.Split(
      rng.integers(0, 256, (num_examples, 32, 32, 3), np.uint8),
      rng.integers(0, 10, (num_examples,), np.int32))
