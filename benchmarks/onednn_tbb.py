"""Runs a benchmark with oneDNN's TBB build in place of its OpenMP build.

bonnkd's oneDNN library is built against oneDNN 3.2's headers and links
``libdnnl.so.3`` by name; loading the TBB build's ``libdnnl.so.3`` (and
what it links) first, with RTLD_GLOBAL, makes the same bonnkd library run
on TBB's threads. The TBB wheels cannot share a virtual environment with
the OpenMP one (both install ``lib/libdnnl.so.3``), so they are unpacked
into a folder of their own::

  pip download --no-deps -d /tmp/tbb onednn-cpu-tbb==2023.2.0 tbb==2023.2.0 \\
      intel-cmplr-lib-rt
  for w in /tmp/tbb/*.whl; do python -m zipfile -e "$w" /tmp/tbb/x; done
  python -m benchmarks.onednn_tbb /tmp/tbb/x benchmarks.train_step_bench \\
      --config configs/phase1_bonn_wrn.py:cpu --impl onednn

Under TBB, ``BONNKD_ONEDNN_THREADS`` (OpenMP's team size) does not apply:
every call runs on TBB's arena, all cores. Prints oneDNN's runtime first
(results/benchmarks/train_step_onednn_teams_epyc_family25_model1.txt).
"""

import ctypes
import glob
import os
import runpy
import sys

# Loaded in this order: each one's dependencies before it.
LIBRARIES = ('libintlc.so.5', 'libsvml.so', 'libirng.so', 'libimf.so',
             'libtbb.so.12', 'libdnnl.so.3')
_RUNTIMES = {1: 'sequential', 2: 'OpenMP', 4: 'TBB', 8: 'threadpool'}


class _Version(ctypes.Structure):
  _fields_ = [('major', ctypes.c_int), ('minor', ctypes.c_int),
              ('patch', ctypes.c_int), ('hash', ctypes.c_char_p),
              ('cpu_runtime', ctypes.c_uint), ('gpu_runtime', ctypes.c_uint)]


def main():
  if len(sys.argv) < 3:
    sys.exit(__doc__)
  folder, module = sys.argv[1], sys.argv[2]
  for name in LIBRARIES:
    found = glob.glob(os.path.join(folder, '**', name), recursive=True)
    if not found:
      sys.exit(f'{name} is not under {folder}: unpack the three wheels there.')
    dnnl = ctypes.CDLL(found[0], mode=ctypes.RTLD_GLOBAL)
  from bonnkd.cpu import onednn  # pylint: disable=g-import-not-at-top
  onednn.LIBRARY._preload = None  # pylint: disable=protected-access
  dnnl.dnnl_version.restype = ctypes.POINTER(_Version)
  version = dnnl.dnnl_version().contents
  print(f'oneDNN {version.major}.{version.minor}.{version.patch}, '
        f'{_RUNTIMES.get(version.cpu_runtime, version.cpu_runtime)} runtime',
        flush=True)
  sys.argv = sys.argv[2:]
  runpy.run_module(module, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()
