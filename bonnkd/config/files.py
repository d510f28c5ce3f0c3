"""Config and plan files: Python files loaded by path, with presets.

``configs/<file>.py[:preset]`` names a config (:func:`load`);
``configs/plans/<file>.py[:stage]`` a plan (``bonnkd.sweep.load_plan``).
Both are read by :func:`load_module`.
"""

import importlib.util
import os
import sys

import ml_collections

from bonnkd import errors
from bonnkd.config import defaults

__all__ = ['load_module', 'load', 'presets_of', 'unknown_preset']


def load_module(path: str, entry: str, what: str = 'Config file',
                error=errors.ConfigError):
  """The Python file ``path`` as a module that defines ``entry``.

  Raises:
    ``error``: no such file, or it does not define ``entry``.
  """
  if not os.path.isfile(path):
    raise error(f'{what} {path!r} does not exist.')
  _make_configs_importable(path)
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, entry):
    raise error(f'{what} {path!r} defines no {entry}().')
  return module


def _make_configs_importable(path: str) -> None:
  """Puts the folder holding ``path``'s ``configs`` package on ``sys.path``.

  Config files share ``configs/recipes.py`` (``from configs import
  recipes``); from any working directory that import finds the ``configs``
  package the file itself belongs to.
  """
  folder = os.path.dirname(os.path.abspath(path))
  while os.path.basename(folder) and not os.path.isfile(
      os.path.join(folder, 'configs', '__init__.py')):
    folder = os.path.dirname(folder)
  if os.path.basename(folder) and folder not in sys.path:
    sys.path.append(folder)


def unknown_preset(config_name: str, preset: str,
                   presets=defaults.PRESETS) -> errors.ConfigError:
  known = ', '.join("'' (default)" if p == 'default' else repr(p)
                    for p in presets)
  return errors.ConfigError(
      f'Unknown preset {preset!r} for {config_name}; known presets: {known}.')


def presets_of(path: str) -> tuple[str, ...]:
  """The presets of a config file (its PRESETS, else the common ones)."""
  return tuple(getattr(_config_module(path), 'PRESETS', defaults.PRESETS))


def _config_module(path: str):
  """The config file ``path`` as a module (ConfigError if it is not one)."""
  return load_module(path, 'get_config', 'Config file', errors.ConfigError)


def load(spec: str) -> ml_collections.ConfigDict:
  """The config of ``'path/to/file.py[:preset]'``, as ``launch.py`` reads it.

  Raises:
    errors.ConfigError: no such file, or it has no ``get_config``, or the
      preset is unknown.
  """
  path, _, preset = spec.partition(':')
  return _config_module(path).get_config(preset)
