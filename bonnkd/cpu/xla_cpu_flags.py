"""XLA:CPU's flags for this machine, chosen by timing the real train step.

XLA:CPU can hand operations to libraries (YNNPACK, XNNPACK, oneDNN) or keep
them in its own Eigen code, and which is fastest depends on the CPU: on a
2-core EPYC of family 25, YNNPACK's convolutions off (jax 0.10.2's default has
them on) made the WRN-16-1 train step 1.21x and BONN's W1A1 WRN-16-3 step
1.58x faster; other switches moved nothing beyond the noise
(``results/benchmarks/xla_flags_cpu.txt``). A rule written in code would be
wrong on the next CPU, so ``launch.py --xla_cpu_flags=auto`` (the default)
measures instead:

1. the choice cached for this machine (:func:`bonnkd.cpu.machine.key`) and this
   model, batch and dtype (:func:`model_key`), if there is one;
2. else, for a run of at least ``MIN_STEPS`` steps (a shorter one would not
   earn back the measurement, ~2 compilations) whose data is there
   (:func:`bonnkd.data.input_pipeline.ensure_available`), one child process per
   candidate in ``AUTO_CANDIDATES`` times the config's train step
   (:func:`bonnkd.cpu.step_timing.step_timer`) -- XLA reads ``XLA_FLAGS`` once,
   when its backend starts, so each flag set needs a process of its own --
   and the fastest wins if it beats XLA's default by ``MARGIN`` (below that
   is the noise of these machines). The result is cached in
   ``$BONNKD_CACHE_DIR/xla_cpu_flags.json`` (default ``~/.cache/bonnkd``);
3. else XLA's defaults.

The child processes also report the backend: on a GPU or TPU nothing is set
(the choice is cached as 'default'). The chosen flags are appended to any
``XLA_FLAGS`` already set, before this process's backend starts, and the run
records them (``final.json``: ``xla_flags``). They change which library
computes an operation, not what it computes.

Nothing here starts JAX's backend: :func:`apply` runs before it starts.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

from absl import logging

from bonnkd import errors
from bonnkd.config import defaults
from bonnkd.cpu import heap
from bonnkd.cpu import machine
from bonnkd.data import input_pipeline
from bonnkd.run import run_dir

__all__ = ['CANDIDATES', 'AUTO_CANDIDATES', 'MIN_STEPS', 'MARGIN',
           'MODE_ENV', 'default_mode', 'model_key', 'estimated_steps',
           'time_in_child', 'pick', 'choose', 'apply']

# name -> XLA_FLAGS. In jax 0.10.2 XLA:CPU hands most convolutions, and the
# weight-gradient ones, to YNNPACK (its default 'individual_convolution').
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
# What start-up measures: every child costs a compilation, and of the
# candidates above only this one moved a train step beyond the noise on the
# CPUs measured so far (``benchmarks/xla_flags_bench.py`` times them all).
AUTO_CANDIDATES = ('default', 'no_ynn_conv')
MIN_STEPS = 1000
MARGIN = 0.05
STEPS = 3  # timed steps per child, after 2 untimed (compilation)

# launch.py's --xla_cpu_flags default, e.g. 'default' for a test suite or a
# machine shared with other jobs (whose load would skew the timing).
MODE_ENV = 'BONNKD_XLA_CPU_FLAGS'

_CACHE_NAME = 'xla_cpu_flags.json'
_CIFAR10_TRAIN = 50_000


def default_mode() -> str:
  """``$BONNKD_XLA_CPU_FLAGS``, else 'auto'."""
  return os.environ.get(MODE_ENV) or 'auto'


def model_key(config) -> str:
  """What the fastest flags depend on besides the machine.

  The step timed is the model's own (a distillation run's student without
  its teacher's forward pass).
  """
  return json.dumps({'model': config.model.to_dict(),
                     'batch_size': config.batch_size,
                     'dtype': config.dtype}, sort_keys=True)


def estimated_steps(config) -> int:
  """The run's train steps, from the config alone (CIFAR-10's 50,000 images)."""
  num_train = _CIFAR10_TRAIN - config.data.num_val
  if config.data.train_limit > 0:
    num_train = min(num_train, config.data.train_limit)
  return defaults.num_train_steps(config, num_train)


def _missing_teacher(config) -> str | None:
  """A teacher run the run will not find, before timing for it."""
  teacher = config.kd.teacher_workdir
  if config.kd.enabled and not run_dir.is_run(teacher):
    return f'no teacher run in config.kd.teacher_workdir={teacher!r}'
  return None


def _child_main(config_path: str, steps: int) -> None:
  """In a child (its XLA_FLAGS read at backend start): backend and img/s."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from bonnkd.cpu import step_timing  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  result = {'backend': backend, 'images_per_sec': None}
  if backend == 'cpu':
    with open(config_path) as f:
      config = ml_collections.ConfigDict(json.load(f))
    result['images_per_sec'] = step_timing.step_timer(config)(steps)
  print(json.dumps(result))


