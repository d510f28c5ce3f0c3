"""Nothing silent: damaged checkpoints, damaged data, finished runs, full disks.

Each fault is built here on a tiny run or dataset; each test asserts the
outcome (a correct recovery, or one clear message and exit 1), and that no
file that was sound before has changed or gone. results/README.md has the
table of these faults and what each gives.
"""

import errno
import glob
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from bonnkd import errors
from bonnkd import fileio
from bonnkd import train
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.data import input_pipeline
from bonnkd.run import checkpoints
from bonnkd.run import metrics_log
from bonnkd.run import run_dir
from bonnkd.tools import report
from tests import topology_worker
from tests.conftest import ROOT
from tests.conftest import data_config
from tests.conftest import read_json
from tests.conftest import read_metrics
from tests.conftest import start_launch
from tests.conftest import synthetic_cifar
from tests.conftest import tiny_config
from tests.conftest import write_cifar_tarball
from tests.conftest import write_image_folder


def file_digests(root) -> dict[str, str]:
  """{path relative to root: sha256} of every file under root."""
  digests = {}
  for path in glob.glob(os.path.join(root, '**'), recursive=True):
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        digests[os.path.relpath(path, root)] = hashlib.sha256(
            f.read()).hexdigest()
  return digests


def data_file(workdir, step) -> str:
  """The largest array-data file of a checkpoint step."""
  found = [p for p in glob.glob(
      os.path.join(workdir, 'checkpoints', str(step), 'state', '**', 'd',
                   '*'), recursive=True) if os.path.isfile(p)]
  return max(found, key=os.path.getsize)


