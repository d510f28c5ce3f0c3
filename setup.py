"""Builds bonnkd's optional native CPU kernels; everything else is in pyproject.toml.

Two XLA FFI libraries, compiled where the build environment has jaxlib's FFI
headers (``pyproject.toml``'s build requirements, on x86-64 Linux):

* ``bonnkd/cpu/native/onednn_conv.cc``: oneDNN's convolutions
  (:mod:`bonnkd.cpu.onednn`), with the oneDNN wheels;
* ``bonnkd/cpu/native/xnor_conv.cc``: the XNOR-popcount convolution of
  packed 1-bit tensors (:mod:`bonnkd.cpu.xnor`), headers only.

Both are optional: without a C++ compiler or those wheels ``pip install``
still succeeds and bonnkd uses XLA's convolutions and the pure-JAX packed
convolution.
"""

import importlib.metadata
import importlib.util
import os

from setuptools import Extension
from setuptools import setup


def _file_of(distribution: str, suffix: str):
  files = importlib.metadata.distribution(distribution).files or []
  return next(f for f in files if str(f).endswith(suffix)).locate().resolve()


def ffi_include() -> str | None:
  """jaxlib's XLA FFI headers, if jaxlib is in the build environment."""
  jaxlib = importlib.util.find_spec('jaxlib')
  if jaxlib is None or not jaxlib.submodule_search_locations:
    return None
  return os.path.join(jaxlib.submodule_search_locations[0], 'include')


def onednn_extension() -> list[Extension]:
  """The oneDNN convolutions, or nothing where their headers are missing."""
  include = ffi_include()
  try:
    dnnl_hpp = _file_of('onednn-devel-cpu-gomp', 'oneapi/dnnl/dnnl.hpp')
    libdnnl = _file_of('onednn-cpu-gomp', 'libdnnl.so.3')
  except (importlib.metadata.PackageNotFoundError, StopIteration) as e:
    include, why = None, repr(e)
  else:
    why = 'no jaxlib'
  if include is None:
    print(f'bonnkd: not building the oneDNN convolutions ({why}); '
          "XLA's convolutions will be used.")
    return []
  return [Extension(
      'bonnkd.cpu._onednn_conv',
      sources=['bonnkd/cpu/native/onednn_conv.cc'],
      include_dirs=[include, str(dnnl_hpp.parents[2])],
      library_dirs=[str(libdnnl.parent)],
      libraries=[':libdnnl.so.3'],
      extra_compile_args=['-std=c++17', '-O2', '-fopenmp', '-Wno-attributes'],
      extra_link_args=['-fopenmp'],
      language='c++',
      optional=True)]


def xnor_extension() -> list[Extension]:
  """The XNOR-popcount convolution, or nothing without jaxlib's headers."""
  include = ffi_include()
  if include is None:
    print('bonnkd: not building the XNOR-popcount convolution (no jaxlib); '
          'the pure-JAX one will be used.')
    return []
  return [Extension(
      'bonnkd.cpu._xnor_conv',
      sources=['bonnkd/cpu/native/xnor_conv.cc'],
      include_dirs=[include],
      extra_compile_args=['-std=c++17', '-O3', '-Wno-attributes'],
      language='c++',
      optional=True)]


setup(ext_modules=onednn_extension() + xnor_extension())
