"""The plan runner: runs a plan, skips what is finished, stops at its budget."""

import glob
import os
import textwrap

import jax
import jax.numpy as jnp
import pytest

from bonnkd import errors
from bonnkd import models
from bonnkd import sweep
from bonnkd import train
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import xla_cpu_flags
from configs import recipes
from tests.conftest import ROOT
from tests.conftest import read_json

PLAN = textwrap.dedent('''
    from bonnkd.sweep import Run

    SMOKE = ('data.source=tarball', 'data.dir={data}', 'data.num_val=100',
             'data.train_limit=-1', 'data.eval_limit=-1', 'num_epochs=1',
             'tensorboard=False')

    def get_plan():
      return [
          Run('teacher', 'configs/teacher_resnet18.py:smoke', SMOKE,
              expected_min=0.5),
          Run('alone', 'configs/phase2_kd_student.py:smoke',
              SMOKE + ('kd.enabled=False',), seed=1),
          Run('kd', 'configs/phase2_kd_student.py:smoke',
              SMOKE + ('kd.teacher_workdir={out}/teacher',),
              after=('teacher',)),
      ]
''')


def read_text(path):
  with open(path) as f:
    return f.read()


def write_plan(tmp_path, data, text=PLAN):
  path = tmp_path / 'plan.py'
  path.write_text(text.replace('{data}', data))
  return str(path)


def test_plan_runs_then_skips_what_is_finished(tmp_path, cifar_tarball,
                                               capsys):
  plan, out = write_plan(tmp_path, cifar_tarball[0]), str(tmp_path / 'out')
  assert sweep.main([plan, '--out', out, '--parallel', '2']) == 0
  for name in ('teacher', 'alone', 'kd'):
    final = read_json(os.path.join(out, name, 'final.json'))
    assert final['step'] == 15  # 500 images / 32, one epoch.
  assert read_json(os.path.join(out, 'alone', 'final.json'))['seed'] == 1
  assert read_json(os.path.join(out, 'kd', 'final.json'))['distilled']
  summary = read_text(os.path.join(out, 'summary.md'))
  assert summary.count('| done |') == 3

  mtimes = {n: os.path.getmtime(os.path.join(out, n, 'final.json'))
            for n in ('teacher', 'alone', 'kd')}
  capsys.readouterr()
  assert sweep.main([plan, '--out', out]) == 0
  assert 'started' not in capsys.readouterr().out
  assert read_text(os.path.join(out, 'summary.md')).count(
      '| done before |') == 3
  assert mtimes == {n: os.path.getmtime(os.path.join(out, n, 'final.json'))
                    for n in mtimes}


def test_parallel_runs_have_their_xla_flags_timed_first_one_model_at_a_time(
    tmp_path, monkeypatch, capsys):
  # Side by side, each run's launch.py would time its candidates under the
  # other's load: the plan times each model first (two seeds, one model:
  # timed once), then launches them.
  monkeypatch.setenv(xla_cpu_flags.MODE_ENV, 'auto')
  timed = []

  def choose(config, check_inputs):
    assert not check_inputs  # a student may time before its teacher exists
    assert not os.path.exists(tmp_path / 'out' / 'logs' / 'a.log')
    timed.append(config.model.width)
    return xla_cpu_flags.Choice('default', 'measured')

  monkeypatch.setattr(xla_cpu_flags, 'choose', choose)
  # Data that is not there: each launch stops at once with its own error.
  missing = ('data.source=folder', 'data.dir=/nonexistent/cifar10')
  runs = [sweep.Run('a', 'configs/phase1_bonn_wrn.py:smoke', missing, seed=0),
          sweep.Run('b', 'configs/phase1_bonn_wrn.py:smoke', missing, seed=1),
          sweep.Run('c', 'configs/phase1_bonn_wrn.py:smoke',
                    missing + ('model.width=2',))]
  rows = sweep.run_plan(runs, str(tmp_path / 'out'), parallel=2)
  assert timed == [1, 2]  # the smoke WRN-10-1, then its width-2 variant
  assert [r['status'] for r in rows] == ['failed (exit 1)'] * 3
  assert 'XLA:CPU flags for c and its model: default (measured)' in (
      capsys.readouterr().out)