def damage(workdir, step, how) -> str:
  """Damages checkpoint ``step``; returns what the error must say."""
  if how == 'metadata':
    os.remove(os.path.join(workdir, 'checkpoints', str(step), 'state',
                           '_METADATA'))
    return 'state/_METADATA is missing'
  path = data_file(workdir, step)
  size = os.path.getsize(path)
  if how == 'overwrite':  # 64 bytes in the middle, same size.
    with open(path, 'r+b') as f:
      f.seek(size // 2)
      f.write(bytes(64))
    return 'differs from what was saved'
  if how == 'truncate':
    with open(path, 'r+b') as f:
      f.truncate(size // 2)
    return f'has {size // 2} bytes, {size} were saved'
  if how == 'delete':
    os.remove(path)
    return 'is missing'
  raise ValueError(how)


def launch(workdir, data, *extra):
  """launch.py with the flags that give tiny_config(data, num_epochs=3)."""
  proc = start_launch(workdir, data, '--config.data.eval_limit=-1',
                      '--config.num_epochs=3', '--config.tensorboard=False',
                      *extra)
  out, _ = proc.communicate(timeout=600)
  return proc.returncode, out


def one_error_line(out: str) -> str:
  assert 'Traceback' not in out, out[-3000:]
  lines = [l for l in out.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, out[-3000:]
  return lines[0]


@pytest.fixture(scope='module')
def interrupted_run(cifar_tarball, tmp_path_factory):
  """3-epoch smoke run stopped at step 35: checkpoints at 15 and 30."""
  workdir = str(tmp_path_factory.mktemp('interrupted'))
  topology_worker.interrupt(tiny_config(cifar_tarball[0], num_epochs=3.0),
                            workdir, at_step=35)
  assert sorted(ocp.CheckpointManager(
      os.path.join(workdir, 'checkpoints')).all_steps()) == [15, 30]
  return workdir


@pytest.fixture
def interrupted(interrupted_run, tmp_path):
  return str(shutil.copytree(interrupted_run, tmp_path / 'run'))


@pytest.fixture
def finished(finished_run, tmp_path):
  return str(shutil.copytree(finished_run[1], tmp_path / 'finished'))


@pytest.mark.parametrize('how', ['overwrite', 'truncate', 'delete',
                                 'metadata'])
def test_damaged_latest_checkpoint_resumes_from_the_sound_one(
    interrupted, cifar_tarball, caplog, how):
  expected = damage(interrupted, 30, how)
  sound = file_digests(os.path.join(interrupted, 'checkpoints', '15'))
  before = [r for r in read_metrics(interrupted) if r['step'] <= 15]

  train.train_and_evaluate(tiny_config(cifar_tarball[0], num_epochs=3.0),
                           interrupted)

  warnings = caplog.text
  assert 'The checkpoint at step 30' in warnings and expected in warnings
  assert read_json(os.path.join(interrupted, 'final.json'))['step'] == 45
  # The damaged step is kept aside, its bytes as they were; step 15 unchanged.
  aside = glob.glob(os.path.join(interrupted, 'damaged_checkpoints', '30-*'))
  assert len(aside) == 1
  assert read_metrics(interrupted)[:len(before)] == before
  if os.path.isdir(os.path.join(interrupted, 'checkpoints', '15')):
    assert file_digests(os.path.join(interrupted, 'checkpoints',
                                     '15')) == sound


def test_no_sound_checkpoint_is_one_clear_error(interrupted, cifar_tarball):
  damage(interrupted, 30, 'overwrite')
  damage(interrupted, 15, 'truncate')
  everything = sorted(file_digests(interrupted).values())
  code, out = launch(interrupted, cifar_tarball[0])
  assert code == 1
  line = one_error_line(out)
  assert 'No sound checkpoint to resume from' in line
  assert 'step 30' in line and 'step 15' in line
  # Moved aside, not deleted: every byte written before is still there.
  assert sorted(file_digests(interrupted).values()) == everything


def test_damaged_best_checkpoint_is_refused_by_every_reader(
    finished, cifar_tarball, tmp_path):
  best = read_json(os.path.join(finished, 'final.json'))['best_step']
  assert best == 45  # The synthetic task improves every epoch.
  expected = damage(finished, best, 'overwrite')
  before = file_digests(finished)
  result = subprocess.run(
      [sys.executable, '-m', 'bonnkd.tools.inspect', finished], cwd=ROOT,
      capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 1
  line = one_error_line(result.stderr)
  assert f'step {best}' in line and expected in line
  with pytest.raises(checkpoints.CheckpointDamagedError, match=expected):
    report.write_report([finished], str(tmp_path / 'report'))
  student = tiny_config(cifar_tarball[0], 'phase2_kd_student', num_epochs=1.0,
                        **{'kd.teacher_workdir': finished})
  with pytest.raises(checkpoints.CheckpointDamagedError,
                     match=f'kd.teacher_workdir.*step {best}'):
    train.train_and_evaluate(student, str(tmp_path / 'student'))
  assert file_digests(finished) == before
  # Its own command again: final.json stands, a warning, nothing changed.
  code, out = launch(finished, cifar_tarball[0])
  assert code == 0, out[-3000:]
  assert 'is a finished run' in out and expected in out
  assert file_digests(finished) == before

  # Evaluating the run itself again: its best is its latest (step 45), so it
  # resumes from the sound step 30 and replays 31..45 exactly.
  final = read_json(os.path.join(finished, 'final.json'))
  sound = file_digests(os.path.join(finished, 'checkpoints', '30'))
  forced = tiny_config(cifar_tarball[0], num_epochs=3.0, force_final_eval=True)
  train.train_and_evaluate(forced, finished)
  again = read_json(os.path.join(finished, 'final.json'))
  assert (again['best_step'], again['test_accuracy']) == (
      best, final['test_accuracy'])
  assert glob.glob(os.path.join(finished, 'damaged_checkpoints', f'{best}-*'))
  assert file_digests(os.path.join(finished, 'checkpoints', '30')) == sound


def test_best_checkpoint_that_restores_but_is_not_what_was_evaluated(
    finished, cifar_tarball, monkeypatch):
  # A checkpoint whose digest matches but whose weights were not those
  # evaluated (here: its logged val accuracy is altered instead).
  path = os.path.join(finished, 'metrics.jsonl')
  best = read_json(os.path.join(finished, 'final.json'))['best_step']
  records = read_metrics(finished)
  for r in records:
    if r['step'] == best and r['split'] == 'val':
      r['accuracy'] -= 0.2
  with open(path, 'w') as f:
    f.writelines(f'{metrics_log.json.dumps(r)}\n' for r in records)
  final_before = file_digests(finished)['final.json']
  forced = tiny_config(cifar_tarball[0], num_epochs=3.0, force_final_eval=True)
  with pytest.raises(checkpoints.CheckpointDamagedError,
                     match=f'step {best}.*was logged when it was saved'):
    train.train_and_evaluate(forced, finished)
  assert file_digests(finished)['final.json'] == final_before


def test_finished_run_is_reported_not_redone(finished, cifar_tarball):
  before = file_digests(finished)
  mtime = os.path.getmtime(os.path.join(finished, 'final.json'))
  code, out = launch(finished, cifar_tarball[0])
  assert code == 0, out[-3000:]
  assert 'is a finished run' in out
  assert file_digests(finished) == before
  assert os.path.getmtime(os.path.join(finished, 'final.json')) == mtime

  final = read_json(os.path.join(finished, 'final.json'))
  code, out = launch(finished, cifar_tarball[0],
                     '--config.force_final_eval=True')
  assert code == 0, out[-3000:]
  again = read_json(os.path.join(finished, 'final.json'))
  assert again['test_accuracy'] == final['test_accuracy']
  assert again['best_step'] == final['best_step']


def test_workdir_of_another_config_is_refused(finished, cifar_tarball):
  before = file_digests(finished)
  code, out = launch(finished, cifar_tarball[0], '--config.optim.lr=0.2')
  assert code == 1
  line = one_error_line(out)
  assert 'holds a run of another config' in line
  assert 'optim.lr: 0.05 there, 0.2 here' in line
  assert file_digests(finished) == before


def test_a_run_older_than_a_config_key_continues_under_its_old_value(
    tmp_path):
  # A ResNet run from before dtype, eval_test, bonn.* and the ResNet's
  # binarization fields existed: its config.json lacks them.
  config = files.load(
      os.path.join(ROOT, 'configs', 'phase2_kd_student.py:smoke'))
  old = config.to_dict()
  for key in ('binarize', 'binarize_what', 'quantizer', 'weight_scale'):
    del old['model'][key]
  for key in ('dtype', 'eval_test', 'bonn'):
    del old[key]
  fileio.write_json(str(tmp_path / 'config.json'), old)
  run = run_dir.RunDir(str(tmp_path))
  run.check_same_run(config)
  for change, message in [
      ('bonn.kernel_weight=0.0001', 'bonn.kernel_weight: 0.0 there, 0.0001'),
      ('bonn.kernel_loss_trains_modulation=False',
       'bonn.kernel_loss_trains_modulation: True there, False here'),
      ('model.binarize=inner', "model.binarize: 'none' there, 'inner'")]:
    with pytest.raises(errors.ConfigError, match=message):
      run.check_same_run(overrides.override(config, [change]))


def test_kill_9_while_saving_resumes_from_a_sound_checkpoint(
    cifar_tarball, tmp_path, caplog):
  workdir = tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  result = subprocess.run(
      [sys.executable, '-m', 'tests.topology_worker', 'kill_while_saving',
       cifar_tarball[0], str(workdir)], env=env, cwd=ROOT,
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == -9, result.stderr[-3000:]
  # Orbax committed step 30; its digest was never written.
  assert os.path.isdir(workdir / 'checkpoints' / '30')
  assert not os.path.exists(workdir / 'checkpoints' / '30' /
                            checkpoints.DIGEST_FILE)
  train.train_and_evaluate(tiny_config(cifar_tarball[0], num_epochs=3.0),
                           str(workdir))
  assert 'step 30' in caplog.text and 'not completely written' in caplog.text
  assert read_json(workdir / 'final.json')['step'] == 45


def test_full_disk_on_metrics_write(interrupted, cifar_tarball, monkeypatch):
  saved = file_digests(os.path.join(interrupted, 'checkpoints'))

  def full_disk_open(path, mode='r', *args, **kwargs):
    if mode == 'a':
      raise OSError(errno.ENOSPC, 'No space left on device', path)
    return open(path, mode, *args, **kwargs)

  metrics_before = None
  real_init = metrics_log.MetricsLog.__init__

  def init_then_fill_disk(self, *args, **kwargs):
    nonlocal metrics_before
    real_init(self, *args, **kwargs)
    metrics_before = file_digests(interrupted)['metrics.jsonl']
    monkeypatch.setattr(metrics_log, 'open', full_disk_open, raising=False)

  monkeypatch.setattr(metrics_log.MetricsLog, '__init__',
                      init_then_fill_disk)
  with pytest.raises(errors.StorageError,
                     match='metrics.jsonl.*No space left.*kept'):
    train.train_and_evaluate(tiny_config(cifar_tarball[0], num_epochs=3.0),
                             interrupted)
  assert file_digests(interrupted)['metrics.jsonl'] == metrics_before
  now = file_digests(os.path.join(interrupted, 'checkpoints'))
  assert {k: v for k, v in now.items() if k in saved} == saved
  assert not os.path.exists(os.path.join(interrupted, 'final.json'))


def test_full_disk_on_checkpoint_write(interrupted, cifar_tarball,
                                       monkeypatch):
  saved = file_digests(os.path.join(interrupted, 'checkpoints'))

  def full_disk_save(self, step, *args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device', str(step))

  monkeypatch.setattr(ocp.CheckpointManager, 'save', full_disk_save)
  with pytest.raises(errors.StorageError,
                     match='checkpoint of step 45.*No space left.*kept'):
    train.train_and_evaluate(tiny_config(cifar_tarball[0], num_epochs=3.0),
                             interrupted)
  monkeypatch.undo()
  assert file_digests(os.path.join(interrupted, 'checkpoints')) == saved
  with run_dir.RunDir(interrupted).checkpoints(read_only=True) as ckpts:
    for step in (15, 30):
      checkpoints.verify(ckpts.manager, step)


# Damaged data: every row names what is wrong, nothing trains.

def folder(tmp_path):
  return write_image_folder(tmp_path / 'cifar')


def load(root):
  return input_pipeline.load_splits(data_config('folder', root, 5))


@pytest.mark.parametrize('split', ['test', 'train'])
def test_missing_class_folder(tmp_path, split):
  root = folder(tmp_path)
  shutil.rmtree(root / split / 'truck')
  with pytest.raises(input_pipeline.DataError,
                     match=f"{split} must hold.*missing: \\['truck'\\]"):
    load(root)


def test_image_of_the_wrong_size_is_named(tmp_path, cifar_tarball):
  root = folder(tmp_path)
  big = root / 'train' / 'cat' / '0001.png'
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big)
  with pytest.raises(input_pipeline.DataError,
                     match=f'{big} is 64x64 with 3 channels'):
    load(root)
  # The same through launch.py: one line, exit 1, no run directory.
  proc = start_launch(tmp_path / 'run', root, '--config.data.source=folder',
                      '--config.data.num_val=5')
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 1
  assert f'{big} is 64x64' in one_error_line(out)
  assert not os.path.exists(tmp_path / 'run')
  del cifar_tarball


@pytest.mark.parametrize('content', ['text', 'truncated'])
def test_file_that_does_not_decode_is_named(tmp_path, content):
  root = folder(tmp_path)
  bad = root / 'test' / 'dog' / '0002.jpg'
  if content == 'text':
    bad.write_text('not an image\n')
  else:
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])
  with pytest.raises(input_pipeline.DataError,
                     match=f'{bad} is not a readable image'):
    load(root)


def test_grayscale_image_is_converted(tmp_path):
  root = folder(tmp_path)
  Image.fromarray(np.full((32, 32), 77, np.uint8)).save(
      root / 'test' / 'ship' / '0000.png')
  test = load(root)['test']
  # Sorted paths: ship is class 8, its first file is row 24.
  np.testing.assert_array_equal(test.images[24], np.full((32, 32, 3), 77))


def test_tarball_missing_a_class(tmp_path):
  (train_x, train_y), test = synthetic_cifar(200, 50)
  keep = train_y != 9
  path = write_cifar_tarball(tmp_path / 'c.tar.gz',
                             (train_x[keep], train_y[keep]), test)
  with pytest.raises(input_pipeline.DataError,
                     match="train split of tarball.*class \\['truck'\\]"):
    input_pipeline.load_splits(data_config('tarball', path, 10))


def without_tensorflow(tmp_path) -> dict:
  """The environment of a host whose Python has no TensorFlow (the H200's)."""
  stub = tmp_path / 'no_tf' / 'tensorflow'
  stub.mkdir(parents=True)
  (stub / '__init__.py').write_text(
      'raise ImportError("No module named tensorflow (this test)")\n')
  return {'PYTHONPATH': os.pathsep.join(
      [str(tmp_path / 'no_tf'), os.environ.get('PYTHONPATH', '')])}


def test_a_host_without_tensorflow_trains_without_tensorboard(
    tmp_path, cifar_tarball):
  # The tarball needs no TensorFlow; clu's writers and progress report do,
  # so the run logs to metrics.jsonl and the console alone.
  workdir = tmp_path / 'run'
  proc = start_launch(workdir, cifar_tarball[0], '--config.num_epochs=1',
                      '--config.tensorboard=False',
                      env=without_tensorflow(tmp_path))
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert 'No progress report (clu needs TensorFlow' in out
  final = run_dir.RunDir(str(workdir)).final()
  assert 0 <= final['test_accuracy'] <= 1
  records = metrics_log.read_jsonl(str(workdir / 'metrics.jsonl'))
  assert {r['split'] for r in records} >= {'train', 'val', 'test'}
  assert not [f for f in os.listdir(workdir) if 'tfevents' in f]


def test_tensorboard_without_tensorflow_is_one_clear_error(tmp_path,
                                                           cifar_tarball):
  proc = start_launch(tmp_path / 'run', cifar_tarball[0],
                      '--config.num_epochs=1',
                      env=without_tensorflow(tmp_path))
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode != 0
  line = one_error_line(out)
  assert 'config.tensorboard=True needs TensorFlow' in line
  assert '--config.tensorboard=False' in line
  # Checked with the config, before the data is read or anything written.
  assert not (tmp_path / 'run' / 'config.json').exists()
