"""bonnkd.cpu.heap: freed buffers kept, counted in page faults.

A thread (XLA's pool allocates from its own threads) allocates a 96 MiB
block, writes every page and frees it, twice. The second time, malloc as
glibc sets it maps fresh pages again (one fault a page: 24,576); after
keep_freed_buffers() it hands back the same, already mapped, memory (next to
no faults). Each case in a process of its own: the settings last for the
process and bind its threads' arenas.
"""

import os
import subprocess
import sys

import pytest

from bonnkd.cpu import heap
from tests.conftest import ROOT

PAGES = 96 * 2**20 // 4096

_FAULTS_OF_A_SECOND_BLOCK = f"""
import ctypes, resource, sys, threading
from bonnkd.cpu import heap
kept = heap.keep_freed_buffers()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = {PAGES} * 4096

def block():
  p = libc.malloc(size)
  ctypes.memset(p, 1, size)
  libc.free(p)

def faults_of_a_block():
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  t = threading.Thread(target=block)
  t.start()
  t.join()
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_a_block()
print(kept, faults_of_a_block())
"""

needs_glibc = pytest.mark.skipif(
    heap._glibc() is None,  # pylint: disable=protected-access
    reason="mallopt is glibc's")


def _second_block(env) -> tuple[str, int]:
  out = subprocess.run(
      [sys.executable, '-c', _FAULTS_OF_A_SECOND_BLOCK], capture_output=True,
      text=True, env={**os.environ, 'JAX_PLATFORMS': 'cpu', **env},
      cwd=ROOT, check=True)
  kept, faults = out.stdout.split()
  return kept, int(faults)


@needs_glibc
def test_a_freed_block_is_mapped_again_as_glibc_sets_it():
  kept, faults = _second_block({heap.ENV: '0'})
  assert kept == 'False'
  assert faults >= 0.9 * PAGES


@needs_glibc
def test_kept_freed_buffers_serve_the_next_block_without_faults():
  kept, faults = _second_block({})
  assert kept == 'True'
  assert faults < 0.05 * PAGES


@pytest.mark.parametrize('platforms,expected', [
    ('cpu', True), ('cpu,cuda', True), ('tpu', False), ('cuda,cpu', False)])
def test_jax_platforms_decides_where_jax_computes(monkeypatch, platforms,
                                                   expected):
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  assert heap.computes_on_cpu() is expected


def test_nothing_is_changed_off_the_cpu(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')
  monkeypatch.setattr(heap, '_glibc', lambda: pytest.fail('mallopt called'))
  assert heap.keep_freed_buffers() is False
