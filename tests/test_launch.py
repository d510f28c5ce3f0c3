"""The launcher as users run it: kill -9, then the same command resumes.

Its one-line errors are in tests/test_cli.py."""

import json
import os
import signal
import time

import orbax.checkpoint as ocp

from tests.conftest import start_launch


def launch(workdir, data):
  return start_launch(workdir, data, '--config.num_epochs=8')


def test_kill_9_then_same_command_resumes(tmp_path, cifar_tarball):
  workdir = tmp_path / 'run'
  proc = launch(workdir, cifar_tarball[0])
  deadline = time.time() + 300
  step = None
  while time.time() < deadline and step is None:
    time.sleep(0.2)
    if os.path.isdir(workdir / 'checkpoints'):
      step = ocp.CheckpointManager(workdir / 'checkpoints').latest_step()
  assert step is not None, 'no checkpoint was written'
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  assert not os.path.exists(workdir / 'final.json')

  proc = launch(workdir, cifar_tarball[0])
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert 'Resumed from step' in out
  with open(workdir / 'final.json') as f:
    final = json.load(f)
  # 500 train images / batch 32 = 15 steps per epoch, 8 epochs.
  assert final['step'] == 120
  with open(workdir / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  keys = [(r['step'], r['split']) for r in records]
  assert len(keys) == len(set(keys))
  assert [r['step'] for r in records if r['split'] == 'val'] == list(
      range(15, 121, 15))
