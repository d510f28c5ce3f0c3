"""Atomic file writes: a crash or a full disk leaves the old file, never half.

Every JSON file bonnkd writes (``config.json``, ``final.json``, checkpoint
digests, the machine caches) and every rewrite of ``metrics.jsonl`` goes
through here: written to ``<path>.tmp``, then renamed over ``path``.
"""

import json
import os

from bonnkd import errors

__all__ = ['write_text', 'write_json']


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically.

  Raises:
    errors.StorageError: the disk is full or not writable; ``path`` is as
      it was.
  """
  tmp = path + '.tmp'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    raise errors.StorageError(
        f'Could not write {path}: {e}. The files written before are kept.'
    ) from e


def write_json(path: str, obj, indent: int = 2) -> None:
  """Writes ``obj`` as JSON (sorted keys) to ``path`` atomically."""
  write_text(path, json.dumps(obj, indent=indent, sort_keys=True))