def test_budget_counts_the_minutes_measured_on_this_machine(
    tmp_path, monkeypatch, capsys):
  # The plans' minutes came from other machines (BONN's WRN-16-3 trained at
  # 144 img/s on one EPYC, 33 on another): where this one measured the
  # model, its img/s decides what fits the budget.
  monkeypatch.setenv(xla_cpu_flags.MODE_ENV, 'auto')
  rates = {1: 1.0, 2: 100.0}  # img/s by model width
  monkeypatch.setattr(
      xla_cpu_flags, 'choose', lambda config, check_inputs:
      xla_cpu_flags.Choice('no_ynn_conv', 'cached', {
          'default': rates[config.model.width] / 2,
          'no_ynn_conv': rates[config.model.width]}))
  missing = ('data.source=folder', 'data.dir=/nonexistent/cifar10')
  runs = [sweep.Run('slow', 'configs/phase1_bonn_wrn.py:smoke', missing,
                    expected_min=0.1),
          sweep.Run('fast', 'configs/phase1_bonn_wrn.py:smoke',
                    missing + ('model.width=2',), expected_min=9.0)]
  rows = sweep.run_plan(runs, str(tmp_path / 'out'), budget_min=5)
  # The smoke preset: 256 images / batch 32 x 2 epochs = 16 steps of 32
  # images; at 1 img/s 8.5 minutes, at 100 img/s 0.1.
  assert [r['expected_min'] for r in rows] == [8.5, 0.1]
  assert [r['status'] for r in rows] == [
      'left: does not fit the budget', 'failed (exit 1)']
  assert ('fast: started (expected 0.1 min of training steps: 100 img/s '
          'measured here; the plan said 9 min)') in capsys.readouterr().out


def test_budget_stops_and_says_what_is_left(tmp_path, cifar_tarball, capsys):
  # The distilled student expects 5 minutes: it never fits a budget of 0.6
  # minutes. The teacher (expected 0.5) starts and finishes, or is stopped
  # at the budget on a slow machine.
  text = PLAN.replace("after=('teacher',)", "after=('teacher',), "
                      'expected_min=5.0')
  plan, out = write_plan(tmp_path, cifar_tarball[0], text), str(
      tmp_path / 'out')
  code = sweep.main([plan, '--out', out, '--budget_min', '0.6'])
  printed = capsys.readouterr().out
  rows = {r['run']: r['status'] for r in read_json(
      os.path.join(out, 'summary.json'))}
  assert rows['teacher'] in ('done', 'stopped at budget (resumes next time)')
  assert 'Not finished:' in printed and "'kd'" in printed
  assert rows['kd'].startswith('left')
  assert code == 0


