"""Where a run's numbers go: ``metrics.jsonl``, TensorBoard and the console.

``metrics.jsonl`` is the machine-readable record (one JSON object a line,
each with ``step``, ``epoch``, ``split``, ``loss``, ``accuracy``,
``wall_time`` (unix seconds) and ``elapsed_s`` (training seconds, summed over
resumes)). TensorBoard events and console lines go through clu's metric
writers.
"""

import json
import math
import os
import time
from typing import Any

from absl import logging

from bonnkd import run_dir

__all__ = ['MetricsLog', 'read_jsonl', 'METRICS_FILE']

METRICS_FILE = run_dir.METRICS_FILE


def read_jsonl(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
  """Appends records to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

  Args:
    workdir: the run directory.
    resume_step: the step training resumes from (0 for a new run). Records
      past it belong to steps that will be replayed, identically, and are
      dropped so the file has one record per (step, split).
    tensorboard: also write TensorBoard events.
    is_main: only the main process writes files.
  """

  def __init__(self, workdir: str, resume_step: int = 0,
               tensorboard: bool = True, is_main: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.is_main = is_main
    records = read_jsonl(self.path)
    # The test record is written once training ends; a rerun writes it anew.
    kept = [r for r in records
            if r['step'] <= resume_step and r['split'] != 'test']
    self.elapsed_offset = max((r.get('elapsed_s', 0.0) for r in kept),
                              default=0.0)
    if is_main and len(kept) != len(records):
      logging.info('Resuming at step %d: dropping %d records past it.',
                   resume_step, len(records) - len(kept))
      with open(self.path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in kept)
    self._start = time.time()
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    self.writer = metric_writers.create_default_writer(
        workdir, just_logging=not (is_main and tensorboard),
        asynchronous=False)

  @property
  def elapsed_s(self) -> float:
    return self.elapsed_offset + time.time() - self._start

  def write(self, step: int, epoch: float, split: str,
            **metrics: float) -> dict[str, Any]:
    """Writes one record; returns it."""
    record = {'step': int(step), 'epoch': round(float(epoch), 4),
              'split': split, **{k: float(v) for k, v in metrics.items()},
              'wall_time': time.time(), 'elapsed_s': round(self.elapsed_s, 2)}
    if self.is_main:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    self.writer.write_scalars(
        step, {f'{split}_{k}': v for k, v in metrics.items()
               if math.isfinite(v)})
    return record

  def flush(self):
    self.writer.flush()

  def close(self):
    self.writer.close()
