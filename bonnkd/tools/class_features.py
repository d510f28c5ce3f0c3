"""The class statistics of a run's features: what BONN's feature loss sees.

  python -m bonnkd.tools.class_features runs/bonn/plain_s0 \\
      --data_source folder --data_dir ../shared/data/cifar10-jpeg \\
      [--split val] [--limit 2000]

Applies the run's best checkpoint in eval mode to a split and takes the
features before the classifier (the model's ``intermediates/features``, the
``f`` of :func:`bonnkd.binary.bayesian_losses.feature_loss`). Prints each
feature dimension's variance and kurtosis over the whole split, how many
dimensions are constant, and each dimension's variance within each class
(the ``sigma^2`` the feature loss divides by, which
``config.bonn.min_variance`` floors): their minimum, 10th percentile,
median, mean and maximum, and how many fall below a floor.
"""

import argparse
from collections.abc import Sequence
import sys

import jax
import numpy as np

from bonnkd import errors
from bonnkd import models
from bonnkd.data import augment
from bonnkd.data import input_pipeline
from bonnkd.run import run_dir
from bonnkd.training import train_state

__all__ = ['class_variances', 'kurtosis', 'features_of', 'describe']


def class_variances(features: np.ndarray, labels: np.ndarray,
                    num_classes: int) -> np.ndarray:
  """(K, D): each class's variance of each feature dimension (NaN if absent).

  The population variance (divided by the class's count), as
  :func:`bonnkd.binary.bayesian_losses.update_class_statistics` takes a
  batch's spread.
  """
  out = np.full((num_classes, features.shape[1]), np.nan, np.float64)
  for k in range(num_classes):
    members = features[labels == k]
    if len(members):
      out[k] = members.astype(np.float64).var(0)
  return out


def features_of(run: run_dir.RunDir, split: input_pipeline.Split,
                batch_size: int = 500) -> np.ndarray:
  """(N, D) features of ``split`` under the run's best checkpoint, eval mode."""
  config = run.config
  model = models.create_model(config.model, dtype=config.dtype)
  _, variables = train_state.restore_variables(run, 'best')

  @jax.jit
  def features(images):
    _, state = model.apply(variables, augment.normalize(images), train=False,
                           mutable=['intermediates'])
    return state['intermediates']['features'][0]

  return np.concatenate([
      np.asarray(features(split.images[i:i + batch_size]))
      for i in range(0, len(split), batch_size)])


def kurtosis(features: np.ndarray) -> np.ndarray:
  """(D,): each dimension's kurtosis over the split, E[(f - mu)^4] / var^2.

  3 for a Gaussian; large where a few examples carry a dimension (a
  feature the network has silenced but for outliers). NaN where the
  dimension is constant.
  """
  centred = features.astype(np.float64) - features.mean(0, dtype=np.float64)
  var = (centred ** 2).mean(0)
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(var > 0, (centred ** 4).mean(0) / var ** 2, np.nan)


def _summary(name: str, values: np.ndarray) -> str:
  v = values[np.isfinite(values)]
  if not v.size:
    return f'{name}: none'
  return (f'{name}: min {v.min():.4g}, p10 {np.percentile(v, 10):.4g}, '
          f'median {np.median(v):.4g}, mean {v.mean():.4g}, '
          f'max {v.max():.4g} '
          f'({v.size} values)')


def describe(features: np.ndarray, labels: np.ndarray, num_classes: int,
             floors: Sequence[float]) -> str:
  """The report: variances and kurtosis over the split, the constant
  dimensions, the variances within classes, and how many of those fall
  below each of ``floors``."""
  within = class_variances(features, labels, num_classes)
  over_split = features.astype(np.float64).var(0)
  lines = [_summary('variance over the split, per dimension', over_split),
           f'constant dimensions: {np.sum(over_split == 0)} of '
           f'{over_split.size}',
           _summary('kurtosis over the split, per non-constant dimension '
                    '(3 for a Gaussian)', kurtosis(features)),
           _summary('variance within a class, per (class, dimension)',
                    within)]
  finite = within[np.isfinite(within)]
  for floor in floors:
    lines.append(f'within-class variances below {floor:g}: '
                 f'{np.sum(finite < floor)} of {finite.size}')
  return '\n'.join(lines)


def _args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m bonnkd.tools.class_features',
      description=__doc__.split('\n')[0])
  parser.add_argument('run', help='a run directory with checkpoints')
  parser.add_argument('--data_source', choices=input_pipeline.SOURCES,
                      help="default: the run's config.data.source")
  parser.add_argument('--data_dir', help="default: the run's config.data.dir")
  parser.add_argument('--split', choices=('val', 'test'), default='val')
  parser.add_argument('--limit', type=int, default=-1,
                      help='a random subset of this many examples')
  parser.add_argument('--floors', default='1e-4,1e-2,1e-1',
                      help='comma-separated floors to count variances under')
  args = parser.parse_args(argv)
  try:
    args.floors = [float(f) for f in args.floors.split(',')]
  except ValueError:
    parser.error(f'--floors must be comma-separated numbers, got '
                 f'{args.floors!r}')
  return args


@errors.exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
  args = _args(argv)
  run = run_dir.RunDir.open(args.run)
  split = input_pipeline.load_split(run.config.data, args.split,
                                    args.data_source, args.data_dir,
                                    args.limit)
  features = features_of(run, split)
  print(f'{run.path}, best checkpoint, {args.split} '
        f'({len(split):,} examples), {features.shape[1]} features:')
  print(describe(features, split.labels, len(input_pipeline.CLASS_NAMES),
                 args.floors))
  return 0


if __name__ == '__main__':
  sys.exit(main())
