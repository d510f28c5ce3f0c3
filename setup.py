"""Builds bonnkd's optional native CPU kernels; everything else is in pyproject.toml.

``bonnkd/cpu/native/onednn_conv.cc`` (oneDNN convolutions as XLA FFI custom
calls, :mod:`bonnkd.cpu.onednn`) is compiled where the build environment has
jaxlib's FFI headers and the oneDNN wheels (``pyproject.toml``'s build
requirements, on x86-64 Linux). The extension is optional: without a C++
compiler or those wheels ``pip install`` still succeeds and bonnkd uses
XLA's convolutions.
"""

import importlib.metadata
import importlib.util
import os

from setuptools import Extension
from setuptools import setup


def _file_of(distribution: str, suffix: str):
  files = importlib.metadata.distribution(distribution).files or []
  return next(f for f in files if str(f).endswith(suffix)).locate().resolve()


def onednn_extension() -> list[Extension]:
  """The oneDNN convolutions, or nothing where their headers are missing."""
  try:
    jaxlib = importlib.util.find_spec('jaxlib')
    ffi_include = os.path.join(jaxlib.submodule_search_locations[0],
                               'include')
    dnnl_hpp = _file_of('onednn-devel-cpu-gomp', 'oneapi/dnnl/dnnl.hpp')
    libdnnl = _file_of('onednn-cpu-gomp', 'libdnnl.so.3')
  except (AttributeError, importlib.metadata.PackageNotFoundError,
          StopIteration) as e:
    print(f'bonnkd: not building the oneDNN convolutions ({e!r}); '
          "XLA's convolutions will be used.")
    return []
  return [Extension(
      'bonnkd.cpu._onednn_conv',
      sources=['bonnkd/cpu/native/onednn_conv.cc'],
      include_dirs=[ffi_include, str(dnnl_hpp.parents[2])],
      library_dirs=[str(libdnnl.parent)],
      libraries=[':libdnnl.so.3'],
      extra_compile_args=['-std=c++17', '-O2', '-fopenmp', '-Wno-attributes'],
      extra_link_args=['-fopenmp'],
      language='c++',
      optional=True)]


setup(ext_modules=onednn_extension())
