"""Where a bonnkd train step spends its time, from a profile of the compiled step.

  python -m benchmarks.profile_step --config configs/phase1_bonn_wrn.py:cpu
  python -m benchmarks.profile_step --config configs/phase1_bonn_wrn.py:cpu \
      --set model.depth=16 --set model.width=4 --set batch_size=64

Traces ``--steps`` steps of the real jitted train step with
``jax.profiler`` (a Perfetto trace), reads the time of every executed XLA
operation, and attributes each to a category through the ``op_name``
metadata of the optimized HLO (a fused operation takes the names of the
operations fused into it):

* conv forward / conv backward -- convolutions (the im2col matmuls and
  bonnkd's oneDNN custom calls included), backward when JAX's name stack
  says ``transpose(jvp(...))``;
* layout copies -- XLA's ``transpose_copy`` fusions: the activations laid out
  again for the weight-gradient convolutions (batch as the contraction);
* BatchNorm -- the normalisation, its statistics and their gradients, with
  the ReLU / sign fused into them;
* augmentation -- crop, flip, normalisation of the uint8 batch;
* residual adds -- an operation whose only work is a block's forward sum of
  its branch and its shortcut (``.../blockN/add``): the one operation after
  a training convolution that a oneDNN post-op (``sum``) could take over,
  BatchNorm's batch statistics standing between a conv and its activation
  (the backward's sums fuse into BatchNorm's gradients);
* other -- the rest: loss, head, and the optimizer update (optax's
  operations carry no name of their own in the HLO);
* untraced -- time the step's executor runs (XLA:CPU's
  ``ThunkExecutor::Execute`` spans) that no named operation covers: with
  YNNPACK's convolutions off (``XLA_FLAGS``), XLA's own Eigen convolutions
  leave no operation in the trace, and their time lands here;
* host -- wall time of the steps outside the executor (dispatch, Python).

XLA:CPU runs independent operations of a step concurrently (two executor
threads on two cores), so the named categories are busy time summed over
those threads, and their shares are of that total; ``untraced`` and
``host`` are shares of the wall time.
Prints a table (ms per step and share), then which library computes each
convolution and dot of the step (:func:`contraction_libraries`; ``XLA_FLAGS``
decide it, e.g. ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``
keeps the convolutions in XLA's own Eigen code); ``--out`` also writes both
as JSON.
"""

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax
import numpy as np

from bonnkd import train
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import heap
from bonnkd.cpu import onednn

CATEGORIES = ('conv forward', 'conv backward', 'layout copies', 'BatchNorm',
              'augmentation', 'residual adds', 'other', 'untraced', 'host')
WALL_SHARES = ('untraced', 'host')  # shares of the wall time, not busy time
# The trace events of XLA:CPU's executor running a step (its span, and the
# main thread's wait for it to complete).
_EXECUTOR = 'ThunkExecutor::Execute'


def union_length(intervals) -> float:
  """The length of the union of ``(start, stop)`` intervals."""
  total, end = 0.0, -float('inf')
  for start, stop in sorted(intervals):
    total += max(0.0, stop - max(start, end))
    end = max(end, stop)
  return total


def wall_split(op_spans, executor_spans, wall: float) -> dict[str, float]:
  """{'untraced', 'host'}: the wall time no named operation accounts for.

  ``host`` is outside every executor span, ``untraced`` inside one but
  outside every operation. Without executor spans (another XLA), all of it
  is ``host``.
  """
  ops = union_length(op_spans)
  if not executor_spans:
    return {'untraced': 0.0, 'host': max(wall - ops, 0.0)}
  running = union_length([*executor_spans, *op_spans])
  return {'untraced': max(running - ops, 0.0),
          'host': max(wall - running, 0.0)}


def _computations(hlo_text: str) -> dict[str, list[tuple[str, str]]]:
  """{computation name ('ENTRY' for the step's own): [(instruction, line)]}."""
  computations, current = {}, None
  instruction = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*')
  for line in hlo_text.splitlines():
    header = re.match(r'^%?([\w.\-]+) \(.*\) -> .* \{$', line.strip())
    if header or line.startswith('ENTRY'):
      current = header.group(1) if header else 'ENTRY'
      computations[current] = []
      continue
    if current is not None and (m := instruction.match(line)):
      computations[current].append((m.group(1), line))
  return computations


