"""Mistakes a user can fix, and how the command-line tools report them.

Every error that a user's input causes (a config value, a path, missing data)
is a :class:`UserError`: its message names the value, what was expected and,
where there is one, the fix. The CLIs (``launch.py``, ``python -m
bonnkd.tools.inspect`` / ``report`` / ``summary``) print such an error as one
line on stderr and exit with status 1; anything else is a bug and keeps its
traceback. From Python or Colab the exceptions propagate as usual.

    try:
      train.train_and_evaluate(config, workdir)
    except errors.UserError as e:
      print(e)
"""

from collections.abc import Callable
import functools
import sys

__all__ = ['UserError', 'ConfigError', 'NotARunError', 'StorageError',
           'exit_on_user_error',
           'parse_flags']


class UserError(Exception):
  """An input the user gave cannot be used; the message says why and how."""


class ConfigError(UserError, ValueError):
  """A config value is invalid (unknown name, out of range, inconsistent)."""


class NotARunError(UserError, FileNotFoundError):
  """A path that should be a bonnkd run directory (or checkpoint) is not."""


class StorageError(UserError, OSError):
  """A file could not be written (full disk, permissions); nothing is lost."""


def exit_on_user_error(main: Callable[..., int | None]) -> Callable[..., int]:
  """Wraps a CLI's ``main``: a :class:`UserError` -> one line, exit 1.

  Other exceptions propagate with their traceback: they are bugs.
  """

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(1)

  return wrapped


def _innermost_user_error(error: BaseException) -> UserError | None:
  """The UserError first raised in ``error``'s chain (its own message).

  config_flags re-raises a config file's ValueError as
  ``type(e)('Error whilst parsing config file:' + traceback)``: the
  innermost one is the original.
  """
  found, seen = None, set()
  while error is not None and id(error) not in seen:
    if isinstance(error, UserError):
      found = error
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return found


def parse_flags(argv):
  """absl's flag parsing, with mistakes reported as one line (exit 1).

  ``app.run(main, flags_parser=errors.parse_flags)``. A config file that
  raises a :class:`UserError` (an unknown preset, say) reaches absl wrapped
  in a traceback by ``ml_collections.config_flags``; this prints the
  UserError's message alone. Other flag errors keep absl's one-line text.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    cause = _innermost_user_error(e)
    message = str(cause) if cause else str(e).strip().splitlines()[0]
    print(f'error: {message}', file=sys.stderr, flush=True)
    sys.exit(1)
