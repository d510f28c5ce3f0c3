"""Inspect a bonnkd checkpoint: steps, config, parameter tree, 1-bit layers.

  python -m bonnkd.tools.inspect runs/p1              # a run directory
  python -m bonnkd.tools.inspect runs/p1/checkpoints  # or its checkpoint folder

Prints the available steps (latest and best by val accuracy), the saved
config, every parameter with shape, dtype and count, and for each binarized
layer the fraction of +1 weights (sign of the latent kernel), mean |w| and
its modulation vector next to XNOR's scale of the same kernel (mean |w| per
output channel, the optimum of BONN's reconstruction term
``||k - w o sign(k)||^2``: :mod:`bonnkd.binary.bayesian_losses`), so one
sees how far training has moved the modulation from it. The checkpoint is restored
through the run's own config (``bonnkd.training.train_state.restore``);
the README and ``bonnkd/run/checkpoints.py`` show the few lines of plain
orbax that read one without bonnkd.
"""

import json
import sys

import flax
import numpy as np

from bonnkd import errors
from bonnkd import models
from bonnkd.binary import quantizers
from bonnkd.run import checkpoints
from bonnkd.run import run_dir
from bonnkd.tools import summary
from bonnkd.training import train_state

__all__ = ['describe', 'binary_layers']


def binary_layers(config) -> list[str]:
  """Paths of the layers with 1-bit weights of ``config.model``."""
  costs = summary.layer_costs(models.create_model(config.model))
  return [c.name for c in costs if c.binary_params]


def describe(path: str) -> str:
  """The whole report as text.

  Raises:
    errors.NotARunError: ``path`` is not a run directory or its checkpoints/
      folder, or holds no checkpoint.
  """
  run = run_dir.RunDir.open(path)
  config = run.config
  with run.checkpoints(read_only=True) as ckpts:
    steps = ckpts.all_steps()
    best, latest = ckpts.best_step(), ckpts.latest_step()
  if latest is None:
    raise checkpoints.NoCheckpointError(
        f'{run.path!r} holds no checkpoint yet.')
  lines = [f'run: {run.path}',
           f'steps: {steps} (latest {latest}, best by val {best})',
           'config:', json.dumps(config.to_dict(), indent=2, sort_keys=True)]
  step, variables = train_state.restore_variables(run, 'best')
  lines.append(f'parameters of step {step}:')
  flat = flax.traverse_util.flatten_dict(variables['params'], sep='/')
  for name, value in flat.items():
    value = np.asarray(value)
    lines.append(f'  {name:<48} {str(value.shape):<18} {value.dtype}  '
                 f'{value.size:,}')
  lines.append(f'  total: {sum(np.size(v) for v in flat.values()):,}')
  layers = binary_layers(config)
  lines.append(f'1-bit layers: {len(layers)}')
  for layer in layers:
    kernel = np.asarray(flat[f'{layer}/kernel'])
    line = (f'  {layer}: +1 fraction {np.mean(kernel >= 0):.3f}, '
            f'mean |w| {np.mean(np.abs(kernel)):.4f}')
    if f'{layer}/modulation' in flat:
      m = np.asarray(flat[f'{layer}/modulation'])
      line += (f', modulation min/mean/max {m.min():.4f}/{m.mean():.4f}/'
               f'{m.max():.4f}: {np.array2string(m[:8], precision=4)}'
               + (' ...' if m.size > 8 else ''))
      ratio = m / np.asarray(quantizers.xnor_weight_scale(kernel)).reshape(-1)
      line += (f'; modulation / XNOR mean |w| per channel: median '
               f'{np.median(ratio):.3f}, min {ratio.min():.3f}, '
               f'max {ratio.max():.3f}, negative in {np.sum(m < 0)} of '
               f'{m.size} channels')
    lines.append(line)
  return '\n'.join(lines)


@errors.exit_on_user_error
def main(argv) -> int:
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  print(describe(argv[1]))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
