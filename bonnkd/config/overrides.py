"""``key=value`` overrides typed by the config's own fields.

For the benchmarks, the plan runner and the tests (``launch.py`` gets the
same from ``ml_collections.config_flags``).
"""

import ast

import ml_collections

from bonnkd import errors

__all__ = ['flatten', 'override']


def flatten(tree, prefix: str = '') -> dict:
  """{'a.b': value} of a nested config or dict (the keys of overrides)."""
  flat = {}
  for key, value in tree.items():
    if hasattr(value, 'items'):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _parse(key: str, text: str, old):
  """``text`` as a value of the type of ``old`` (the field's current value)."""
  if isinstance(old, bool):
    lowered = text.strip().lower()
    if lowered in ('true', '1', 'yes'):
      return True
    if lowered in ('false', '0', 'no'):
      return False
    raise errors.ConfigError(
        f'Invalid override {key}={text!r}: expected a boolean (True/False).')
  if isinstance(old, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise errors.ConfigError(
        f'Invalid override {key}={text!r}: expected a '
        f'{type(old).__name__} like {old!r}.') from e
  if isinstance(old, float) and isinstance(value, int):
    value = float(value)
  if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(old)(value)
  if old is not None and not isinstance(value, type(old)):
    raise errors.ConfigError(
        f'Invalid override {key}={text!r}: expected a '
        f'{type(old).__name__} like {old!r}.')
  return value


def override(config, items) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``'a.b=value'`` items applied.

  Each value is parsed as the type of the field it replaces: ``'False'``
  gives ``False`` for a boolean (not ``bool('False')``), ``'3'`` gives
  ``3.0`` for a float, ``'(1, 2)'`` a tuple. Items may also be
  ``(key, value)`` pairs of Python values, set as they are.

  Raises:
    errors.ConfigError: an unknown key, or a value of the wrong type.
  """
  config = config.copy_and_resolve_references()
  for item in items:
    if isinstance(item, str):
      key, sep, text = item.partition('=')
      if not sep:
        raise errors.ConfigError(
            f'Invalid override {item!r}: expected key=value.')
    else:
      key, text = item
    *parents, leaf = key.strip().split('.')
    node = config
    for i, name in enumerate(parents + [leaf]):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        raise errors.ConfigError(
            f'Invalid override {key}: the config has no field '
            f'{".".join((parents + [leaf])[:i + 1])!r}.')
      if i < len(parents):
        node = node[name]
    node[leaf] = _parse(key, text, node[leaf]) if isinstance(text, str) \
        else text
  return config
