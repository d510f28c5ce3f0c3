"""Train-step images/s: float32 vs bfloat16, batch from the host vs on device.

  python -m benchmarks.throughput                       # every model below
  python -m benchmarks.throughput --model wrn16_1_cpu --steps 10

For each model, the real jitted train step (``train.setup``) in each dtype
and with each way of feeding it (``bonnkd.step_timing.step_timer``):
'host' gathers every batch from a host copy of the split and sends it (the
loop before the train split moved onto the devices), 'device' keeps the
split on the devices and sends the indices (what ``train_and_evaluate``
does). Rounds alternate between the variants; medians are printed. On an
accelerator run it there too; name the device and the CPU next to any
figure (results/README.md).
"""

import argparse
import itertools
import statistics

import jax

from bonnkd import config_lib
from bonnkd import step_timing

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default=','.join(MODELS))
  parser.add_argument('--dtype', default='float32,bfloat16')
  parser.add_argument('--data', default='host,device')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  print(f'jax {jax.__version__}: {jax.device_count()} x '
        f'{jax.devices()[0].device_kind}; {args.steps} steps x {args.rounds} '
        'alternated rounds')
  print(f'{"model":<14} {"dtype":<9} {"data":<7} {"img/s":>9}')
  for name in args.model.split(','):
    spec, overrides = MODELS[name]
    timers = {}
    for dtype, data in itertools.product(args.dtype.split(','),
                                         args.data.split(',')):
      config = config_lib.override(config_lib.load(spec),
                                   overrides + [f'dtype={dtype}'])
      timers[dtype, data] = step_timing.step_timer(config, data=data)
    results = {k: [] for k in timers}
    for _ in range(args.rounds):
      for key, measure in timers.items():
        results[key].append(measure(args.steps))
    for (dtype, data), values in results.items():
      print(f'{name:<14} {dtype:<9} {data:<7} '
            f'{statistics.median(values):9.1f}', flush=True)


if __name__ == '__main__':
  main()
