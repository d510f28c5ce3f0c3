"""Configs: presets resolve, bad values fail early with the key named."""

import pytest

from bonnkd import config_lib
from configs import phase1_bonn_wrn
from configs import phase2_kd_student
from configs import teacher_resnet18

CONFIGS = (phase1_bonn_wrn, teacher_resnet18, phase2_kd_student)


@pytest.mark.parametrize('module', CONFIGS)
@pytest.mark.parametrize('preset', ['', 'cpu', 'smoke'])
def test_presets_validate(module, preset):
  config = module.get_config(preset)
  if config.kd.enabled:
    config.kd.teacher_workdir = '/some/run'
  config_lib.validate(config)


def test_kd_needs_a_teacher_and_valid_alpha():
  config = phase2_kd_student.get_config('smoke')
  with pytest.raises(ValueError, match='kd.teacher_workdir'):
    config_lib.validate(config)
  config.kd.teacher_workdir = '/some/run'
  config.kd.alpha = 1.5
  with pytest.raises(ValueError, match='kd.alpha=1.5'):
    config_lib.validate(config)
  config.kd.alpha = 0.5
  config.kd.temperature = 0.0
  with pytest.raises(ValueError, match='kd.temperature'):
    config_lib.validate(config)


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
    ('model.depth', 12, 'model.depth.*6n \\+ 4'),
    ('model.conv_impl', 'fft', 'model.conv_impl'),
    ('optim.lr', -0.1, 'optim.lr=-0.1.*> 0'),
    ('optim.label_smoothing', 1.0, 'optim.label_smoothing'),
    ('num_epochs', 0.0, 'num_epochs'),
    ('data.source', 'hub', 'data.source.*tarball'),
    ('phase', 'phase3', 'phase.*phase1'),
])
def test_invalid_values_name_the_key(key, value, message):
  config = phase1_bonn_wrn.get_config('smoke')
  node = config
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_batch_size_must_divide_over_devices():
  config = phase1_bonn_wrn.get_config('smoke')
  config.batch_size = 30
  with pytest.raises(ValueError, match='batch_size=30.*device count \\(4\\)'):
    config_lib.validate(config, num_devices=4)


def test_folder_source_needs_a_dir():
  config = phase1_bonn_wrn.get_config('smoke')
  config.data.source = 'folder'
  config.data.dir = ''
  with pytest.raises(ValueError, match='data.dir'):
    config_lib.validate(config)


def test_steps_per_epoch_drops_last_partial_batch():
  assert config_lib.steps_per_epoch(45000, 128) == 351
  config = phase1_bonn_wrn.get_config('cpu')
  assert config_lib.num_train_steps(config, 45000) == 11 * 351
