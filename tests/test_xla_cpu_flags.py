"""XLA:CPU flags are chosen by timing the real step per machine, then cached."""

import json
import os

import pytest

from bonnkd import errors
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import machine
from bonnkd.cpu import xla_cpu_flags
from bonnkd.data import input_pipeline
from tests.conftest import offline_download
from tests.conftest import start_launch

SMOKE = 'configs/phase1_bonn_wrn.py:smoke'


@pytest.fixture
def cache_dir(monkeypatch, tmp_path):
  monkeypatch.setenv('BONNKD_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  return tmp_path / 'cache'


def long_smoke_config(data_dir):
  """The smoke model, with a schedule long enough to be worth timing."""
  config = files.load(SMOKE)
  return overrides.override(config, [
      ('data.source', 'tarball'), ('data.dir', str(data_dir)),
      ('data.train_limit', -1), ('num_epochs', 8.0)])


def test_machine_key_tells_cpu_generations_and_xla_flags_apart(monkeypatch):
  # Two EPYC generations that a VM names alike must not share a cache entry.
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  zen3 = {'model name': 'AMD EPYC', 'cpu family': '25', 'model': '17'}
  zen5 = dict(zen3, **{'cpu family': '26', 'model': '2'})
  monkeypatch.setattr(machine, '_cpuinfo', lambda: zen3)
  key3 = machine.key()
  assert key3.startswith('AMD EPYC (family 25, model 17) | ')
  monkeypatch.setattr(machine, '_cpuinfo', lambda: zen5)
  assert machine.key() != key3
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_use_onednn=true')
  assert machine.key().endswith(' | XLA_FLAGS=--xla_cpu_use_onednn=true')


@pytest.mark.parametrize('rates,expected', [
    ({'default': 100.0, 'no_ynn_conv': 121.0}, 'no_ynn_conv'),
    # 4% is inside the noise these machines show between runs: keep XLA's.
    ({'default': 100.0, 'no_ynn_conv': 104.0}, 'default'),
    ({'default': 100.0, 'no_ynn_conv': 80.0}, 'default'),
    ({'default': 100.0, 'a': 110.0, 'b': 130.0}, 'b'),
])
def test_pick_takes_the_fastest_only_beyond_the_margin(rates, expected):
  assert xla_cpu_flags.pick(rates, margin=0.05) == expected


def test_estimated_steps_from_the_config():
  config = files.load('configs/phase1_bonn_wrn.py:bonn_cpu')
  # 50,000 - 5,000 val = 45,000 train images, 351 full batches of 128 an
  # epoch (the last one dropped), 8 epochs: the 2,808 steps of results/bonn/v1.
  assert xla_cpu_flags.estimated_steps(config) == 8 * 351 == 2808
  limited = overrides.override(config, [('data.train_limit', 1280)])
  assert xla_cpu_flags.estimated_steps(limited) == 8 * 10


def test_a_cached_choice_is_used_without_measuring(cache_dir, cifar_tarball,
                                                   monkeypatch):
  config = long_smoke_config(cifar_tarball[0])
  machine.write_cache('xla_cpu_flags.json', {machine.key(): {
      xla_cpu_flags.model_key(config): {'choice': 'no_ynn_conv',
                                        'images_per_sec': None}}})

  def no_timing(*args):
    raise AssertionError(f'measured {args}')

  monkeypatch.setattr(xla_cpu_flags, 'time_in_child', no_timing)
  choice = xla_cpu_flags.apply(config, 'auto')
  assert (choice.name, choice.how) == ('no_ynn_conv', 'cached')
  assert os.environ['XLA_FLAGS'] == xla_cpu_flags.CANDIDATES['no_ynn_conv']


def test_no_timing_for_a_short_run(cache_dir, cifar_tarball, monkeypatch):
  # The smoke preset's own 256 images: 8 epochs x 8 steps.
  config = overrides.override(long_smoke_config(cifar_tarball[0]),
                               [('data.train_limit', 256)])
  monkeypatch.setattr(xla_cpu_flags, 'time_in_child', None)  # not called
  choice = xla_cpu_flags.apply(config, 'auto')
  assert (choice.name, choice.how) == ('default', 'short run')
  assert 'XLA_FLAGS' not in os.environ
  assert not os.path.exists(cache_dir / 'xla_cpu_flags.json')


@pytest.mark.parametrize('source', ['tarball', 'folder', 'tfds'])
def test_missing_data_is_the_runs_own_error_before_any_timing(
    cache_dir, cifar_tarball, monkeypatch, tmp_path, source):
  # Offline, tfds retries its download for minutes: it does so before the
  # timing's compilations, not after them.
  config = overrides.override(long_smoke_config(cifar_tarball[0]), [
      ('data.source', source), ('data.dir', str(tmp_path / 'nothing'))])
  downloads = offline_download(monkeypatch)
  monkeypatch.setattr(xla_cpu_flags, 'time_in_child', None)  # not called
  with pytest.raises(input_pipeline.DataNotFoundError,
                     match='config.data.dir'):
    xla_cpu_flags.apply(config, 'auto')
  assert downloads == (['cifar10'] if source == 'tfds' else [])
  assert 'XLA_FLAGS' not in os.environ
  assert not os.path.exists(cache_dir / 'xla_cpu_flags.json')


def test_tfds_downloads_before_the_timing(cache_dir, cifar_tarball,
                                          monkeypatch, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = overrides.override(long_smoke_config(cifar_tarball[0]), [
      ('data.source', 'tfds'), ('data.dir', str(tmp_path / 'tfds'))])
  events = []
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      lambda builder: events.append('download'))
  monkeypatch.setattr(
      xla_cpu_flags, 'time_in_child', lambda flags, config: events.append(
          'timing') or {'backend': 'cpu', 'images_per_sec': 100.0})
  xla_cpu_flags.apply(config, 'auto')
  assert events == ['download'] + ['timing'] * len(
      xla_cpu_flags.AUTO_CANDIDATES)


def test_a_plan_times_a_run_whose_inputs_are_not_there_yet(
    cache_dir, cifar_tarball, monkeypatch):
  # A sweep times a student before its teacher has run (check_inputs=False);
  # the children time the model alone.
  config = overrides.override(long_smoke_config(cifar_tarball[0]), [
      ('kd.enabled', True), ('kd.teacher_workdir', '/not/yet/teacher')])
  rates = {'default': 100.0, 'no_ynn_conv': 150.0}
  monkeypatch.setattr(
      xla_cpu_flags, 'time_in_child',
      lambda flags, config: {'backend': 'cpu', 'images_per_sec': rates[
          next(k for k, v in xla_cpu_flags.CANDIDATES.items() if v == flags)]})
  assert xla_cpu_flags.choose(config).how.startswith(
      'not measured: no teacher run')
  choice = xla_cpu_flags.choose(config, check_inputs=False)
  assert (choice.name, choice.how, choice.rates) == (
      'no_ynn_conv', 'measured', rates)
  assert xla_cpu_flags.choose(config).how == 'cached'


def test_the_default_mode_is_auto_unless_the_environment_says(monkeypatch):
  # The test suite itself sets 'default' for the runs it launches.
  monkeypatch.delenv(xla_cpu_flags.MODE_ENV)
  assert xla_cpu_flags.default_mode() == 'auto'
  monkeypatch.setenv(xla_cpu_flags.MODE_ENV, 'no_ynn_conv')
  assert xla_cpu_flags.default_mode() == 'no_ynn_conv'


def test_a_named_choice_is_appended_to_the_users_flags(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  xla_cpu_flags.apply(files.load(SMOKE), 'no_ynn_conv')
  assert os.environ['XLA_FLAGS'] == (
      '--xla_force_host_platform_device_count=2 '
      + xla_cpu_flags.CANDIDATES['no_ynn_conv'])


def test_an_unknown_choice_is_a_user_error():
  with pytest.raises(errors.UserError, match=r"--xla_cpu_flags='fastest'.*"
                     r"expected auto or one of \[.*'no_ynn_conv'"):
    xla_cpu_flags.apply(files.load(SMOKE), 'fastest')


def test_launch_times_each_candidate_once_then_uses_the_cache(
    tmp_path, cifar_tarball, monkeypatch):
  # The user's path: launch.py --xla_cpu_flags=auto on a run long enough to
  # be timed. Each candidate's real train step runs in a child process; the
  # winner is cached for this machine and model, and the run records the
  # flags it ran with.
  monkeypatch.setenv('BONNKD_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  workdir = tmp_path / 'run'
  # 500 images / batch 32 = 15 steps an epoch here, but the timing decision
  # reads the schedule as CIFAR-10's: 8 x (49,900 // 32) >= MIN_STEPS.
  proc = start_launch(workdir, cifar_tarball[0], '--config.num_epochs=8',
                      '--config.tensorboard=False', '--xla_cpu_flags=auto')
  out, _ = proc.communicate(timeout=900)
  assert proc.returncode == 0, out[-3000:]
  with open(tmp_path / 'cache' / 'xla_cpu_flags.json') as f:
    cache = json.load(f)
  (entries,) = cache.values()  # one machine
  (entry,) = entries.values()  # one model
  assert set(entry['images_per_sec']) == set(xla_cpu_flags.AUTO_CANDIDATES)
  assert all(rate > 0 for rate in entry['images_per_sec'].values())
  assert entry['choice'] == xla_cpu_flags.pick(entry['images_per_sec'])
  with open(workdir / 'final.json') as f:
    assert json.load(f)['xla_flags'] == xla_cpu_flags.CANDIDATES[
        entry['choice']]
  assert 'XLA:CPU flags: %s (measured' % entry['choice'] in out
