"""Atomic file writes: a crash or a full disk leaves the old file, never half.

Every JSON file bonnkd writes (``config.json``, ``final.json``, checkpoint
digests, the machine caches), every rewrite of ``metrics.jsonl`` and every
exported model goes through here: written to ``<path>.tmp``, then renamed
over ``path``.
"""

from collections.abc import Callable
import json
import os
from typing import IO

from bonnkd import errors

__all__ = ['write_with', 'write_text', 'write_json']


def write_with(path: str, write: Callable[[IO], None],
               mode: str = 'wb') -> None:
  """Calls ``write`` on a file that then replaces ``path`` atomically.

  Raises:
    errors.StorageError: the disk is full or not writable; ``path`` is as
      it was.
  """
  tmp = path + '.tmp'
  try:
    with open(tmp, mode) as f:
      write(f)
    os.replace(tmp, path)
  except OSError as e:
    raise errors.StorageError(
        f'Could not write {path}: {e}. The files written before are kept.'
    ) from e


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically (see :func:`write_with`)."""
  write_with(path, lambda f: f.write(text), 'w')


def write_json(path: str, obj, indent: int = 2) -> None:
  """Writes ``obj`` as JSON (sorted keys) to ``path`` atomically."""
  write_text(path, json.dumps(obj, indent=indent, sort_keys=True))
