"""Train-step images/s: float32 vs bfloat16, batch from the host vs on device.

  python -m benchmarks.throughput                       # every model below
  python -m benchmarks.throughput --model wrn16_1_cpu --steps 10

For each model, the real jitted train step (``train.setup``) in each dtype
and with each way of feeding it: 'device' keeps the split on the devices
and sends the indices (what ``train_and_evaluate`` does,
``bonnkd.cpu.step_timing.step_timer``); 'host' gathers every batch from a
host copy of the split and sends it (the loop before the train split moved
onto the devices, :func:`host_fed_timer`). Rounds alternate between the
variants; medians are printed. On an
accelerator run it there too; name the device and the CPU next to any
figure (results/README.md).
"""

import argparse
import functools
import itertools
import statistics

import jax

from bonnkd import train
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import heap
from bonnkd.cpu import step_timing
from bonnkd.data import input_pipeline

MODELS = {
    'resnet18': ('configs/teacher_resnet18.py', ['batch_size=128']),
    'wrn16_7_seed': ('configs/phase1_bonn_wrn.py:seed', ['batch_size=128']),
    'wrn16_1_cpu': ('configs/phase1_bonn_wrn.py:cpu', ['model.depth=16',
                                                       'model.width=1']),
    # BONN's recipe (W1A1 inner convs, both Bayesian losses), issue 9.
    'wrn22_4_bonn': ('configs/phase1_bonn_wrn.py', ['batch_size=128']),
    'resnet18_w1a1': ('configs/phase1_bonn_resnet18.py', ['batch_size=128']),
    'wrn16_3_bonn_cpu': ('configs/phase1_bonn_wrn.py:bonn_cpu', []),
}


def host_fed_timer(config, warmup: int = 2):
  """As ``step_timing.step_timer``, each batch gathered on the host and sent."""
  num_examples = 20 * config.batch_size
  run = train.setup(config, num_train_examples=num_examples)
  split = step_timing.random_split(num_examples)
  step_fn = jax.jit(
      functools.partial(train.train_step, rng=jax.random.key(0),
                        config=config),
      in_shardings=(run.mesh.replicated, run.mesh.batch, run.mesh.batch),
      out_shardings=(run.mesh.replicated, run.mesh.replicated),
      donate_argnums=(0,))

  def one_step(state, step):
    rows = input_pipeline.train_indices(num_examples, step,
                                        config.batch_size, 0)
    return step_fn(state, *run.mesh.put_batch(split.images[rows],
                                              split.labels[rows]))

  return step_timing.timer(one_step, run.state, config.batch_size, warmup)


TIMERS = {'device': step_timing.step_timer, 'host': host_fed_timer}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default=','.join(MODELS))
  parser.add_argument('--dtype', default='float32,bfloat16')
  parser.add_argument('--data', default='host,device')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--set', action='append', default=[],
                      help='override for every model, e.g. --set batch_size=64')
  args = parser.parse_args(argv)
  print(f'jax {jax.__version__}: {jax.device_count()} x '
        f'{jax.devices()[0].device_kind}; {args.steps} steps x {args.rounds} '
        'alternated rounds')
  print(f'{"model":<14} {"dtype":<9} {"data":<7} {"img/s":>9}')
  for name in args.model.split(','):
    spec, items = MODELS[name]
    timers = {}
    for dtype, data in itertools.product(args.dtype.split(','),
                                         args.data.split(',')):
      config = overrides.override(files.load(spec),
                                  items + [f'dtype={dtype}', *args.set])
      timers[dtype, data] = TIMERS[data](config)
    results = {k: [] for k in timers}
    for _ in range(args.rounds):
      for key, measure in timers.items():
        results[key].append(measure(args.steps))
    for (dtype, data), values in results.items():
      print(f'{name:<14} {dtype:<9} {data:<7} '
            f'{statistics.median(values):9.1f}', flush=True)


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  main()
