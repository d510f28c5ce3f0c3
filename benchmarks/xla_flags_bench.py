"""The train step under sets of XLA:CPU flags, one process each, alternated.

  python -m benchmarks.xla_flags_bench --config configs/phase1_bonn_wrn.py:cpu
  python -m benchmarks.xla_flags_bench --config configs/phase1_bonn_wrn.py:bonn_cpu \
      --candidates default,ynn_eltwise_reduce --rounds 3 --steps 4

XLA reads ``XLA_FLAGS`` once per process, so every candidate runs the real
jitted train step (``bonnkd.cpu.step_timing.step_timer``, ``conv_impl='auto'``,
the lowering tuned per flag set since the flags are part of the autotune's
key) in a child process of its own (``bonnkd.cpu.xla_cpu_flags.time_in_child``);
rounds alternate between the candidates so a noisy machine slows them alike,
and the median of the rounds is reported with the ratio to the first
candidate. The candidates (``bonnkd.cpu.xla_cpu_flags.CANDIDATES``) are XLA:CPU's
own switches for the libraries it can hand operations to (YNNPACK, XNNPACK,
oneDNN) and its scheduler; which of them pays differs between CPUs and jax
versions. ``launch.py`` measures the few in ``AUTO_CANDIDATES`` itself at
start-up; this script measures them all. Name the CPU (``lscpu``) next to any
figure.
"""

import argparse
import statistics

from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import xla_cpu_flags

CANDIDATES = xla_cpu_flags.CANDIDATES


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--candidates', default=','.join(CANDIDATES),
                      help=f'names among {sorted(CANDIDATES)}')
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--set', action='append', default=[],
                      help='config override, e.g. --set model.width=4')
  args = parser.parse_args(argv)
  config = overrides.override(files.load(args.config), args.set)
  names = args.candidates.split(',')
  unknown = sorted(set(names) - set(CANDIDATES))
  if unknown:
    parser.error(f'unknown candidates {unknown}; known: {sorted(CANDIDATES)}')
  print(f"{args.config} {' '.join(args.set)}: {args.steps} steps x "
        f'{args.rounds} alternated rounds, one process per candidate and round')
  rates = {name: [] for name in names}
  for _ in range(args.rounds):
    for name in names:
      rates[name].append(xla_cpu_flags.time_in_child(
          CANDIDATES[name], config, args.steps)['images_per_sec'])
  base = statistics.median(rates[names[0]])
  print(f"{'candidate':<22} {'img/s':>8} {'ratio':>6}  rounds  XLA_FLAGS")
  for name in names:
    median = statistics.median(rates[name])
    rounds = ' '.join(f'{r:.1f}' for r in rates[name])
    print(f'{name:<22} {median:8.1f} {median / base:6.2f}  [{rounds}]  '
          f'{CANDIDATES[name] or "(none)"}')


if __name__ == '__main__':
  main()
