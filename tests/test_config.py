"""Configs: presets resolve, bad values fail early with the key named."""

import functools
import glob
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from bonnkd import errors
from bonnkd import models
from bonnkd import train
from bonnkd.config import defaults
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.tools import summary
from bonnkd.training import teacher as teacher_lib
from bonnkd.training import train_state
from configs import phase1_bonn_wrn
from configs import phase2_kd_student
from configs import recipes
from configs import teacher_resnet18

CONFIGS = (phase1_bonn_wrn, teacher_resnet18, phase2_kd_student)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('module', CONFIGS)
@pytest.mark.parametrize('preset', ['', 'cpu', 'smoke'])
def test_presets_validate(module, preset):
  config = module.get_config(preset)
  if config.kd.enabled:
    config.kd.teacher_workdir = '/some/run'
  train.validate_config(config)


def test_kd_needs_a_teacher_and_valid_alpha():
  config = phase2_kd_student.get_config('smoke')
  with pytest.raises(ValueError, match='kd.teacher_workdir'):
    train.validate_config(config)
  config.kd.teacher_workdir = '/some/run'
  config.kd.alpha = 1.5
  with pytest.raises(ValueError, match='kd.alpha=1.5'):
    train.validate_config(config)
  config.kd.alpha = 0.5
  config.kd.temperature = 0.0
  with pytest.raises(ValueError, match='kd.temperature'):
    train.validate_config(config)


def test_default_preset_is_bonn_setting():
  config = phase1_bonn_wrn.get_config()
  assert (config.model.depth, config.model.width) == (22, 4)
  assert config.model.binarize == 'inner'
  assert config.model.binarize_what == 'both'
  assert config.model.weight_scale == 'modulation'


def test_unknown_preset():
  with pytest.raises(ValueError, match="Unknown preset 'gpu'.*cpu.*smoke"):
    phase1_bonn_wrn.get_config('gpu')


@pytest.mark.parametrize('key,value,message', [
    ('model.binarize', 'middle', 'model.binarize.*first_conv'),
    ('model.binarize_what', 'bias', 'model.binarize_what.*weights'),
    ('model.quantizer', 'sign_ste', 'model.quantizer.*ste_sign'),
    ('model.weight_scale', 'l2', 'model.weight_scale.*modulation'),
    ('model.shortcuts', 'bireal', 'model.shortcuts.*every_conv'),
    ('model.modulation_init', 'ones', 'model.modulation_init.*normal'),
    ('model.depth', 12, 'model.depth.*6n \\+ 4'),
    ('model.conv_impl', 'fft', 'model.conv_impl'),
    ('optim.lr', -0.1, 'optim.lr=-0.1.*> 0'),
    ('optim.label_smoothing', 1.0, 'optim.label_smoothing'),
    ('num_epochs', 0.0, 'num_epochs'),
    ('data.source', 'hub', 'data.source.*tarball'),
    ('phase', 'phase3', 'phase.*phase1'),
    ('bonn.min_variance', 0.0, 'bonn.min_variance=0.0.*> 0'),
    ('bonn.feature_normalization', 'layer', 'bonn.feature_normalization'),
])
def test_invalid_values_name_the_key(key, value, message):
  config = phase1_bonn_wrn.get_config('smoke')
  node = config
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    train.validate_config(config)


def test_batch_size_must_divide_over_devices():
  config = phase1_bonn_wrn.get_config('smoke')
  config.batch_size = 30
  with pytest.raises(ValueError, match='batch_size=30.*device count \\(4\\)'):
    train.validate_config(config, num_devices=4)


def test_folder_source_needs_a_dir():
  config = phase1_bonn_wrn.get_config('smoke')
  config.data.source = 'folder'
  config.data.dir = ''
  with pytest.raises(ValueError, match='data.dir'):
    train.validate_config(config)


@pytest.mark.parametrize('preset', ['default', 'bonn_cpu'])
def test_phase1_bonn_presets_are_bonns_complete_recipe(preset):
  # BONN (Gu et al.): inner 3x3 convs W1A1 with learned modulation, both
  # Bayesian losses on at the weights chosen on val (recipes.BONN_*).
  config = phase1_bonn_wrn.get_config('' if preset == 'default' else preset)
  model = config.model
  assert (model.binarize, model.binarize_what, model.weight_scale) == (
      'inner', 'both', 'modulation')
  assert (config.bonn.kernel_weight, config.bonn.feature_weight) == (
      recipes.BONN_KERNEL_WEIGHT, recipes.BONN_FEATURE_WEIGHT)
  assert config.bonn.kernel_weight > 0 and config.bonn.feature_weight > 0
  totals = summary.totals(summary.layer_costs(models.create_model(model)))
  assert totals['binary_conv_share'] > 0.98


def test_steps_per_epoch_drops_last_partial_batch():
  assert defaults.steps_per_epoch(45000, 128) == 351
  config = phase1_bonn_wrn.get_config('cpu')  # Batch 128.
  config.num_epochs = 28.0
  assert defaults.num_train_steps(config, 45000) == 28 * 351
  config.num_epochs = 0.5  # Half an epoch, 175.5 steps: rounded up.
  assert defaults.num_train_steps(config, 45000) == 176


