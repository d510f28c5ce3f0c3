"""The run directory object: its config, its files, and its one writer."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from bonnkd import errors
from bonnkd import fileio
from bonnkd import train
from bonnkd.data import input_pipeline
from bonnkd.run import run_dir
from tests.conftest import ROOT
from tests.conftest import start_launch
from tests.conftest import tiny_config

# A child process that takes WORKDIR's lock, says so, and waits.
HOLD_LOCK = (
    'import sys, time\n'
    'from bonnkd.run import run_dir\n'
    'with run_dir.RunDir(sys.argv[1]).lock():\n'
    '  print("held", flush=True)\n'
    '  time.sleep(600)\n')


@pytest.fixture
def lock_holder(tmp_path):
  """A live child process holding the lock of ``tmp_path / 'run'``."""
  workdir = tmp_path / 'run'
  child = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(workdir)],
                           cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert child.stdout.readline().strip() == 'held'
  yield workdir, child
  child.kill()
  child.wait()
  child.stdout.close()


def test_config_is_completed_with_the_keys_added_later(tmp_path):
  config = tiny_config('unused')
  old = json.loads(json.dumps(config.to_dict()))
  for key in ('dtype', 'eval_test', 'bonn'):
    del old[key]
  fileio.write_json(str(tmp_path / run_dir.CONFIG_FILE), old)
  saved = run_dir.RunDir.open(str(tmp_path)).config
  assert saved.dtype == 'float32' and saved.eval_test is True
  assert saved.bonn.kernel_weight == 0.0
  assert saved.bonn.kernel_loss_trains_modulation is True
  # Every key of ADDED_LATER, and nothing else, was filled in.
  assert set(run_dir.complete(old).to_dict()) == set(config.to_dict())


def test_open_refuses_a_folder_that_is_not_a_run(tmp_path):
  with pytest.raises(errors.NotARunError, match='no config.json'):
    run_dir.RunDir.open(str(tmp_path))
  assert not run_dir.RunDir(str(tmp_path)).exists()


def test_a_second_launch_on_a_workdir_in_use_stops_before_writing(
    cifar_tarball, lock_holder):
  workdir, child = lock_holder
  before = sorted(os.listdir(workdir))
  with pytest.raises(run_dir.RunInUseError) as e:
    train.train_and_evaluate(tiny_config(cifar_tarball[0]), str(workdir))
  assert f'process {child.pid} on host {socket.gethostname()}' in str(e.value)
  assert sorted(os.listdir(workdir)) == before == [run_dir.LOCK_FILE]


def test_the_lock_of_a_killed_run_does_not_block_the_next(lock_holder):
  workdir, child = lock_holder
  child.send_signal(signal.SIGKILL)
  child.wait()
  # Its lock file is still there; the kernel released the lock with it.
  assert os.path.exists(workdir / run_dir.LOCK_FILE)
  run = run_dir.RunDir(str(workdir))
  with run.lock():
    with open(workdir / run_dir.LOCK_FILE) as f:
      assert json.load(f)['pid'] == os.getpid()
    # A second holder in this process is refused too (flock is per open).
    with pytest.raises(run_dir.RunInUseError, match=f'process {os.getpid()}'):
      with run_dir.RunDir(str(workdir)).lock():
        pass
  assert not os.path.exists(workdir / run_dir.LOCK_FILE)


def test_a_launch_stopped_by_a_user_error_leaves_no_directory(tmp_path):
  config = tiny_config(str(tmp_path / 'no-such-tarball.tar.gz'))
  workdir = tmp_path / 'run'
  with pytest.raises(input_pipeline.DataNotFoundError):
    train.train_and_evaluate(config, str(workdir))
  assert not os.path.exists(workdir)


def test_launch_py_on_a_workdir_in_use_prints_one_line(cifar_tarball,
                                                       lock_holder):
  workdir, child = lock_holder
  proc = start_launch(workdir, cifar_tarball[0])
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 1, out
  errors_printed = [l for l in out.splitlines() if l.startswith('error:')]
  assert len(errors_printed) == 1, out
  assert f'process {child.pid}' in errors_printed[0]
  assert 'in use' in errors_printed[0]
  assert sorted(os.listdir(workdir)) == [run_dir.LOCK_FILE]
