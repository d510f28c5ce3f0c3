"""The launcher as users run it: bad flags fail early, kill -9 resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import orbax.checkpoint as ocp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(workdir, data, *extra):
  cmd = [sys.executable, 'launch.py',
         '--config', 'configs/phase1_bonn_wrn.py:smoke',
         '--workdir', str(workdir),
         '--config.data.source=tarball', f'--config.data.dir={data}',
         '--config.data.train_limit=-1', '--config.data.num_val=100',
         '--config.num_epochs=8', *extra]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_invalid_override_fails_before_anything_runs(tmp_path, cifar_tarball):
  proc = launch(tmp_path / 'run', cifar_tarball[0], '--config.optim.lr=-1.0')
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode != 0
  assert 'Invalid config.optim.lr=-1.0' in out
  assert not os.path.exists(tmp_path / 'run')


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