def test_override_parses_values_by_the_fields_type():
  config = phase1_bonn_wrn.get_config('smoke')
  new = overrides.override(config, [
      'data.flip=False', 'tensorboard=false', 'optim.lr=1', 'model.width=3',
      'model.binarize=inner', 'optim.nesterov=0'])
  # bool('False') would be True: booleans are parsed, not cast.
  assert new.data.flip is False and new.tensorboard is False
  assert new.optim.nesterov is False
  assert new.optim.lr == 1.0 and isinstance(new.optim.lr, float)
  assert new.model.width == 3 and new.model.binarize == 'inner'
  assert config.data.flip is True  # The input config is left as it was.
  student = overrides.override(phase2_kd_student.get_config('smoke'),
                                ['model.widths=(4, 8)', 'kd.enabled=True'])
  assert tuple(student.model.widths) == (4, 8)
  assert overrides.override(config, [('model.depth', 16)]).model.depth == 16


@pytest.mark.parametrize('item,message', [
    ('data.flip=maybe', 'data.flip.*boolean'),
    ('optim.lr=fast', 'optim.lr.*float'),
    ('model.width=2.5', 'model.width.*int'),
    ('optim.learning_rate=0.1', "no field 'optim.learning_rate'"),
    ('model.depth', 'key=value'),
])
def test_override_rejects_unknown_keys_and_wrong_types(item, message):
  with pytest.raises(errors.ConfigError, match=message):
    overrides.override(phase1_bonn_wrn.get_config('smoke'), [item])


def test_load_reads_a_file_and_preset_and_names_bad_ones(tmp_path):
  config = files.load('configs/phase1_bonn_wrn.py:cpu')
  assert config == phase1_bonn_wrn.get_config('cpu')
  with pytest.raises(errors.ConfigError, match="Unknown preset 'gpu'"):
    files.load('configs/phase1_bonn_wrn.py:gpu')
  with pytest.raises(errors.ConfigError, match='does not exist'):
    files.load(str(tmp_path / 'nope.py'))


# configs/recipes.py holds what the config files share; it is not one.
CONFIG_FILES = sorted(
    p for p in glob.glob(os.path.join(ROOT, 'configs', '[!_]*.py'))
    if os.path.basename(p) != 'recipes.py')


PRESET_CASES = [(path, preset) for path in CONFIG_FILES
                for preset in files.presets_of(path)]


@pytest.mark.parametrize(
    'path,preset', PRESET_CASES,
    ids=[f'{os.path.basename(p)}:{q}' for p, q in PRESET_CASES])
def test_every_preset_builds_and_its_train_step_traces(path, preset):
  # Every config file x preset: validated, and init plus one train step
  # traced abstractly (jax.eval_shape: no compile, no FLOPs), so the
  # accelerator presets cannot rot while CI trains only smoke ones.
  config = files.load(f'{path}:{"" if preset == "default" else preset}')
  teacher = None
  if config.kd.enabled:
    config.kd.teacher_workdir = '/a/teacher/run'
    teacher_config = teacher_resnet18.get_config(
        '' if preset not in ('cpu', 'smoke') else preset)
    teacher_model = models.create_model(teacher_config.model)
    teacher = teacher_lib.Teacher(
        model=teacher_model, config=teacher_config, step=0,
        variables=jax.eval_shape(lambda: teacher_model.init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 3)))))
  train.validate_config(config)
  state = train_state.abstract_train_state(config)
  images = jax.ShapeDtypeStruct((config.batch_size, 32, 32, 3), jnp.uint8)
  labels = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)
  new_state, metrics = jax.eval_shape(
      functools.partial(train.train_step, rng=jax.random.key(0),
                        config=config, teacher=teacher),
      state, images, labels, teacher.variables if teacher else None)
  assert jax.tree.structure(new_state.params) == jax.tree.structure(
      state.params)
  expected = {'loss', 'accuracy'} | (
      {'kd_loss', 'kl', 'agreement'} if teacher else set()) | (
          {'kernel_loss'} if config.bonn.kernel_weight else set()) | (
              {'feature_loss'} if config.bonn.feature_weight else set())
  assert set(metrics) == expected


def test_a_config_file_loads_from_any_working_directory(tmp_path):
  # Config files import configs/recipes.py; a script elsewhere, whose
  # sys.path lacks the repository, still loads them by path.
  path = os.path.join(ROOT, 'configs', 'phase1_bonn_wrn.py')
  script = ('from bonnkd.config import files\n'
            f'config = files.load({path + ":bonn_cpu"!r})\n'
            'print(config.bonn.kernel_weight)\n')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  out = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=env,
                       capture_output=True, text=True, check=True)
  assert float(out.stdout.strip()) == recipes.BONN_KERNEL_WEIGHT
