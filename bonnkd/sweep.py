"""Runs a plan of bonnkd runs: ``python -m bonnkd.sweep PLAN --out DIR``.

  python -m bonnkd.sweep configs/plans/table1.py --out runs/table1 \
      --budget_min 9 --parallel 2 \
      --set data.source=folder --set data.dir=/data/cifar10-jpeg

A plan is a Python file (``configs/plans/``) whose ``get_plan()`` returns a
list of :class:`Run`: a config file and preset, overrides, a seed, the runs
it needs first (a teacher) and its expected minutes. Every run is
``launch.py`` in its own process, writing a normal run directory
``DIR/<name>/`` (its console output in ``DIR/logs/<name>.log``), so
everything that reads runs (the report, inspect, a later sweep) reads these.

* A run whose ``final.json`` exists is skipped: running the same command
  again continues a plan; a run stopped half-way resumes from its checkpoint.
* ``--parallel N`` runs up to N at once (small runs share one accelerator;
  each process then allocates GPU memory as it needs it).
* On a CPU (launch.py's ``--xla_cpu_flags=auto``), each model's XLA:CPU
  flags are timed first, one model at a time (:func:`time_xla_cpu_flags`),
  not by runs competing for the cores; the img/s measured there replaces the
  plan's expected minutes (:func:`measured_minutes`), which came from
  another machine.
* ``--budget_min M`` starts no run that would not finish within M minutes
  (by its expected minutes), stops the running ones at M (they resume on
  the next call), and prints what is left.
* ``--smoke`` runs every run at smoke size, its model's layout kept
  (``smoke.at_smoke_scale``): a plan checked end to end on a CPU in
  minutes before it spends accelerator time.
* At the end, a table of every run (status, test / val accuracy,
  parameters, minutes) is printed and written to ``DIR/summary.md``.
"""

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time

from bonnkd import errors
from bonnkd import fileio
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.config import smoke
from bonnkd.cpu import xla_cpu_flags
from bonnkd.run import run_dir
from bonnkd.tools import tables

