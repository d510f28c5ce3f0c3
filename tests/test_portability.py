"""Checkpoints travel: written on 4 devices, read on 1 and 2; and back.

"Train on Colab's TPU, inspect on a laptop": every restore (resume, teacher,
inspect, report) gives orbax a target placed on the devices of the reading
process. Fake CPU devices stand in for the accelerators; each device count
is its own process (tests/topology_worker.py).
"""

import json
import os
import subprocess
import sys

from bonnkd import train
from bonnkd.tools import inspect as bonnkd_inspect
from bonnkd.tools import report
from tests import topology_worker
from tests.conftest import read_json
from tests.conftest import read_metrics
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(devices, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  result = subprocess.run(
      [sys.executable, '-m', 'tests.topology_worker', *map(str, args)],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
      check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  assert f'DEVICES {devices}' in result.stdout, result.stdout[-2000:]
  return result.stdout


def assert_resumed_not_restarted(workdir, before):
  """The run finished, and the records up to its checkpoint are untouched."""
  assert read_json(os.path.join(workdir, 'final.json'))['step'] == 45
  after = read_metrics(workdir)
  assert after[:len(before)] == before
  assert [r['step'] for r in after if r['split'] == 'val'] == [15, 30, 45]


def test_four_device_checkpoints_read_on_one_and_resume_on_two(
    cifar_tarball, tmp_path):
  data = cifar_tarball[0]
  finished, interrupted = tmp_path / 'finished4', tmp_path / 'interrupted4'
  worker(4, 'train', data, finished)
  worker(4, 'interrupt', data, interrupted)
  assert read_json(finished / 'final.json')['devices'] == '4x cpu'

  # Here, 1 device: inspect, report, and teach a student.
  text = bonnkd_inspect.describe(str(finished))
  assert 'latest 30' in text and 'stem/modulation' in text
  rows = report.write_report([str(finished)], str(tmp_path / 'report'))
  assert rows[0]['test_accuracy'] == read_json(
      finished / 'final.json')['test_accuracy']
  student = tmp_path / 'student'
  train.train_and_evaluate(
      tiny_config(data, 'phase2_kd_student', num_epochs=1.0,
                  **{'kd.teacher_workdir': str(finished)}), str(student))
  assert 0.0 <= read_json(student / 'final.json')['test_agreement'] <= 1.0

  # Resume the 4-device run on 2 devices.
  before = [r for r in read_metrics(interrupted) if r['step'] <= 15]
  worker(2, 'resume', data, interrupted)
  assert_resumed_not_restarted(interrupted, before)
  assert read_json(interrupted / 'final.json')['devices'] == '2x cpu'


def test_one_device_checkpoints_read_and_resumed_on_four(
    cifar_tarball, finished_run, tmp_path):
  data = cifar_tarball[0]
  _, finished, _ = finished_run
  interrupted = tmp_path / 'interrupted1'
  topology_worker.interrupt(tiny_config(data, num_epochs=3.0),
                            str(interrupted))
  before = [r for r in read_metrics(interrupted) if r['step'] <= 15]

  out = worker(4, 'use', data, finished, tmp_path / 'student4')
  result = json.loads(out.split('RESULT ', 1)[1].splitlines()[0])
  assert result['devices'] == 4
  assert result['inspect'].startswith('steps: [') and 'latest 45' in (
      result['inspect'])
  assert result['report_test_accuracy'] == read_json(
      os.path.join(finished, 'final.json'))['test_accuracy']
  assert read_json(tmp_path / 'student4' / 'final.json')['devices'] == '4x cpu'

  worker(4, 'resume', data, interrupted)
  assert_resumed_not_restarted(interrupted, before)
