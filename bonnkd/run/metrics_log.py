"""Where a run's numbers go: ``metrics.jsonl``, TensorBoard and the console.

``metrics.jsonl`` is the machine-readable record (one JSON object a line,
each with ``step``, ``epoch``, ``split``, ``loss``, ``accuracy``,
``wall_time`` (unix seconds) and ``elapsed_s`` (training seconds, summed over
resumes)). TensorBoard events and console lines go through clu's metric
writers, which import TensorFlow; with ``config.tensorboard=False`` the
console lines are written here instead (:class:`ConsoleWriter`), so a run
needs no TensorFlow (an accelerator image with JAX alone, the data from
``config.data.source='tarball'``).
"""

import json
import math
import os
import time
from typing import Any

from absl import logging

from bonnkd import errors
from bonnkd import fileio

__all__ = ['MetricsLog', 'ConsoleWriter', 'clu_metric_writers', 'read_jsonl']


def _parse_lines(path: str):
  """(records, number of lines that were not a JSON record)."""
  if not os.path.exists(path):
    return [], 0
  records, bad = [], 0
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        # A line cut short by a full disk or a killed process.
        logging.warning('%s:%d is not a JSON record; skipped: %r', path,
                        number, line[:80])
        bad += 1
  return records, bad


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a metrics.jsonl; lines cut short are skipped, warned."""
  return _parse_lines(path)[0]


class ConsoleWriter:
  """clu's ``LoggingWriter`` for scalars, without importing TensorFlow."""

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    values = ', '.join(f'{k}={v:.6g}' for k, v in sorted(scalars.items()))
    logging.info('[%d] %s', step, values)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def clu_metric_writers():
  """clu's ``metric_writers``, which TensorBoard events need.

  Called by ``bonnkd.train.validate_config`` where ``config.tensorboard``,
  so that a host without TensorFlow hears it before the data is read.

  Raises:
    errors.ConfigError: clu's writers do not import (no TensorFlow).
  """
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.ConfigError(
        f'config.tensorboard=True needs TensorFlow for clu\'s TensorBoard '
        f'writer ({e}); pip install tensorflow-cpu, or set '
        '--config.tensorboard=False (metrics.jsonl and the console only).'
    ) from e
  return metric_writers


def _writer(logdir: str, tensorboard: bool):
  """clu's default writer (TensorBoard and console), or the console alone."""
  if not tensorboard:
    return ConsoleWriter()
  return clu_metric_writers().create_default_writer(logdir,
                                                    asynchronous=False)


class MetricsLog:
  """Appends records to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

  Made by :meth:`bonnkd.run.run_dir.RunDir.open_metrics_log`.

  Args:
    path: the run's ``metrics.jsonl``; TensorBoard events go beside it.
    resume_step: the step training resumes from (0 for a new run). Records
      past it belong to steps that will be replayed, identically, and are
      dropped so the file has one record per (step, split).
    tensorboard: also write TensorBoard events.
    is_main: only the main process writes files.
  """

  def __init__(self, path: str, resume_step: int = 0,
               tensorboard: bool = True, is_main: bool = True):
    self.path = path
    self.is_main = is_main
    records, bad_lines = _parse_lines(self.path)
    # The test record is written once training ends; a rerun writes it anew.
    kept = [r for r in records
            if r['step'] <= resume_step and r['split'] != 'test']
    self.elapsed_offset = max((r.get('elapsed_s', 0.0) for r in kept),
                              default=0.0)
    self._records = {(r['step'], r['split']): r for r in kept}
    if is_main and (len(kept) != len(records) or bad_lines):
      logging.info('Resuming at step %d: dropping %d records past it.',
                   resume_step, len(records) - len(kept))
      # Atomically: a full disk here leaves the old file, not half of it.
      fileio.write_text(self.path, ''.join(json.dumps(r) + '\n' for r in kept))
    self._start = time.time()
    self.writer = _writer(os.path.dirname(path), is_main and tensorboard)

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
      try:
        with open(self.path, 'a') as f:
          f.write(json.dumps(record) + '\n')
      except OSError as e:
        raise errors.StorageError(
            f'Could not append to {self.path}: {e}. The records and '
            'checkpoints written before are kept; free space and run the '
            'same command to resume.') from e
    self._records[(record['step'], split)] = record
    self.writer.write_scalars(
        step, {f'{split}_{k}': v for k, v in metrics.items()
               if math.isfinite(v)})
    return record

  def logged(self, step: int, split: str) -> dict[str, Any] | None:
    """The record of ``(step, split)`` in this run's log, if any."""
    return self._records.get((int(step), split))

  def flush(self):
    self.writer.flush()

  def close(self):
    self.writer.close()
