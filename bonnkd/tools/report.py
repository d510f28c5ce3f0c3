"""Figures and the comparison table of finished runs.

  python -m bonnkd.tools.report runs/p1 runs/kd runs/alone --out results/report

For each run (a directory written by ``train_and_evaluate``), named by the
last part of its path, or the last parts where two runs share a last part
(``v1/plain_s0`` and ``bonn/plain_s0``; ``/`` is ``_`` in file names):

* ``<run>_curves.png`` -- loss and accuracy per epoch: train (the mean of
  the epoch's train records), val, and test where it was measured;
* ``<run>_confusion.png`` -- the row-normalised confusion matrix of the best
  checkpoint on the test split, and ``<run>_per_class.csv`` its per-class
  accuracy (for a run whose checkpoints were not kept, e.g. the ones
  committed under ``results/``, curves and table only);

and for all runs together ``comparison.md`` / ``comparison.csv``: run,
phase, model, test and val accuracy (from ``final.json``), parameters, share
of 1-bit parameters and of 1-bit conv weights, size as float32 and with
1-bit weights (counted), the size of the best checkpoint's exported file
(:mod:`bonnkd.export`, 1-bit kernels packed: exported from the checkpoint,
or the run's committed ``model.npz`` for a run kept without checkpoints),
FLOPs, BOPs and OPs = FLOPs + BOPs/64 per image (:mod:`bonnkd.tools.summary`).

The test split is read from the run's own ``config.data``; ``--data_source``
and ``--data_dir`` point elsewhere (another machine's copy).
"""

import argparse
import collections
import csv
import os

import jax
import matplotlib
import numpy as np

from bonnkd import errors
from bonnkd import export
from bonnkd import models
from bonnkd.data import input_pipeline
from bonnkd.run import run_dir as run_dir_lib
from bonnkd.tools import summary
from bonnkd.tools import tables
from bonnkd.training import evaluation
from bonnkd.training import sharding
from bonnkd.training import train_state

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ['load_run', 'run_names', 'epoch_curves', 'confusion_matrix',
           'comparison_rows', 'write_report']

TABLE_COLUMNS = ('run', 'phase', 'model', 'test_accuracy', 'val_accuracy',
                 'params', 'binary_share', 'binary_conv_share',
                 'size_float32_bits', 'size_1bit_bits', 'exported_bytes',
                 'flops', 'bops', 'ops')


def load_run(path: str):
  """(config, final, metrics records) of a finished run.

  Raises:
    errors.NotARunError: not a run directory, or not finished.
  """
  run = run_dir_lib.RunDir.open(path)
  return run.config, run.finished_final(), run.metrics()


def epoch_curves(records):
  """{split: (epochs, losses, accuracies)}; train is averaged per epoch."""
  curves = {}
  train = collections.defaultdict(list)
  for r in records:
    if r['split'] == 'train':
      train[int(np.ceil(r['epoch'] - 1e-9))].append(r)
  if train:
    epochs = sorted(train)
    curves['train'] = (epochs,
                       [np.mean([r['loss'] for r in train[e]]) for e in epochs],
                       [np.mean([r['accuracy'] for r in train[e]])
                        for e in epochs])
  for split in ('val', 'test'):
    rows = [r for r in records if r['split'] == split]
    if rows:
      curves[split] = ([r['epoch'] for r in rows], [r['loss'] for r in rows],
                       [r['accuracy'] for r in rows])
  return curves


def confusion_matrix(labels, predictions, num_classes: int = 10):
  """Counts ``cm[true, predicted]``; row sums are the per-class counts."""
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, predictions), 1)
  return cm


def split_predictions(config, variables, split, batch_size: int = 500):
  """Predictions of a model (eval mode) on every example of ``split``.

  The same :mod:`bonnkd.training.evaluation` that training uses, on all
  devices here.
  """
  mesh = sharding.DataParallelMesh()
  batch_size -= batch_size % mesh.size
  model = models.create_model(config.model, dtype=config.dtype)
  eval_fn = evaluation.make_eval_fn(model, mesh)
  variables = jax.device_put(variables, mesh.replicated)
  _, predictions = evaluation.evaluate(eval_fn, variables, split, batch_size,
                                       mesh)
  return predictions


def run_names(run_dirs) -> list[str]:
  """Each run's name: the fewest last parts of its path that no other has.

  Raises:
    errors.UserError: a run is given twice.
  """
  parts = [os.path.normpath(os.path.abspath(d)).split(os.sep)
           for d in run_dirs]
  duplicates = [d for d, n in collections.Counter(map(tuple, parts)).items()
                if n > 1]
  if duplicates:
    raise errors.UserError(
        f'The run {os.sep.join(duplicates[0])!r} is given twice.')
  names = []
  for p in parts:
    depth = 1
    while sum(q[-depth:] == p[-depth:] for q in parts) > 1:
      depth += 1
    names.append('/'.join(p[-depth:]))
  return names


def comparison_rows(run_dirs):
  rows = []
  for run_dir, name in zip(run_dirs, run_names(run_dirs)):
    config, final, _ = load_run(run_dir)
    cost = summary.totals(summary.layer_costs(
        models.create_model(config.model)))
    model = config.model.name
    if model == 'wide_resnet':
      model = f'WRN-{config.model.depth}-{config.model.width}'
    else:
      model = f'ResNet {list(config.model.stage_sizes)}x{list(config.model.widths)}'
    if config.model.binarize != 'none':
      model += f' ({config.model.binarize}, {config.model.binarize_what})'
    if config.kd.enabled:
      model += ' + KD'
    rows.append({
        'run': name,
        'phase': config.phase,
        'model': model,
        'test_accuracy': final.get('test_accuracy'),
        'val_accuracy': final['val_accuracy'],
        'params': cost['params'],
        'binary_share': cost['binary_share'],
        'binary_conv_share': cost['binary_conv_share'],
        'size_float32_bits': cost['bits_float32'],
        'size_1bit_bits': cost['bits_1bit'],
        'exported_bytes': exported_bytes(run_dir),
        'flops': cost['flops'],
        'bops': cost['bops'],
        'ops': cost['ops'],
    })
  return rows


