"""PyTorch, the ``[bench]`` extra, for the benchmarks that compare with it.

  pip install -e '.[bench]'
"""

from bonnkd import errors


def available() -> bool:
  """Whether PyTorch is installed here."""
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def require():
  """The ``torch`` module.

  Raises:
    errors.UserError: PyTorch is not installed (one line: how to install it).
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(
        "PyTorch is not installed, and this benchmark compares with it: "
        "pip install -e '.[bench]'") from e
  return torch
