"""The train step under sets of XLA:CPU flags, one process each, alternated.

  python -m benchmarks.xla_flags_bench --config configs/phase1_bonn_wrn.py:cpu
  python -m benchmarks.xla_flags_bench --config configs/phase1_bonn_wrn.py:bonn_cpu \
      --candidates default,ynn_eltwise_reduce --rounds 3 --steps 4

XLA reads ``XLA_FLAGS`` once per process, so every candidate runs the real
jitted train step (``train_step_bench.step_timer``, ``conv_impl='auto'``, the
lowering tuned per flag set since the flags are part of the autotune's key)
in a child process of its own; rounds alternate between the candidates so a
noisy machine slows them alike, and the median of the rounds is reported with
the ratio to the first candidate. The candidates are XLA:CPU's own switches
for the libraries it can hand operations to (YNNPACK, XNNPACK, oneDNN) and its
scheduler; which of them pays differs between CPUs and jax versions, so none
is set by bonnkd: measure here, then export the winner in ``XLA_FLAGS``.
Name the CPU (``lscpu``) next to any figure.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

# name -> XLA_FLAGS. In jax 0.10.2 XLA:CPU already hands the weight-gradient
# convolutions to YNNPACK (its default 'individual_convolution' fusion).
CANDIDATES = {
    'default': '',
    'no_ynn_conv':
        '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
    'ynn_eltwise_reduce':
        '--xla_cpu_experimental_ynn_fusion_type=+eltwise,+reduce',
    'ynn_dot': '--xla_cpu_experimental_ynn_fusion_type=+dot,+individual_dot',
    'onednn_dot': '--xla_cpu_experimental_onednn_fusion_type=dot',
    'xnn_graph': '--xla_cpu_experimental_xnn_graph_fusion_mode='
                 'XNN_GRAPH_FUSION_MODE_GREEDY',
    'concurrency_scheduler':
        '--xla_cpu_enable_concurrency_optimized_scheduler=true',
    # XLA's own loops (BatchNorm, the layout copies) in 512-bit vectors on
    # AVX-512 CPUs (XLA prefers 256 by default).
    'vector_width_512': '--xla_cpu_prefer_vector_width=512',
}


def child_images_per_sec(config_spec: str, overrides: list[str],
                         steps: int) -> float:
  """In this process (its XLA_FLAGS already read): img/s of the train step."""
  from bonnkd import config_lib  # pylint: disable=g-import-not-at-top
  from benchmarks import train_step_bench  # pylint: disable=g-import-not-at-top
  config = config_lib.override(config_lib.load(config_spec), overrides)
  return train_step_bench.step_timer(config)(steps)


def run_child(flags: str, config_spec: str, overrides: list[str],
              steps: int) -> float:
  """img/s of one child process whose XLA_FLAGS are ``flags``."""
  env = dict(os.environ)
  extra = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
  env['XLA_FLAGS'] = extra
  if not extra:
    env.pop('XLA_FLAGS')
  cmd = [sys.executable, '-m', 'benchmarks.xla_flags_bench', '--child',
         '--config', config_spec, '--steps', str(steps)]
  for o in overrides:
    cmd += ['--set', o]
  out = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f'XLA_FLAGS={flags!r} failed:\n{out.stderr[-2000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])['images_per_sec']


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--candidates', default=','.join(CANDIDATES),
                      help=f'names among {sorted(CANDIDATES)}')
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--set', action='append', default=[],
                      help='config override, e.g. --set model.width=4')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps({'images_per_sec': child_images_per_sec(
        args.config, args.set, args.steps)}))
    return
  names = args.candidates.split(',')
  unknown = sorted(set(names) - set(CANDIDATES))
  if unknown:
    parser.error(f'unknown candidates {unknown}; known: {sorted(CANDIDATES)}')
  print(f"{args.config} {' '.join(args.set)}: {args.steps} steps x "
        f'{args.rounds} alternated rounds, one process per candidate and round')
  rates = {name: [] for name in names}
  for _ in range(args.rounds):
    for name in names:
      rates[name].append(run_child(CANDIDATES[name], args.config, args.set,
                                   args.steps))
  base = statistics.median(rates[names[0]])
  print(f"{'candidate':<22} {'img/s':>8} {'ratio':>6}  rounds  XLA_FLAGS")
  for name in names:
    median = statistics.median(rates[name])
    rounds = ' '.join(f'{r:.1f}' for r in rates[name])
    print(f'{name:<22} {median:8.1f} {median / base:6.2f}  [{rounds}]  '
          f'{CANDIDATES[name] or "(none)"}')


if __name__ == '__main__':
  main()