def _fused_lines(line: str, computations) -> list[str]:
  """The lines of the computation an instruction calls (its fused body)."""
  calls = re.search(r'calls=%?([\w.\-]+)', line)
  return [inner for _, inner in computations.get(
      calls.group(1) if calls else None, [])]


def _bonnkd_onednn_kind(line: str) -> str | None:
  """The contraction of one of bonnkd's own oneDNN custom calls
  (:data:`bonnkd.cpu.onednn.TARGETS`, known to XLA only by their target):
  'weight-grad' or 'convolution'; None for any other line."""
  target = re.search(r'custom_call_target="(\w+)"', line)
  if not target or target.group(1) not in onednn.TARGETS:
    return None
  return ('weight-grad' if target.group(1).endswith('_bwd_weights')
          else 'convolution')


def _contraction_kinds(lines) -> list[str]:
  """'convolution', 'weight-grad' or 'dot' for each contraction in ``lines``."""
  kinds = []
  for text in lines:
    if onednn_kind := _bonnkd_onednn_kind(text):
      kinds.append(onednn_kind)
    elif kind := re.search(r'= \S+ (convolution|dot)\(', text):
      # XLA writes a weight gradient as a convolution whose window spans the
      # activation map (e.g. 16x16), with no op_name of its own.
      window = re.search(r'window=\{size=(\d+)x(\d+)', text)
      spans_map = window and int(window.group(1)) > 7
      kinds.append('weight-grad' if spans_map else kind.group(1))
  return kinds


def _op_names(hlo_text: str) -> dict[str, tuple[list[str], list[str]]]:
  """{instruction: (op_names of it and of what is fused into it, kinds)}."""
  computations = _computations(hlo_text)
  names = {}
  for body in computations.values():
    for name, line in body:
      fused = _fused_lines(line, computations)
      found = [n for text in [line] + fused
               for n in re.findall(r'op_name="([^"]*)"', text)]
      names[name] = (found, _contraction_kinds([line] + fused))
  return names


# XLA:CPU's fusions that hand their operations to a library
# (``backend_config={"fusion_config":{"kind":...}}``).
LIBRARY_FUSIONS = {'__ynn_fusion': 'YNNPACK', '__xnn_fusion': 'XNNPACK',
                   '__onednn_fusion': 'oneDNN'}


def contraction_libraries(hlo_text: str) -> dict[str, collections.Counter]:
  """{library: Counter of contraction kinds} of a compiled step's operations.

  Which library XLA:CPU gave each convolution and dot of the step: a fusion
  whose kind is in ``LIBRARY_FUSIONS``, a oneDNN custom call (XLA's, or
  bonnkd's own, :mod:`bonnkd.cpu.onednn`), or else XLA's own code
  ('XLA (Eigen)': its convolutions call Eigen). Only the step's own
  operations (the ENTRY computation) are read.
  """
  computations = _computations(hlo_text)
  libraries = collections.defaultdict(collections.Counter)
  for _, line in computations.get('ENTRY', []):
    fused = _fused_lines(line, computations)
    kind = re.search(r'"fusion_config":\{"kind":"(\w+)"', line)
    if 'custom_call_target="__onednn$' in line:
      library = 'oneDNN'
      kinds = [re.search(r'__onednn\$(\w+)', line).group(1)]
    elif onednn_kind := _bonnkd_onednn_kind(line):
      library = 'oneDNN (bonnkd)'
      kinds = [onednn_kind]
    else:
      library = LIBRARY_FUSIONS.get(kind.group(1) if kind else '',
                                    'XLA (Eigen)')
      kinds = _contraction_kinds([line] + fused)
    if kinds:
      libraries[library].update(kinds)
  return dict(libraries)