def exported_bytes(run_dir: str) -> int | None:
  """The size of the run's best checkpoint as ``bonnkd.export`` writes it.

  Exported from the checkpoint; for a run kept without its checkpoints,
  the size of its ``model.npz``; None where it has neither.
  """
  run = run_dir_lib.RunDir.open(run_dir)
  if run.has_checkpoints():
    return export.nbytes(export.program_of_run(run_dir, 'best'))
  exported = run.exported_model()
  return os.path.getsize(exported) if exported else None


def _percent(value) -> str:
  return 'not evaluated' if value is None else f'{100 * value:.2f}'


def _markdown(rows) -> str:
  return tables.markdown(
      ('run', 'phase', 'model', 'test acc %', 'val acc %', 'params',
       '1-bit share', '1-bit conv weights', 'size float32 (KiB)',
       'size 1-bit (KiB)', 'exported file (KiB)', 'FLOPs', 'BOPs', 'OPs'),
      [(r['run'], r['phase'], r['model'], _percent(r['test_accuracy']),
        _percent(r['val_accuracy']), f'{r["params"]:,}',
        f'{100 * r["binary_share"]:.1f}%',
        f'{100 * r["binary_conv_share"]:.1f}%',
        f'{r["size_float32_bits"] / 8 / 1024:,.1f}',
        f'{r["size_1bit_bits"] / 8 / 1024:,.1f}',
        'not exported' if r['exported_bytes'] is None
        else f'{r["exported_bytes"] / 1024:,.1f}', f'{r["flops"]:,}',
        f'{r["bops"]:,}', f'{r["ops"]:,.0f}') for r in rows])


def _plot_curves(curves, title, path):
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
  for split, (epochs, loss, acc) in curves.items():
    style = 'o' if split == 'test' else '-'
    ax_loss.plot(epochs, loss, style, label=split)
    ax_acc.plot(epochs, acc, style, label=split)
  for ax, name in ((ax_loss, 'loss (cross-entropy)'), (ax_acc, 'accuracy')):
    ax.set_xlabel('epoch')
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _plot_confusion(cm, title, path):
  normalised = cm / np.maximum(cm.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(7, 6))
  image = ax.imshow(normalised, cmap='Blues', vmin=0, vmax=1)
  names = input_pipeline.CLASS_NAMES
  ax.set_xticks(range(10), names, rotation=45, ha='right')
  ax.set_yticks(range(10), names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  for i in range(10):
    for j in range(10):
      ax.text(j, i, f'{normalised[i, j]:.2f}', ha='center', va='center',
              fontsize=7, color='white' if normalised[i, j] > 0.5 else 'black')
  fig.colorbar(image)
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(run_dirs, out_dir, data_source=None, data_dir=None):
  """Writes every figure and table; returns the comparison rows."""
  os.makedirs(out_dir, exist_ok=True)
  for run_dir, name in zip(run_dirs, run_names(run_dirs)):
    config, final, records = load_run(run_dir)
    stem = os.path.join(out_dir, name.replace('/', '_'))
    if 'test_accuracy' not in final:
      # A model-selection run (eval_test=False): its test split stays unread.
      _plot_curves(epoch_curves(records),
                   f'{name}: val {100 * final["val_accuracy"]:.2f}%',
                   f'{stem}_curves.png')
      continue
    _plot_curves(epoch_curves(records),
                 f'{name}: test {100 * final["test_accuracy"]:.2f}%',
                 f'{stem}_curves.png')
    if not run_dir_lib.RunDir.open(run_dir).has_checkpoints():
      # A run committed without its checkpoints (results/): its numbers and
      # curves are all there is; the confusion matrix needs the weights.
      print(f'{name}: no checkpoint, so no confusion matrix (curves and '
            'table only).')
      continue
    data_config = config.data.copy_and_resolve_references()
    if data_source:
      data_config.source = data_source
    if data_dir:
      data_config.dir = data_dir
    test = input_pipeline.load_splits(data_config)['test']
    _, variables = train_state.restore_variables(run_dir, 'best')
    cm = confusion_matrix(test.labels,
                          split_predictions(config, variables, test))
    _plot_confusion(cm, f'{name}: test confusion (row-normalised)',
                    f'{stem}_confusion.png')
    with open(f'{stem}_per_class.csv', 'w', newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['class', 'examples', 'correct', 'accuracy'])
      for c, class_name in enumerate(input_pipeline.CLASS_NAMES):
        total = int(cm[c].sum())
        writer.writerow([class_name, total, int(cm[c, c]),
                         f'{cm[c, c] / max(total, 1):.4f}'])
  rows = comparison_rows(run_dirs)
  with open(os.path.join(out_dir, 'comparison.md'), 'w') as f:
    f.write(_markdown(rows))
  with open(os.path.join(out_dir, 'comparison.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  return rows


@errors.exit_on_user_error
def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('runs', nargs='+', help='run directories')
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--data_source', default=None)
  parser.add_argument('--data_dir', default=None)
  args = parser.parse_args()
  rows = write_report(args.runs, args.out, args.data_source, args.data_dir)
  print(_markdown(rows))


if __name__ == '__main__':
  main()
