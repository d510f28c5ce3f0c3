"""Markdown tables, for the report's comparison and a plan's summary."""

from collections.abc import Sequence

__all__ = ['markdown']


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """``| a | b |`` lines: the header, its rule, one line per row."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |'
            for row in rows]
  return '\n'.join(lines) + '\n'
