"""What this machine is, for the caches of what was measured on it.

The fastest convolution lowering and the fastest XLA:CPU flags depend on the
CPU (two EPYC generations that a virtual machine names alike differed), the
core count, the jax version and the XLA_FLAGS already set. :func:`key` names
all of them; :mod:`bonnkd.cpu.conv_autotune` and
:mod:`bonnkd.cpu.xla_cpu_flags` key their caches (``$BONNKD_CACHE_DIR``, default ``~/.cache/bonnkd``) by it.

Nothing here starts JAX's backend: :mod:`bonnkd.cpu.xla_cpu_flags` uses it
before the backend starts.
"""

import importlib.metadata
import json
import os
import platform

from absl import logging

from bonnkd import fileio

__all__ = ['cpu_name', 'key', 'cache_file', 'read_cache', 'write_cache']

_CACHE_ENV = 'BONNKD_CACHE_DIR'


def _cpuinfo() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
  fields = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if not line.strip():
          break
        name, _, value = line.partition(':')
        fields[name.strip()] = value.strip()
  except OSError:
    pass
  return fields


def cpu_name() -> str:
  """The CPU's model name and, on x86, its family and model numbers.

  A virtual machine may call two generations of EPYC just 'AMD EPYC' (family
  25 and 26 here, whose fastest lowerings differ): the numbers tell them apart.
  """
  info = _cpuinfo()
  cpu = info.get('model name') or platform.processor() or platform.machine()
  if 'cpu family' in info:
    cpu += f" (family {info['cpu family']}, model {info.get('model', '?')})"
  return cpu


def key() -> str:
  """The CPU, cores, jax version and XLA_FLAGS: what a speed choice is for.

  XLA_FLAGS, when set, are part of the key since they can change how XLA
  lowers a convolution.
  """
  machine = (f'{cpu_name()} | {os.cpu_count()} cores | '
             f"jax {importlib.metadata.version('jax')}")
  flags = os.environ.get('XLA_FLAGS', '').strip()
  return f'{machine} | XLA_FLAGS={flags}' if flags else machine


def cache_file(name: str) -> str:
  root = os.environ.get(_CACHE_ENV) or os.path.join(
      os.path.expanduser('~'), '.cache', 'bonnkd')
  return os.path.join(root, name)


def read_cache(name: str) -> dict:
  """The cache file ``name`` ({} when it is missing or unreadable)."""
  try:
    with open(cache_file(name)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def write_cache(name: str, cache: dict) -> None:
  """Writes the cache atomically; a read-only home only costs a re-measure."""
  path = cache_file(name)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fileio.write_json(path, cache, indent=1)
  except OSError as e:  # errors.StorageError is one.
    logging.warning('Could not write the cache %s: %s', path, e)
