"""A user's mistake gives one line on stderr and exit 1; a bug, a traceback.

Each command runs as users run it (a subprocess), so absl's flag parsing,
ml_collections' config loading and the CLIs' own handling are all covered.
"""

import os
import subprocess
import sys

import pytest

from bonnkd import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **env):
  return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, check=False,
                        env=dict(os.environ, JAX_PLATFORMS='cpu', **env))


def assert_one_line_error(result, *fragments):
  assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def smoke(workdir, *extra, config='configs/phase1_bonn_wrn.py:smoke'):
  return ('launch.py', '--config', config, '--workdir', str(workdir), *extra)


def test_missing_data(tmp_path):
  # A schedule long enough for --xla_cpu_flags=auto to time the step: the
  # data error comes before any timing, and nothing is cached.
  result = run(*smoke(tmp_path / 'run', '--config.data.source=folder',
                      f'--config.data.dir={tmp_path / "nothing"}',
                      '--config.data.train_limit=-1', '--config.num_epochs=8',
                      '--xla_cpu_flags=auto'),
               BONNKD_CACHE_DIR=str(tmp_path / 'cache'))
  assert_one_line_error(result, 'config.data.dir=', 'nothing',
                        '--config.data.source=folder')
  assert 'XLA:CPU flags' not in result.stderr
  assert not os.path.exists(tmp_path / 'run')
  assert not os.path.exists(tmp_path / 'cache' / 'xla_cpu_flags.json')


def test_unknown_preset(tmp_path):
  result = run(*smoke(tmp_path / 'run',
                      config='configs/phase1_bonn_wrn.py:gpu'))
  assert_one_line_error(result, "Unknown preset 'gpu'", "'cpu', 'smoke'")


@pytest.mark.parametrize('flag,fragments', [
    ('--config.optim.lr=-1.0', ('Invalid config.optim.lr=-1.0', '> 0')),
    ('--config.model.binarize=middle',
     ("Invalid config.model.binarize='middle'", 'first_conv')),
    ('--config.optim.lr=fast', ('--config.optim.lr=fast', 'float')),
])
def test_bad_config_value(tmp_path, cifar_tarball, flag, fragments):
  result = run(*smoke(tmp_path / 'run', '--config.data.source=tarball',
                      f'--config.data.dir={cifar_tarball[0]}', flag))
  assert_one_line_error(result, *fragments)
  assert not os.path.exists(tmp_path / 'run')


def test_teacher_dir_that_is_not_a_run(tmp_path, cifar_tarball):
  (tmp_path / 'not_a_run').mkdir()
  result = run(*smoke(tmp_path / 'student', '--config.data.source=tarball',
                      f'--config.data.dir={cifar_tarball[0]}',
                      f'--config.kd.teacher_workdir={tmp_path / "not_a_run"}',
                      config='configs/phase2_kd_student.py:smoke'))
  assert_one_line_error(result, 'config.kd.teacher_workdir=', 'no config.json')
  assert not os.path.exists(tmp_path / 'student')


@pytest.mark.parametrize('module', ['bonnkd.tools.inspect', 'bonnkd.tools.report'])
def test_path_that_is_not_a_run(tmp_path, module):
  extra = ['--out', str(tmp_path / 'out')] if module == 'bonnkd.tools.report' else []
  result = run('-m', module, str(tmp_path), *extra)
  assert_one_line_error(result, str(tmp_path), 'not a bonnkd run directory')


def test_summary_with_unknown_preset():
  result = run('-m', 'bonnkd.tools.summary',
               '--config', 'configs/teacher_resnet18.py:tpu')
  assert_one_line_error(result, "Unknown preset 'tpu'")


def test_prepare_tfds_without_the_archive(tmp_path):
  result = run('-m', 'bonnkd.data.prepare_tfds', '--archive',
               str(tmp_path / 'cifar-10-binary.tar.gz'),
               '--data_dir', str(tmp_path))
  assert_one_line_error(result, 'does not exist')


def test_a_bug_keeps_its_traceback(capsys):
  @errors.exit_on_user_error
  def buggy():
    raise KeyError('a bug')

  @errors.exit_on_user_error
  def mistaken():
    raise errors.ConfigError('Invalid config.x=1: expected 2.')

  with pytest.raises(KeyError, match='a bug'):
    buggy()
  with pytest.raises(SystemExit) as exit_info:
    mistaken()
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == 'error: Invalid config.x=1: expected 2.\n'
