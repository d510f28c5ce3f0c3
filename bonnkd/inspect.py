"""Inspect a bonnkd checkpoint: steps, config, parameter tree, 1-bit layers.

  python -m bonnkd.inspect runs/p1              # a run directory
  python -m bonnkd.inspect runs/p1/checkpoints  # or its checkpoint folder

Prints the available steps (latest and best by val accuracy), the saved
config, every parameter with shape, dtype and count, and for each binarized
layer the fraction of +1 weights (sign of the latent kernel), mean |w| and
its modulation vector. Everything is read with orbax alone; see the README
for the few lines of plain orbax that do the same.
"""

import json
import os
import sys

import flax
import ml_collections
import numpy as np

from bonnkd import checkpointing
from bonnkd import models
from bonnkd import summary

__all__ = ['resolve_run_dir', 'describe']


def resolve_run_dir(path: str) -> str:
  """The run directory of ``path`` (a run dir or its checkpoints/ folder).

  Raises:
    checkpointing.NoCheckpointError: ``path`` holds no bonnkd checkpoint.
  """
  path = os.path.abspath(path)
  if os.path.basename(path) == checkpointing.CHECKPOINT_DIR:
    path = os.path.dirname(path)
  if not os.path.isdir(checkpointing.checkpoint_dir(path)):
    raise checkpointing.NoCheckpointError(
        f'{path!r} is not a bonnkd run or checkpoint folder: no '
        f'{checkpointing.CHECKPOINT_DIR}/ inside.')
  return path


def _binary_layers(config) -> list[str]:
  """Paths of layers with 1-bit weights, per the model in the config."""
  if config is None:
    return []
  costs = summary.layer_costs(models.create_model(config.model))
  return [c.name for c in costs if c.binary_params]


def describe(path: str) -> str:
  """The whole report as text."""
  run_dir = resolve_run_dir(path)
  manager = checkpointing.create_manager(run_dir, read_only=True)
  steps = manager.all_steps()
  best, latest = manager.best_step(), manager.latest_step()
  manager.close()
  if latest is None:
    raise checkpointing.NoCheckpointError(f'No checkpoint in {run_dir}.')
  lines = [f'run: {run_dir}',
           f'steps: {list(steps)} (latest {latest}, best by val {best})']
  config = None
  config_path = os.path.join(run_dir, 'config.json')
  if os.path.exists(config_path):
    with open(config_path) as f:
      config = ml_collections.ConfigDict(json.load(f))
    lines += ['config:', json.dumps(config.to_dict(), indent=2,
                                    sort_keys=True)]
  step, variables = checkpointing.restore_variables(run_dir, which='best')
  lines.append(f'parameters of step {step}:')
  flat = flax.traverse_util.flatten_dict(variables['params'], sep='/')
  for name, value in flat.items():
    value = np.asarray(value)
    lines.append(f'  {name:<48} {str(value.shape):<18} {value.dtype}  '
                 f'{value.size:,}')
  lines.append(f'  total: {sum(np.size(v) for v in flat.values()):,}')
  for layer in _binary_layers(config):
    kernel = np.asarray(flat[f'{layer}/kernel'])
    line = (f'1-bit {layer}: +1 fraction {np.mean(kernel >= 0):.3f}, '
            f'mean |w| {np.mean(np.abs(kernel)):.4f}')
    if f'{layer}/modulation' in flat:
      m = np.asarray(flat[f'{layer}/modulation'])
      line += (f', modulation min/mean/max {m.min():.4f}/{m.mean():.4f}/'
               f'{m.max():.4f}: {np.array2string(m[:8], precision=4)}'
               + (' ...' if m.size > 8 else ''))
    lines.append(line)
  return '\n'.join(lines)


def main(argv):
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  try:
    print(describe(argv[1]))
  except checkpointing.NoCheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
