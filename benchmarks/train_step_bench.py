"""Train-step throughput (images/s) of a config, per convolution lowering.

Runs the real jitted ``bonnkd.train.train_step`` (augmentation, forward,
backward, SGD update) on random uint8 batches and reports images/s for each
``--impl``: all compiled first in one process, then timed in alternated
rounds (medians), so the ratios hold on a noisy machine.

  python -m benchmarks.train_step_bench --config configs/phase1_bonn_wrn.py:cpu
  python -m benchmarks.train_step_bench --config configs/phase1_bonn_wrn.py:cpu \
      --impl native,im2col,onednn,auto --steps 10 --rounds 3 \
      --onednn_threads 1,0
  # A distillation step: the student plus the forward pass of a teacher
  # (random weights of the teacher config's model; speed does not depend on
  # the values).
  python -m benchmarks.train_step_bench --config configs/phase2_kd_student.py:cpu \
      --teacher_config configs/phase1_bonn_wrn.py:cpu --impl auto
"""

import argparse
import statistics

import jax
import numpy as np

from bonnkd import models
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import heap
from bonnkd.cpu import machine
from bonnkd.cpu import onednn
from bonnkd.cpu import step_timing
from bonnkd.training import teacher as teacher_lib


def random_teacher(teacher_config, impl: str):
  """A teacher with the model of ``teacher_config`` and random weights."""
  model_config = teacher_config.model.copy_and_resolve_references()
  model_config.conv_impl = impl
  model = models.create_model(model_config, dtype=teacher_config.dtype)
  variables = model.init(jax.random.key(2),
                         np.zeros((1, 32, 32, 3), np.float32))
  return teacher_lib.Teacher(model=model, variables=variables,
                             config=teacher_config, step=0)


def step_timer(config, impl: str, warmup: int = 2, teacher_config=None):
  """``measure(steps) -> img/s`` of the jitted step with lowering ``impl``."""
  config = overrides.override(config, [('model.conv_impl', impl)])
  teacher = (random_teacher(teacher_config, impl) if teacher_config
             else None)
  return step_timing.step_timer(config, teacher, warmup)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--impl', default='native,auto')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--onednn_threads', default='0',
                      help="oneDNN's threads a call to time, e.g. 1,0 (0: all "
                      'cores)')
  parser.add_argument('--teacher_config', default='',
                      help='time a distillation step with this teacher')
  parser.add_argument('--set', action='append', default=[],
                      help='override, e.g. --set model.width=4')
  args = parser.parse_args(argv)
  config = overrides.override(files.load(args.config), args.set)
  print(f'backend={jax.default_backend()} devices={jax.device_count()} '
        f'cpu={machine.cpu_name()} model={dict(config.model)} '
        f'batch={config.batch_size} teacher={args.teacher_config or None}; '
        f'{args.steps} steps x {args.rounds} alternated rounds')
  teacher_config = (files.load(args.teacher_config)
                    if args.teacher_config else None)
  timers = {impl: step_timer(config, impl, teacher_config=teacher_config)
            for impl in args.impl.split(',')}
  # oneDNN's threads a call (bonnkd.cpu.onednn.set_threads), one variant
  # each, timed on the same compiled step.
  variants = [(impl, None) for impl in timers if impl != 'onednn']
  if 'onednn' in timers:
    variants += [('onednn', int(n)) for n in args.onednn_threads.split(',')]
  rates = {variant: [] for variant in variants}
  try:
    for _ in range(args.rounds):
      for impl, threads in variants:
        if onednn.available():
          # 'auto' may run oneDNN too: at the default, not the last variant's.
          onednn.set_threads(onednn.DEFAULT_THREADS if threads is None
                             else threads)
        rates[impl, threads].append(timers[impl](args.steps))
  finally:
    if onednn.available():
      onednn.set_threads(onednn.DEFAULT_THREADS)
  base = statistics.median(next(iter(rates.values())))
  for (impl, threads), values in rates.items():
    ips = statistics.median(values)
    name = impl if threads is None else f'{impl}/t{threads}'
    print(f'{name:>11}: {ips:8.1f} img/s  ({ips / base:.2f}x)  rounds '
          + ' '.join(f'{v:.1f}' for v in values))


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  main()