__all__ = ['Run', 'run_for_budget', 'load_plan', 'launch_command',
           'time_xla_cpu_flags', 'measured_minutes', 'run_plan']

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a plan.

  Attributes:
    name: its directory under ``--out``.
    config: ``'configs/<file>.py[:preset]'``.
    overrides: ``'key=value'`` items; ``{out}`` stands for ``--out`` (e.g.
      ``'kd.teacher_workdir={out}/teacher'``).
    seed: ``config.seed``.
    after: names of runs that must be finished before this one starts.
    expected_min: minutes it is expected to take (from measured
      throughput), for the budget; None: unknown.
  """

  name: str
  config: str
  overrides: tuple[str, ...] = ()
  seed: int = 0
  after: tuple[str, ...] = ()
  expected_min: float | None = None


def run_for_budget(name: str, config: str, overrides: tuple[str, ...],
                   images_per_sec: float, budget_min: float, eval_s: float,
                   train_images: int = 45_000, **kwargs) -> Run:
  """A run of the whole epochs that fit into ``budget_min`` minutes.

  An epoch is ``train_images`` at the train step's measured
  ``images_per_sec`` plus ``eval_s`` seconds of val evaluation; the run
  gets ``num_epochs`` and, as ``expected_min``, the minutes of those epochs.
  ``kwargs`` go to :class:`Run` (``seed``, ``after``).
  """
  epoch_s = train_images / images_per_sec + eval_s
  epochs = int(budget_min * 60 // epoch_s)
  return Run(name, config, (*overrides, f'num_epochs={epochs}'),
             expected_min=round(epochs * epoch_s / 60, 1), **kwargs)


def load_plan(path: str, arg: str = '') -> list[Run]:
  """The runs of a plan file, checked: names, dependencies, configs.

  Raises:
    errors.UserError: no such file, a duplicate name, a dependency on a
      later or unknown run, or a run whose config or overrides are invalid.
  """
  module = files.load_module(path, 'get_plan', 'Plan', errors.UserError)
  runs = list(module.get_plan(arg) if arg else module.get_plan())
  seen = set()
  for run in runs:
    if run.name in seen:
      raise errors.UserError(f'Plan {path!r}: run name {run.name!r} repeats.')
    if missing := [a for a in run.after if a not in seen]:
      raise errors.UserError(
          f'Plan {path!r}: run {run.name!r} comes after {missing}, which are '
          'not earlier runs of the plan.')
    seen.add(run.name)
  return runs


def _config_of(run: Run, out: str, extra=()):
  items = [o.replace('{out}', out) for o in run.overrides]
  return overrides.override(files.load(run.config),
                            [*items, f'seed={run.seed}', *extra])


def smoke_overrides(run: Run, out: str, extra=()) -> list[str]:
  """The overrides that turn ``run`` into its smoke-size version."""
  config = _config_of(run, out, extra)
  full = overrides.flatten(config)
  small = overrides.flatten(smoke.at_smoke_scale(config))
  return [f'{k}={small[k]}' for k in sorted(small) if small[k] != full.get(k)]


def launch_command(run: Run, out: str, extra=()) -> list[str]:
  """The ``launch.py`` command of ``run`` (overrides, then ``extra``)."""
  items = [o.replace('{out}', out) for o in run.overrides]
  return [sys.executable, os.path.join(_ROOT, 'launch.py'),
          '--config', run.config, '--workdir', os.path.join(out, run.name),
          f'--config.seed={run.seed}',
          *[f'--config.{o}' for o in [*items, *extra]]]


def time_xla_cpu_flags(runs: list[Run], out: str,
                       extra=()) -> dict[str, float]:
  """Times XLA:CPU's flags for each model of ``runs``, one model at a time.

  Runs started side by side would time their candidates under each other's
  load (``bonnkd.cpu.xla_cpu_flags``); timed here first, each run's
  ``launch.py`` finds its choice cached. Nothing is timed unless launch.py's mode is auto.

  Returns:
    {run name: img/s of its train step under the chosen flags}, for the runs
    whose model was measured on this machine (now or cached).
  """
  if xla_cpu_flags.default_mode() != 'auto':
    return {}
  choices, rates = {}, {}
  for run in runs:
    config = _config_of(run, out, extra)
    if (key := xla_cpu_flags.model_key(config)) not in choices:
      choices[key] = xla_cpu_flags.choose(config, check_inputs=False)
      print(f'XLA:CPU flags for {run.name} and its model: '
            f'{choices[key].name} ({choices[key].how})', flush=True)
    if rate := choices[key].images_per_sec:
      rates[run.name] = rate
  return rates


def measured_minutes(run: Run, images_per_sec: float, out: str,
                     extra=()) -> float | None:
  """Minutes of ``run``'s train steps at this machine's measured img/s.

  For the budget, in place of the plan's figure, which came from another
  machine (one CPU trained BONN's WRN-16-3 at 144 img/s, another at 33).
  Evaluations add a few percent. None for a distillation run: the step
  timed is the student's alone, without its teacher's forward pass.
  """
  config = _config_of(run, out, extra)
  if config.kd.enabled:
    return None
  steps = xla_cpu_flags.estimated_steps(config)
  return round(steps * config.batch_size / images_per_sec / 60, 1)


def _measured_expectations(pending: list[Run], out: str,
                           extra=()) -> dict[str, tuple[float, str]]:
  """{run name: (expected minutes, why)} where this machine was measured."""
  notes = {}
  for name, rate in time_xla_cpu_flags(pending, out, extra).items():
    run = next(r for r in pending if r.name == name)
    if (minutes := measured_minutes(run, rate, out, extra)) is not None:
      plan = ('gave none' if run.expected_min is None
              else f'said {run.expected_min:g} min')
      notes[name] = (minutes, f'{rate:g} img/s measured here; the plan {plan}')
  return notes


def _row(run: Run, out: str, status: str) -> dict:
  final = run_dir.RunDir(os.path.join(out, run.name)).final() or {}
  return {'run': run.name, 'status': status,
          'test_accuracy': final.get('test_accuracy'),
          'val_accuracy': final.get('val_accuracy'),
          'params': final.get('num_params'),
          'minutes': (round(final['wall_time_s'] / 60, 1)
                      if 'wall_time_s' in final else None),
          'expected_min': run.expected_min, 'seed': run.seed,
          'config': run.config, 'overrides': list(run.overrides)}


def _stop(proc: subprocess.Popen) -> None:
  proc.send_signal(signal.SIGTERM)
  try:
    proc.wait(timeout=60)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()


def run_plan(runs: list[Run], out: str, budget_min: float | None = None,
             parallel: int = 1, extra=(), poll_s: float = 0.5,
             smoke: bool = False) -> list[dict]:
  """Runs what is not finished yet; returns one summary row per run."""
  out = os.path.abspath(out)
  for run in runs:  # Every config is valid before anything starts.
    _config_of(run, out, extra)
  if smoke:
    runs = [dataclasses.replace(
        r, overrides=(*r.overrides, *smoke_overrides(r, out, extra)))
            for r in runs]
  os.makedirs(os.path.join(out, 'logs'), exist_ok=True)
  start = time.time()
  elapsed_min = lambda: (time.time() - start) / 60
  status = {r.name: 'done before' for r in runs
            if run_dir.RunDir(os.path.join(out, r.name)).final()}
  pending = [r for r in runs if r.name not in status]
  running: dict[str, tuple[Run, subprocess.Popen]] = {}
  env = dict(os.environ)
  if parallel > 1:  # Share one accelerator: allocate as needed.
    env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
  notes = _measured_expectations(pending, out, extra)
  runs = [dataclasses.replace(r, expected_min=notes[r.name][0])
          if r.name in notes else r for r in runs]
  pending = [r for r in runs if r.name not in status]
  while pending or running:
    for name, (run, proc) in list(running.items()):
      if proc.poll() is not None:
        del running[name]
        ok = proc.returncode == 0 and run_dir.RunDir(
            os.path.join(out, name)).final()
        status[name] = 'done' if ok else f'failed (exit {proc.returncode})'
        print(f'[{elapsed_min():6.1f} min] {name}: {status[name]}',
              flush=True)
    if budget_min is not None and elapsed_min() >= budget_min:
      for name, (run, proc) in running.items():
        _stop(proc)
        status[name] = 'stopped at budget (resumes next time)'
      running.clear()
      break
    for run in list(pending):
      if len(running) >= parallel:
        break
      if any(status.get(a, '').startswith('failed') for a in run.after):
        status[run.name] = 'not run: a run it needs failed'
        pending.remove(run)
        continue
      if not all(status.get(a, '').startswith('done') for a in run.after):
        continue
      if (budget_min is not None and run.expected_min is not None
          and elapsed_min() + run.expected_min > budget_min):
        continue
      pending.remove(run)
      log = open(os.path.join(out, 'logs', f'{run.name}.log'), 'a')
      proc = subprocess.Popen(launch_command(run, out, extra), stdout=log,
                              stderr=subprocess.STDOUT, env=env, cwd=_ROOT)
      log.close()
      running[run.name] = (run, proc)
      expected = ('expected time unknown' if run.expected_min is None
                  else f'expected {run.expected_min:g} min')
      if run.name in notes:
        expected += f' of training steps: {notes[run.name][1]}'
      print(f'[{elapsed_min():6.1f} min] {run.name}: started ({expected})',
            flush=True)
    if not running and pending:
      # Nothing can start: what is left does not fit the budget.
      break
    time.sleep(poll_s)
  for run in pending:
    status.setdefault(run.name, 'left: does not fit the budget')
  rows = [_row(r, out, status[r.name]) for r in runs]
  fileio.write_json(os.path.join(out, 'summary.json'), rows, indent=1)
  fileio.write_text(os.path.join(out, 'summary.md'), summary_table(rows))
  return rows


def summary_table(rows) -> str:
  """The rows as a markdown table."""

  def cell(value, fmt='{}'):
    return '' if value is None else fmt.format(value)

  return tables.markdown(
      ('run', 'status', 'test acc %', 'val acc %', 'params',
       'minutes (expected)', 'seed'),
      [(r['run'], r['status'],
        cell(r['test_accuracy'] and 100 * r['test_accuracy'], '{:.2f}'),
        cell(r['val_accuracy'] and 100 * r['val_accuracy'], '{:.2f}'),
        cell(r['params'], '{:,}'),
        f'{cell(r["minutes"])} ({cell(r["expected_min"]) or "?"})',
        r['seed']) for r in rows])


@errors.exit_on_user_error
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('plan', help='configs/plans/<plan>.py[:arg]')
  parser.add_argument('--out', required=True, help='folder of the runs')
  parser.add_argument('--budget_min', type=float, default=None)
  parser.add_argument('--parallel', type=int, default=1)
  parser.add_argument('--set', action='append', default=[],
                      help='override for every run, e.g. --set data.dir=...')
  parser.add_argument('--smoke', action='store_true',
                      help='every run at smoke size, its layout kept')
  args = parser.parse_args(argv)
  path, _, arg = args.plan.partition(':')
  runs = load_plan(path, arg)
  rows = run_plan(runs, args.out, args.budget_min, args.parallel, args.set,
                  smoke=args.smoke)
  print(summary_table(rows))
  left = [r['run'] for r in rows if not r['status'].startswith('done')]
  if left:
    print(f'Not finished: {left}. The same command continues them.')
  return 0 if not any(r['status'].startswith(('failed', 'not run'))
                      for r in rows) else 1


if __name__ == '__main__':
  sys.exit(main())
