"""Phase 2 end to end on smoke presets: teacher run, then distilled student."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from bonnkd import train
from bonnkd.run import checkpoints
from bonnkd.training import teacher as teacher_lib
from tests.conftest import read_json
from tests.conftest import read_metrics
from tests.conftest import tiny_config


@pytest.fixture(scope='module')
def teacher_dir(cifar_tarball, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher'))
  train.train_and_evaluate(
      tiny_config(cifar_tarball[0], 'teacher_resnet18', num_epochs=3.0),
      workdir)
  return workdir


def student_config(data, teacher_workdir, **overrides):
  return tiny_config(data, 'phase2_kd_student', num_epochs=3.0,
                     **{'kd.teacher_workdir': teacher_workdir, **overrides})


def test_student_distils_from_frozen_teacher(teacher_dir, cifar_tarball,
                                             tmp_path):
  before = teacher_lib.load_teacher(teacher_dir)
  workdir = str(tmp_path)
  train.train_and_evaluate(student_config(cifar_tarball[0], teacher_dir),
                           workdir)
  after = teacher_lib.load_teacher(teacher_dir)
  assert after.step == before.step
  for a, b in zip(jax.tree.leaves(before.variables),
                  jax.tree.leaves(after.variables)):
    np.testing.assert_array_equal(a, b)

  records = read_metrics(workdir)
  train_records = [r for r in records if r['split'] == 'train']
  assert train_records[-1]['kd_loss'] < train_records[0]['kd_loss']
  assert train_records[-1]['loss'] < train_records[0]['loss']
  for r in [r for r in records if r['split'] == 'val'] + train_records:
    assert 0.0 <= r['agreement'] <= 1.0
    assert r['kl'] >= 0.0
  final = read_json(os.path.join(workdir, 'final.json'))
  assert 0.0 <= final['test_agreement'] <= 1.0
  assert final['distilled'] is True


def test_alpha_one_equals_training_on_smoothed_labels_alone(teacher_dir, cifar_tarball,
                                                   tmp_path):
  # L_KD with alpha = 1 is the cross-entropy: same student, same batches.
  # With label smoothing on both, which KD applies to its CE term (were it
  # ignored with KD, the parameters would differ).
  smoothing = {'optim.label_smoothing': 0.2}
  kd = train.train_and_evaluate(
      student_config(cifar_tarball[0], teacher_dir,
                     **{'kd.alpha': 1.0, **smoothing}),
      str(tmp_path / 'kd'))
  alone = train.train_and_evaluate(
      student_config(cifar_tarball[0], teacher_dir,
                     **{'kd.enabled': False, **smoothing}),
      str(tmp_path / 'alone'))
  for a, b in zip(jax.tree.leaves(kd.params),
                  jax.tree.leaves(alone.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_missing_teacher_dir_fails_before_training(cifar_tarball, tmp_path):
  config = student_config(cifar_tarball[0], str(tmp_path / 'nope'))
  with pytest.raises(FileNotFoundError,
                     match='config.kd.teacher_workdir=.*does not exist'):
    train.train_and_evaluate(config, str(tmp_path / 'student'))
  assert not os.path.exists(tmp_path / 'student')


def test_teacher_dir_without_checkpoint(teacher_dir, cifar_tarball, tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  shutil.copy(os.path.join(teacher_dir, 'config.json'), empty)
  with pytest.raises(checkpoints.NoCheckpointError, match='checkpoints'):
    train.train_and_evaluate(student_config(cifar_tarball[0], str(empty)),
                             str(tmp_path / 'student'))
  assert not os.path.exists(tmp_path / 'student')


def test_checkpoint_that_does_not_fit_the_model(teacher_dir, cifar_tarball,
                                                tmp_path):
  wrong = tmp_path / 'wrong'
  shutil.copytree(teacher_dir, wrong)
  config = read_json(wrong / 'config.json')
  config['model']['widths'] = [8, 32]  # The checkpoint has 8-16.
  with open(wrong / 'config.json', 'w') as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match='does not fit.*wrong shape'):
    train.train_and_evaluate(student_config(cifar_tarball[0], str(wrong)),
                             str(tmp_path / 'student'))
