"""The report: table numbers equal the runs' files, figures are written."""

import csv
import os
import shutil

import numpy as np
import pytest

from bonnkd import errors
from bonnkd import export
from bonnkd.tools import report
from tests.conftest import read_json


def test_confusion_matrix_rows_sum_to_class_counts():
  labels = np.array([0, 0, 1, 2, 2, 2, 9])
  predictions = np.array([0, 1, 1, 2, 0, 2, 9])
  cm = report.confusion_matrix(labels, predictions)
  np.testing.assert_array_equal(cm.sum(1), np.bincount(labels, minlength=10))
  assert cm[0, 1] == 1 and cm[2, 0] == 1 and np.trace(cm) == 5


def test_epoch_curves_average_train_records_per_epoch():
  records = [
      {'split': 'train', 'epoch': 0.5, 'loss': 2.0, 'accuracy': 0.2},
      {'split': 'train', 'epoch': 1.0, 'loss': 1.0, 'accuracy': 0.4},
      {'split': 'val', 'epoch': 1.0, 'loss': 1.5, 'accuracy': 0.3},
      {'split': 'train', 'epoch': 2.0, 'loss': 0.5, 'accuracy': 0.6},
  ]
  curves = report.epoch_curves(records)
  epochs, losses, accuracies = curves['train']
  assert epochs == [1, 2]
  np.testing.assert_allclose(losses, [1.5, 0.5])
  np.testing.assert_allclose(accuracies, [0.3, 0.6])
  assert curves['val'] == ([1.0], [1.5], [0.3])


def test_report_of_a_run(finished_run, tmp_path):
  _, workdir, _ = finished_run
  out = tmp_path / 'report'
  rows = report.write_report([workdir], str(out))
  final = read_json(os.path.join(workdir, 'final.json'))
  name = os.path.basename(workdir)
  assert rows[0]['test_accuracy'] == final['test_accuracy']
  assert rows[0]['val_accuracy'] == final['val_accuracy']
  assert rows[0]['params'] == final['num_params']
  # The smoke WRN-10-1's only 1-bit layer is the stem: 3*3*3*16 weights.
  assert rows[0]['binary_share'] == 432 / final['num_params']
  # Of the conv weights: WRN-10-1's stem 432, 3x3 convs 9*8,192 = 73,728
  # and shortcuts 16*32 + 32*64 = 2,560 (test_summary derives them).
  assert rows[0]['binary_conv_share'] == 432 / (432 + 73_728 + 2_560)
  # The exported file's real size: the packed stem, the rest float32.
  exported = tmp_path / 'exported.npz'
  export.main([workdir, '--out', str(exported)])
  assert rows[0]['exported_bytes'] == exported.stat().st_size
  assert f'{exported.stat().st_size / 1024:,.1f}' in (
      out / 'comparison.md').read_text()
  with open(out / 'comparison.csv') as f:
    table = list(csv.DictReader(f))
  assert float(table[0]['test_accuracy']) == final['test_accuracy']
  assert f'{100 * final["test_accuracy"]:.2f}' in (
      out / 'comparison.md').read_text()
  with open(out / f'{name}_per_class.csv') as f:
    per_class = list(csv.DictReader(f))
  # 200 synthetic test images, 20 per class; correct counts give test acc.
  assert [int(r['examples']) for r in per_class] == [20] * 10
  assert sum(int(r['correct']) for r in per_class) / 200 == final[
      'test_accuracy']
  for suffix in ('curves.png', 'confusion.png'):
    path = out / f'{name}_{suffix}'
    assert path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_report_of_a_run_without_its_checkpoints(finished_run, tmp_path,
                                                 capsys):
  # A run committed under results/ keeps config, metrics and final.json.
  _, workdir, _ = finished_run
  kept = tmp_path / 'kept_run'
  kept.mkdir()
  for name in ('config.json', 'metrics.jsonl', 'final.json'):
    shutil.copy(os.path.join(workdir, name), kept / name)
  out = tmp_path / 'report'
  rows = report.write_report([str(kept)], str(out))
  assert rows[0]['test_accuracy'] == read_json(
      os.path.join(workdir, 'final.json'))['test_accuracy']
  assert (out / 'kept_run_curves.png').exists()
  assert not (out / 'kept_run_confusion.png').exists()
  assert rows[0]['exported_bytes'] is None
  assert 'kept_run: no checkpoint' in capsys.readouterr().out
  assert 'not exported' in (out / 'comparison.md').read_text()
  # Its model.npz, exported before the checkpoints were left behind, gives
  # the exported size.
  export.main([workdir, '--out', str(kept / 'model.npz')])
  rows = report.write_report([str(kept)], str(out))
  assert rows[0]['exported_bytes'] == (kept / 'model.npz').stat().st_size


def test_runs_are_named_by_the_fewest_last_parts_that_tell_them_apart(
    finished_run, tmp_path):
  assert report.run_names(['a/v1/plain_s0', 'a/bonn/plain_s0/', 'b/kd_s0',
                           'c/kernel_s1']) == [
                               'v1/plain_s0', 'bonn/plain_s0', 'kd_s0',
                               'kernel_s1']
  assert report.run_names(['x/a/r', 'y/a/r', 'y/b/r']) == [
      'x/a/r', 'y/a/r', 'b/r']
  with pytest.raises(errors.UserError, match='given twice'):
    report.run_names(['a/r', 'a/./r'])
  # Two runs of one name in a report: figures of each, one row each.
  _, workdir, _ = finished_run
  for parent in ('v1', 'v2'):
    copy = tmp_path / parent / 'run'
    copy.mkdir(parents=True)
    for name in ('config.json', 'metrics.jsonl', 'final.json'):
      shutil.copy(os.path.join(workdir, name), copy / name)
  out = tmp_path / 'report'
  rows = report.write_report([str(tmp_path / 'v1' / 'run'),
                              str(tmp_path / 'v2' / 'run')], str(out))
  assert [r['run'] for r in rows] == ['v1/run', 'v2/run']
  assert (out / 'v1_run_curves.png').exists()
  assert (out / 'v2_run_curves.png').exists()