def categorize(name: str, op_names: list[str], kinds: list[str]) -> str:
  joined = ' '.join(op_names)
  if name.startswith(('transpose_copy', 'copy')):
    return 'layout copies'
  if 'weight-grad' in kinds:
    return 'conv backward'
  if kinds or 'conv_general_dilated' in joined:
    return 'conv backward' if 'transpose(' in joined else 'conv forward'
  if any(k in joined for k in ('random_crop_flip', 'normalize', 'threefry',
                               'random_bits', 'fold_in')):
    return 'augmentation'
  if any(k in joined for k in ('/bn', 'BatchNorm')):
    return 'BatchNorm'
  if op_names and all(re.search(r'block\d+/add$', n) for n in op_names):
    return 'residual adds'
  return 'other'


def profile(config, steps: int, warmup: int = 2):
  """({category: ms per step}, s per step, :func:`contraction_libraries`)."""
  run = train.setup(config, num_train_examples=100 * config.batch_size)
  rng = np.random.default_rng(0)
  images, labels = run.mesh.put_batch(
      rng.integers(0, 256, (config.batch_size, 32, 32, 3), np.uint8),
      rng.integers(0, 10, (config.batch_size,), np.int32))
  # The step on one batch already on the device: only the step is profiled.
  step_fn = jax.jit(functools.partial(
      train.train_step, rng=jax.random.key(1), config=config, teacher=None),
                    donate_argnums=(0,))
  hlo = step_fn.lower(run.state, images, labels).compile().as_text()
  names = _op_names(hlo)
  libraries = contraction_libraries(hlo)
  state = run.state
  for _ in range(warmup):
    state, metrics = step_fn(state, images, labels)
  jax.block_until_ready(metrics)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(steps):
        state, metrics = step_fn(state, images, labels)
      jax.block_until_ready(metrics)
      wall = time.perf_counter() - start
    path = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'),
                     recursive=True)[0]
    with gzip.open(path) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  totals = collections.defaultdict(float)
  op_spans, executor_spans = [], []
  for e in (e for e in events if e.get('ph') == 'X'):
    span = (e['ts'] / 1e3, (e['ts'] + e['dur']) / 1e3)  # us -> ms
    op = e.get('args', {}).get('hlo_op')
    if op and e['args'].get('hlo_module', '').startswith('jit_train_step'):
      found, kinds = names.get(op, ([], []))
      totals[categorize(op, found, kinds)] += e['dur'] / 1e3
      op_spans.append(span)
    elif e.get('name', '').startswith(_EXECUTOR):
      executor_spans.append(span)
  totals.update(wall_split(op_spans, executor_spans, wall * 1e3))
  return ({k: totals.get(k, 0.0) / steps for k in CATEGORIES}, wall / steps,
          libraries)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--set', action='append', default=[])
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  config = overrides.override(files.load(args.config), args.set)
  per_step, wall, libraries = profile(config, args.steps)
  print(f'{args.config} {" ".join(args.set)}: batch {config.batch_size}, '
        f'conv_impl={config.model.conv_impl}, {wall * 1e3:.1f} ms per step '
        f'({config.batch_size / wall:.1f} img/s)')
  busy = sum(v for k, v in per_step.items() if k not in WALL_SHARES)
  print(f'  busy time of XLA operations, summed over threads: {busy:.1f} ms')
  for k in CATEGORIES:
    share = per_step[k] / (wall * 1e3 if k in WALL_SHARES else busy)
    print(f'  {k:<14} {per_step[k]:8.1f} ms  {100 * share:5.1f}%'
          + (' of wall time' if k in WALL_SHARES else ' of busy time'))
  print('  convolutions and dots by the library that computes them:')
  for library, kinds in sorted(libraries.items()):
    print(f'    {library:<12} ' + ', '.join(
        f'{n} {kind}' for kind, n in sorted(kinds.items())))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump({'config': args.config, 'overrides': args.set,
                 'ms_per_step': wall * 1e3, 'categories_ms': per_step,
                 'contractions_by_library': libraries}, f,
                indent=1)


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  main()
