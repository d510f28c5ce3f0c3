"""The C heap kept for XLA:CPU's buffers instead of handed back every step.

XLA:CPU allocates each execution's buffers with ``posix_memalign`` and frees
them when it ends. The temporaries of the ``cpu`` preset's train step are
one 160,030,720-byte block, allocated by a thread of XLA's pool: glibc's
malloc serves a block that large with a fresh ``mmap`` (above its largest
mmap threshold, 32 MiB, and, from a thread's own arena, above that arena's
64 MiB heaps) and unmaps it on ``free``, so every step faults its 39,070
pages in again, zero-filled by the kernel: ~170,000 page faults a second
of training on a 2-core Intel Xeon (lscpu family 6, model 167).
:func:`keep_freed_buffers` makes malloc keep them
(``mallopt``, glibc's documented tunables, the same as the environment
variables ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=...``): one arena for every thread, large blocks
from the heap instead of ``mmap``, and freed memory at the heap's top not
given back. Step after step, the same memory serves: the ``cpu`` preset's
train step 1.09-1.14x as fast (599-610 -> 668-682 img/s, page faults of
the timed process 506-522k -> 276k), processes alternated on that Xeon,
2026-12-05
(results/benchmarks/heap_keep_freed_buffers_xeon_family6_model167.txt).

The price: the process keeps its peak of freed memory (it is used again
the next step), and its threads share one arena's lock, which on a host
feeding accelerators from many threads could cost more than it saves; so
it is done only where JAX computes on the CPU (no accelerator plugin or
``libtpu`` installed, or ``JAX_PLATFORMS`` naming ``cpu`` first), and
``BONNKD_KEEP_FREED_BUFFERS=0`` turns it off. It must run before other
threads allocate (they keep the arena they were given): the entry points
(``launch.py``, ``bonnkd.deploy``, the timing children of
:mod:`bonnkd.cpu.xla_cpu_flags`, the benchmarks) call it first. It changes
where buffers live, never what is computed.
"""

import ctypes
import importlib.metadata
import importlib.util
import os

from absl import logging

__all__ = ['ENV', 'computes_on_cpu', 'keep_freed_buffers']

ENV = 'BONNKD_KEEP_FREED_BUFFERS'

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # an int's largest: mallopt takes an int


def computes_on_cpu() -> bool:
  """Whether JAX in this process will compute on the CPU (backend not started).

  ``JAX_PLATFORMS`` decides where set (its first platform); otherwise the
  CPU unless an accelerator plugin (a ``jax_plugins`` entry point: CUDA,
  ROCm) or ``libtpu`` is installed.
  """
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  if importlib.metadata.entry_points(group='jax_plugins'):
    return False
  return importlib.util.find_spec('libtpu') is None


def _glibc():
  """This process's C library if it is glibc (which has mallopt), else None."""
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()
    return libc
  except (OSError, AttributeError):
    return None


def keep_freed_buffers() -> bool:
  """Makes malloc keep freed buffers for the next step; True where it did.

  Call it first in a process, before JAX's backend starts (see the module
  docstring). Does nothing, and returns False, off the CPU, off glibc or
  with ``$BONNKD_KEEP_FREED_BUFFERS=0``.
  """
  if os.environ.get(ENV, '1') == '0':
    logging.info('The C heap as glibc sets it ($%s=0).', ENV)
    return False
  if not computes_on_cpu():
    return False
  libc = _glibc()
  if libc is None:
    logging.info('The C heap as it is: this C library is not glibc.')
    return False
  done = all(libc.mallopt(param, value) == 1 for param, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
  logging.info('The C heap keeps freed buffers for the next step%s '
               '(bonnkd.cpu.heap).', '' if done else ' (partly refused)')
  return done