def time_in_child(flags: str, config, steps: int = STEPS) -> dict:
  """{'backend', 'images_per_sec'} of ``config``'s train step under ``flags``.

  ``flags`` are appended to this process's ``XLA_FLAGS``; the step is timed
  in a child process (``images_per_sec`` is None off the CPU backend).

  Raises:
    RuntimeError: the child failed (its stderr's tail in the message).
  """
  env = dict(os.environ)
  env['XLA_FLAGS'] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
  if not env['XLA_FLAGS']:
    env.pop('XLA_FLAGS')
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'config.json')
    with open(path, 'w') as f:
      json.dump(config.to_dict(), f)
    out = subprocess.run(
        [sys.executable, '-m', 'bonnkd.cpu.xla_cpu_flags', path, str(steps)],
        env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(
        f'Timing the train step with XLA_FLAGS={flags!r} failed:\n'
        f'{out.stderr[-2000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def pick(rates: dict[str, float], margin: float = MARGIN) -> str:
  """The fastest candidate, if it beats 'default' by ``margin``; else default."""
  best = max(rates, key=rates.get)
  return best if rates[best] > (1 + margin) * rates['default'] else 'default'


@dataclasses.dataclass(frozen=True)
class Choice:
  name: str            # a key of CANDIDATES
  how: str  # 'cached', 'measured', 'given', or why it was not measured
  rates: dict | None = None  # img/s per candidate, when measured

  @property
  def images_per_sec(self) -> float | None:
    """The measured img/s of the chosen flags; None if not measured."""
    return (self.rates or {}).get(self.name)


def choose(config, candidates=AUTO_CANDIDATES, measure: bool = True,
           check_inputs: bool = True) -> Choice:
  """The flags for ``config`` on this machine: cached, measured or default.

  ``check_inputs``: before timing, raise the run's own error where its data
  is missing (tfds downloads it here, as the run would), and measure
  nothing for a run that will stop at once on its missing teacher. False
  for a plan, which times a student before its teacher runs.

  Raises:
    input_pipeline.DataNotFoundError: with ``check_inputs``, no data in
      ``config.data`` (:func:`bonnkd.data.input_pipeline.ensure_available`).
  """
  cache = machine.read_cache(_CACHE_NAME)
  mkey, key = machine.key(), model_key(config)
  cached = cache.get(mkey, {}).get(key)
  if cached:
    return Choice(cached['choice'], 'cached', cached.get('images_per_sec'))
  if not measure:
    return Choice('default', 'not measured')
  if estimated_steps(config) < MIN_STEPS:
    return Choice('default', 'short run')
  if check_inputs:
    input_pipeline.ensure_available(config.data)
    if missing := _missing_teacher(config):  # The run stops on its own error.
      return Choice('default', f'not measured: {missing}')
  rates = {}
  for name in candidates:
    result = time_in_child(CANDIDATES[name], config)
    if result['backend'] != 'cpu':
      name, rates = 'default', None
      logging.info('XLA:CPU flags: the backend is %s; none set.',
                   result['backend'])
      break
    rates[name] = round(result['images_per_sec'], 1)
  else:
    name = pick(rates)
  cache.setdefault(mkey, {})[key] = {'choice': name, 'images_per_sec': rates}
  machine.write_cache(_CACHE_NAME, cache)
  return Choice(name, 'measured', rates)


def apply(config, mode: str, measure: bool = True) -> Choice:
  """Sets ``XLA_FLAGS`` for ``mode``: 'auto' or a name in ``CANDIDATES``.

  Must run before this process's JAX backend starts (the first computation or
  ``jax.devices()``); importing JAX before is fine. ``measure=False`` (several
  processes, which would time each other) takes a cached choice or none.

  Raises:
    errors.UserError: ``mode`` is neither, or (auto) the run's data is
      missing (:func:`choose`).
  """
  if mode == 'auto':
    choice = choose(config, measure=measure)
  elif mode in CANDIDATES:
    choice = Choice(mode, 'given')
  else:
    raise errors.UserError(
        f'--xla_cpu_flags={mode!r}: expected auto or one of '
        f'{sorted(CANDIDATES)}.')
  flags = CANDIDATES[choice.name]
  if flags:
    os.environ['XLA_FLAGS'] = (
        f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip())
  logging.info('XLA:CPU flags: %s (%s%s): XLA_FLAGS=%r', choice.name,
               choice.how, f', img/s {choice.rates}' if choice.rates else '',
               os.environ.get('XLA_FLAGS', ''))
  return choice


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  _child_main(sys.argv[1], int(sys.argv[2]))
