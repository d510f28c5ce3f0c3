"""An optional native library of XLA FFI handlers, built beside this package.

``pip install -e .`` builds ``bonnkd/cpu/<name>*.so`` from
``bonnkd/cpu/native/`` where it can (``setup.py``). A :class:`NativeLibrary`
finds it, loads it once per process, registers its handlers with
``jax.ffi`` for the CPU, and says why not where it cannot: not built, turned
off by its environment variable, or another backend. The reason is logged
once, at the first call that wanted the library.
"""

from collections.abc import Callable
import ctypes
import functools
import importlib.machinery
import os

from absl import logging
import jax

__all__ = ['NativeLibrary']


class NativeLibrary:
  """One optional library: its file, switch, handlers and fallback.

  Args:
    name: the file's name without suffix, e.g. '_onednn_conv'.
    env: the environment variable that turns it off with '0'.
    what: what it computes, for the messages ("oneDNN convolutions").
    fallback: what runs without it, for the message ("XLA's convolution").
    targets: FFI target name -> the library's handler symbol.
    preload: called before loading (e.g. to load a library it links).
    loaded: called with the ctypes library and its path once loaded and
      registered.
  """

  def __init__(self, name: str, env: str, what: str, fallback: str,
               targets: dict[str, str],
               preload: Callable[[], None] | None = None,
               loaded: Callable[[ctypes.CDLL, str], None] | None = None):
    self.name, self.env, self.what, self.fallback = name, env, what, fallback
    self.targets = targets
    self._preload, self._loaded = preload, loaded

  def path(self) -> str | None:
    """The built library next to this package, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
      path = os.path.join(here, self.name + suffix)
      if os.path.isfile(path):
        return path
    return None

  @functools.cached_property
  def _state(self) -> tuple[ctypes.CDLL | None, str]:
    """(library, why not): loads and registers it, once."""
    if os.environ.get(self.env, '1') == '0':
      return None, f'${self.env}=0'
    path = self.path()
    if path is None:
      return None, (f'bonnkd/cpu/{self.name} is not built (pip install -e . '
                    'builds it where g++ and its headers are at hand)')
    try:
      if self._preload:
        self._preload()
      library = ctypes.CDLL(path)
    except (OSError, ImportError) as e:
      return None, f'{path} does not load: {e}'
    for target, symbol in self.targets.items():
      jax.ffi.register_ffi_target(
          target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
    if self._loaded:
      self._loaded(library, path)
    return library, ''

  @property
  def library(self) -> ctypes.CDLL | None:
    """The loaded ctypes library, or None where it is unavailable."""
    return self._state[0] if jax.default_backend() == 'cpu' else None

  def available(self) -> bool:
    """Whether it can run here (the CPU backend, loaded)."""
    return self.library is not None

  @functools.cache
  def why_unavailable(self) -> str:
    """Why :meth:`available` is False ('' where it is True); logged once."""
    if jax.default_backend() != 'cpu':
      return f'the backend is {jax.default_backend()}'
    why = self._state[1]
    if why:
      logging.warning('%s unavailable (%s): %s is used.', self.what, why,
                      self.fallback)
    return why