def test_plan_mistakes_are_named_before_anything_runs(tmp_path,
                                                      cifar_tarball):
  bad = PLAN.replace("after=('teacher',)", "after=('nobody',)")
  with pytest.raises(errors.UserError, match="'kd' comes after.*nobody"):
    sweep.load_plan(write_plan(tmp_path, cifar_tarball[0], bad))
  typo = PLAN.replace("'kd.enabled=False'", "'kd.enable=False'")
  runs = sweep.load_plan(write_plan(tmp_path, cifar_tarball[0], typo))
  with pytest.raises(errors.ConfigError, match="no field 'kd.enable'"):
    sweep.run_plan(runs, str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out' / 'teacher')


PLANS = [(path, '') for path in sorted(
    glob.glob(os.path.join(ROOT, 'configs', 'plans', '*.py')))] + [
        (os.path.join(ROOT, 'configs', 'plans', 'bonn.py'), stage)
        for stage in ('select', 'cpu', 'cpu_select')] + [
            (os.path.join(ROOT, 'configs', 'plans', 'w1a1_cpu.py'), stage)
            for stage in ('conv', 'shortcuts', 'init', 'losses',
                          'losses_floor', 'losses_normalized', 'teacher',
                          'kd', 'plain',
                          'ablation')] + [
                (os.path.join(ROOT, 'configs', 'plans', plan), 'final')
                for plan in ('phase1_cpu.py', 'phase2_cpu.py')]


@pytest.mark.parametrize('path,stage', PLANS,
                         ids=[f'{os.path.basename(p)}:{s}' for p, s in PLANS])
def test_committed_plans_load_and_their_configs_validate(path, stage,
                                                         tmp_path):
  runs = sweep.load_plan(path, stage)
  assert runs
  for run in runs:
    config = sweep._config_of(run, str(tmp_path))  # pylint: disable=protected-access
    if config.kd.enabled:
      config.kd.teacher_workdir = config.kd.teacher_workdir or '/a/teacher'
    train.validate_config(config)
    # At smoke size the same run keeps its model's layout.
    small = overrides.override(config, sweep.smoke_overrides(
        run, str(tmp_path)))
    assert small.model.name == config.model.name
    assert small.data.train_limit == 256


@pytest.mark.parametrize('stage', ['', 'cpu'])
def test_bonn_plan_is_the_issues_ablation(stage, tmp_path):
  # Three variants x two seeds on one model and schedule; only the loss
  # weights differ: plain none, kernel lambda only, kernel_feature both.
  runs = sweep.load_plan(os.path.join(ROOT, 'configs', 'plans', 'bonn.py'),
                         stage)
  configs = {r.name: sweep._config_of(r, str(tmp_path)) for r in runs}  # pylint: disable=protected-access
  # Seed by seed, so that a plan stopped at its budget compares variants.
  assert [r.name for r in runs] == [f'{v}_s{s}' for s in (0, 1) for v in
                                    ('plain', 'kernel', 'kernel_feature')]
  weights = {name: (c.bonn.kernel_weight, c.bonn.feature_weight)
             for name, c in configs.items()}
  lam, theta = (recipes.BONN_KERNEL_WEIGHT,
                recipes.BONN_FEATURE_WEIGHT)
  for seed in (0, 1):
    assert weights[f'plain_s{seed}'] == (0.0, 0.0)
    assert weights[f'kernel_s{seed}'] == (lam, 0.0)
    assert weights[f'kernel_feature_s{seed}'] == (lam, theta)
  layouts = {(c.model.depth, c.model.width, c.model.binarize,
              c.model.binarize_what, c.num_epochs) for c in configs.values()}
  assert len(layouts) == 1
  assert layouts.pop()[2:4] == ('inner', 'both')


def test_w1a1_ablation_is_the_issues_four_rows(tmp_path):
  # With the plain stage: plain, kernel_feature, kd, kernel_feature_kd x
  # seeds 0 and 1, one recipe; only BONN's loss weights and the KD differ.
  plan = os.path.join(ROOT, 'configs', 'plans', 'w1a1_cpu.py')
  runs = sweep.load_plan(plan, 'plain') + sweep.load_plan(plan, 'ablation')
  configs = {r.name: sweep._config_of(r, str(tmp_path)) for r in runs}  # pylint: disable=protected-access
  rows = {f'{v}_s{s}' for s in (0, 1) for v in
          ('plain', 'kd', 'kernel_feature', 'kernel_feature_kd')}
  assert set(configs) == rows | {'teacher'}
  def what(c):
    return (c.bonn.kernel_weight, c.bonn.feature_weight, c.kd.enabled)
  for seed in (0, 1):
    assert what(configs[f'plain_s{seed}']) == (0.0, 0.0, False)
    assert what(configs[f'kd_s{seed}']) == (0.0, 0.0, True)
    lam, theta, kd = what(configs[f'kernel_feature_s{seed}'])
    assert lam > 0 and theta > 0 and not kd
    assert what(configs[f'kernel_feature_kd_s{seed}']) == (lam, theta, True)
  recipe = {(c.model.depth, c.model.width, c.model.weight_scale,
             c.model.shortcuts, c.num_epochs, c.optim.name, c.optim.lr,
             c.eval_test) for n, c in configs.items() if n != 'teacher'}
  assert len(recipe) == 1 and recipe.pop()[-1]  # Test read by these rows.


def test_run_for_budget_takes_the_whole_epochs_that_fit():
  # 45,000 images at 1,000 img/s and 5 s of evaluation: 50 s an epoch.
  run = sweep.run_for_budget('a', 'c.py', ('x=1',), 1000.0, 10.0, 5.0,
                             seed=1)
  assert (run.overrides, run.expected_min, run.seed) == (
      ('x=1', 'num_epochs=12'), 10.0, 1)
  run = sweep.run_for_budget('a', 'c.py', (), 1000.0, 9.9, 5.0)
  assert (run.overrides, run.expected_min) == (('num_epochs=11',), 9.2)


def test_phase2_plan_chooses_on_val_then_runs_the_preset(tmp_path):
  plan = os.path.join(ROOT, 'configs', 'plans', 'phase2_cpu.py')
  students = [sweep._config_of(r, str(tmp_path))  # pylint: disable=protected-access
              for r in sweep.load_plan(plan, 'students')]
  assert all(c.kd.enabled and not c.eval_test for c in students)  # Val only.
  assert len({(tuple(c.model.stage_sizes), tuple(c.model.widths))
              for c in students}) == len(students)
  runs = sweep.load_plan(plan, 'final')
  configs = {r.name: sweep._config_of(r, str(tmp_path)) for r in runs}  # pylint: disable=protected-access
  preset = files.load(os.path.join(ROOT, 'configs', 'phase2_kd_student.py')
                      + ':cpu')
  assert {r.name: (r.seed, configs[r.name].kd.enabled) for r in runs} == {
      'kd_s1': (1, True), 'alone_s0': (0, False), 'alone_s1': (1, False)}
  for config in configs.values():  # The preset itself, test read.
    assert config.eval_test
    assert (tuple(config.model.stage_sizes), tuple(config.model.widths),
            config.num_epochs) == (tuple(preset.model.stage_sizes),
                                   tuple(preset.model.widths),
                                   preset.num_epochs)


def test_phase1_plan_chooses_on_val_then_runs_the_preset(tmp_path):
  plan = os.path.join(ROOT, 'configs', 'plans', 'phase1_cpu.py')
  candidates = [sweep._config_of(r, str(tmp_path))  # pylint: disable=protected-access
                for r in sweep.load_plan(plan, 'candidates')]
  assert not any(c.eval_test for c in candidates)  # Val only.
  preset = files.load(os.path.join(ROOT, 'configs', 'phase1_bonn_wrn.py')
                      + ':cpu')
  assert len({(c.model.depth, c.model.width) for c in candidates}) == len(
      candidates)
  # Only the model's size and the epochs differ from the preset.
  for c in candidates:
    for key in ('binarize', 'binarize_what'):
      assert c.model[key] == preset.model[key]
    assert (c.optim.lr, c.optim.label_smoothing, c.batch_size) == (
        preset.optim.lr, preset.optim.label_smoothing, preset.batch_size)
  (final,) = sweep.load_plan(plan, 'final')
  config = sweep._config_of(final, str(tmp_path))  # pylint: disable=protected-access
  assert final.seed == 1 and config.eval_test
  assert (config.model.depth, config.model.width, config.num_epochs) == (
      preset.model.depth, preset.model.width, preset.num_epochs)


def test_bonn_selection_reads_val_only_and_varies_one_thing(tmp_path):
  runs = sweep.load_plan(os.path.join(ROOT, 'configs', 'plans', 'bonn.py'),
                         'cpu_select')
  configs = {r.name: sweep._config_of(r, str(tmp_path)) for r in runs}  # pylint: disable=protected-access
  assert not any(c.eval_test for c in configs.values())  # Val only.
  grid = {name: (c.bonn.kernel_weight, c.bonn.feature_weight,
                 c.bonn.kernel_loss_trains_modulation)
          for name, c in configs.items()}
  decades = (1e-4, 1e-3, 1e-2)
  assert grid == {
      'select_plain': (0.0, 0.0, True),
      **{f'select_kernel{w:g}': (w, 0.0, True) for w in decades},
      **{f'select_feature{w:g}': (0.0, w, True) for w in decades},
      **{f'select_kernel_latent{w:g}': (w, 0.0, False) for w in decades}}
  # The first seven came first (results/bonn/v1/select/): their order stays.
  assert [r.name for r in runs][:7] == [
      'select_plain', 'select_kernel0.0001', 'select_kernel0.001',
      'select_kernel0.01', 'select_feature0.0001', 'select_feature0.001',
      'select_feature0.01']
  assert len({(c.model.depth, c.model.width, c.num_epochs)
              for c in configs.values()}) == 1


def test_table1_plan_is_the_seeds_models():
  runs = {r.name: r for r in sweep.load_plan(
      os.path.join(ROOT, 'configs', 'plans', 'table1.py'))}
  sizes = {}
  for name, run in runs.items():
    model = models.create_model(files.load(run.config).model)
    variables = jax.eval_shape(lambda m=model: m.init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    sizes[name] = models.count_params(variables['params'])
  # ResNet-18, WRN-16-7 with a 1-bit stem, the 41/64-width student alone
  # and distilled (tests/test_models.py derives each count).
  assert sizes == {'teacher_resnet18': 11_173_962,
                   'phase1_wrn16_7': 8_396_010,
                   'student_alone': 4_589_591, 'student_kd': 4_589_591}
  assert runs['student_kd'].after == ('teacher_resnet18',)
