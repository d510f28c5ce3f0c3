"""The exported inference file: packed, readable with NumPy, and exact.

The packed forward (``bonnkd.deploy``) against bonnkd's float eval of the
same variables, for every 1-bit layout: BONN's W1A1 WRN, the W1A1 ResNet
(hardtanh blocks), both with Bi-Real's shortcut around every conv too, the
seed's 1-bit-weight stem, every conv 1-bit with XNOR scales, and 1-bit
activations with real weights.
"""

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bonnkd import deploy
from bonnkd import errors
from bonnkd import export
from bonnkd import models
from bonnkd import train
from bonnkd.binary import packing
from bonnkd.config import defaults
from tests.conftest import data_config
from tests.conftest import tiny_config

WRN = dict(name='wide_resnet', depth=10, width=2, dropout_rate=0.0,
           quantizer='ste_sign', conv_impl='native')
RESNET = dict(name='resnet', stage_sizes=(1, 1), widths=(16, 40),
              quantizer='approx_sign', conv_impl='native')

LAYOUTS = {
    'wrn_w1a1_modulation': dict(WRN, binarize='inner', binarize_what='both',
                                weight_scale='modulation'),
    'wrn_w1a1_bonn': dict(WRN, binarize='inner', binarize_what='both',
                          weight_scale='layer_modulation'),
    'wrn_stem_weights': dict(WRN, binarize='first_conv',
                             binarize_what='weights', weight_scale='xnor'),
    'wrn_all_xnor': dict(WRN, binarize='all', binarize_what='both',
                         weight_scale='xnor'),
    'wrn_activations_only': dict(WRN, binarize='inner',
                                 binarize_what='activations',
                                 weight_scale='none'),
    'resnet_w1a1': dict(RESNET, binarize='inner', binarize_what='both',
                        weight_scale='modulation'),
    # Bi-Real's shortcut around every 3x3 conv.
    'wrn_w1a1_bonn_every_conv': dict(WRN, binarize='inner',
                                     binarize_what='both',
                                     weight_scale='layer_modulation',
                                     shortcuts='every_conv'),
    'resnet_w1a1_every_conv': dict(RESNET, binarize='inner',
                                   binarize_what='both',
                                   weight_scale='modulation',
                                   shortcuts='every_conv'),
}


def config_of(model: dict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      model=model, dtype='float32', data=data_config('tarball', '/nowhere')))


def trained_looking_variables(config, seed=0):
  """Initial variables with BatchNorm statistics, scales and biases moved
  off their initial values, so that every folded term counts."""
  model = models.create_model(config.model)
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 32, 32, 3)),
                         train=False)
  rng = np.random.default_rng(seed)

  def perturb(path, leaf):
    name = path[-1].key
    if name == 'var':
      return jnp.asarray(rng.uniform(0.5, 2.0, leaf.shape), jnp.float32)
    if name in ('mean', 'bias'):
      return jnp.asarray(rng.normal(0, 0.3, leaf.shape), jnp.float32)
    if name in ('scale', 'modulation'):  # Some negative: signs must carry.
      return jnp.asarray(rng.normal(0.5, 0.5, leaf.shape), jnp.float32)
    return leaf

  return jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_packed_forward_equals_float_eval(layout):
  config = config_of(LAYOUTS[layout])
  variables = trained_looking_variables(config)
  program = export.program_of(config, jax.device_get(variables))
  images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3),
                                             dtype=np.uint8)
  packed = np.asarray(deploy.make_forward(program)(images))
  reference = np.asarray(deploy.float_forward(config, variables)(images))
  np.testing.assert_allclose(packed, reference, rtol=1e-5,
                             atol=1e-5 * np.abs(reference).max())
  np.testing.assert_array_equal(packed.argmax(-1), reference.argmax(-1))



@pytest.mark.parametrize('layout,fused', [
    # BONN's block: conv1 -> bn2 -> conv2, both 1-bit.
    ('wrn_w1a1_bonn', ['group0_block0/conv1', 'group1_block0/conv1',
                       'group2_block0/conv1']),
    # conv1 -> bn1 -> hard tanh -> conv2.
    ('resnet_w1a1', ['stage0_block0/conv1', 'stage1_block0/conv1']),
    # The stem's signs go to conv1 and the shortcut, both 1-bit; then
    # group0's conv1 reads packed bits (not fused again) and the others fuse.
    ('wrn_all_xnor', ['stem', 'group1_block0/conv1', 'group2_block0/conv1']),
    # A residual sum between every two 1-bit convs: nothing to fuse.
    ('wrn_w1a1_bonn_every_conv', []),
    ('resnet_w1a1_every_conv', []),
])
def test_binary_outputs_are_exactly_the_unfused_forward(layout, fused):
  config = config_of(LAYOUTS[layout])
  program = export.program_of(config, jax.device_get(
      trained_looking_variables(config)))
  plan = deploy.binary_outputs(program)
  assert [op['name'] for op in plan.ops if op.get('out_bits')] == fused
  readers = [op for op in plan.ops if op.get('x_bits')]
  assert {op['x'] for op in readers} == {
      op['out'] for op in plan.ops if op.get('out_bits')}
  assert all(op['weights'] == 'packed' and op['inputs'] == 'sign'
             for op in readers)
  # The steps folded into the intervals are gone from the plan, not from
  # the file's program.
  assert len(program.ops) - len(plan.ops) == {
      'wrn_w1a1_bonn': 3, 'resnet_w1a1': 4, 'wrn_all_xnor': 3}.get(layout, 0)
  assert not any('out_bits' in op or 'x_bits' in op for op in program.ops)
  images = np.random.default_rng(4).integers(0, 256, (32, 32, 32, 3),
                                             dtype=np.uint8)
  # The intervals are found with the unfused forward's own float32 ops: the
  # logits are the same bits.
  np.testing.assert_array_equal(
      deploy.make_forward(program, fuse=True)(images),
      deploy.make_forward(program, fuse=False)(images))

def test_wrn_w1a1_packs_every_inner_conv():
  config = config_of(LAYOUTS['wrn_w1a1_modulation'])
  program = export.program_of(config, jax.device_get(
      trained_looking_variables(config)))
  # WRN-10-2: 3 blocks x 2 inner convs, all W1A1; stem and shortcuts real.
  assert program.packed_layers() == [
      f'group{g}_block0/conv{i}' for g in range(3) for i in (1, 2)]
  convs = {op['name']: op for op in program.ops if op['op'] == 'conv'}
  assert convs['group1_block0/conv1']['inputs'] == 'sign'
  assert convs['group1_block0/shortcut']['weights'] == 'float32'
  # group1's conv2 (width 2): 64 input channels in two words, 64 outputs.
  words = program.arrays['group1_block0/conv2/kernel']
  assert words.dtype == np.uint32 and words.shape == (3, 3, 2, 64)


def test_file_round_trip_with_numpy_alone(tmp_path):
  config = config_of(LAYOUTS['wrn_w1a1_modulation'])
  variables = jax.device_get(trained_looking_variables(config))
  program = export.program_of(config, variables, step=7)
  path = str(tmp_path / 'model.npz')
  file_bytes = export.save(program, path)
  with np.load(path) as f:
    header = json.loads(bytes(f['header']))
    kernel = f['group2_block0/conv1/kernel']
  assert header['format'] == export.FORMAT and header['step'] == 7
  assert header['float32_bytes'] == export.float32_bytes(variables)
  latent = variables['params']['group2_block0']['conv1']['kernel']
  np.testing.assert_array_equal(
      packing.unpack_kernel_np(kernel, latent.shape[2]),
      np.where(latent >= 0, 1.0, -1.0))
  loaded = export.load(path)
  assert loaded.header == program.header
  assert file_bytes == (tmp_path / 'model.npz').stat().st_size


def test_load_refuses_other_files(tmp_path):
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  (tmp_path / 'text.npz').write_text('not a zip')
  for name in ('other.npz', 'text.npz'):
    with pytest.raises(errors.ConfigError, match='not a bonnkd inference'):
      export.load(str(tmp_path / name))
  with pytest.raises(errors.ConfigError, match='does not exist'):
    export.load(str(tmp_path / 'missing.npz'))


def test_deploy_of_a_missing_file_is_one_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    deploy.main([str(tmp_path / 'missing.npz')])
  assert e.value.code == 1
  assert capsys.readouterr().err.startswith('error: ')


def test_deploy_of_missing_data_is_one_error(tmp_path, capsys):
  config = config_of(LAYOUTS['wrn_w1a1_bonn'])
  config.data = defaults.base_config().data  # A run's complete data config.
  path = str(tmp_path / 'model.npz')
  export.save(export.program_of(config, jax.device_get(
      trained_looking_variables(config))), path)
  for main in (deploy.main, deploy_torch_main()):
    if main is None:
      continue
    with pytest.raises(SystemExit) as e:
      main([path, '--data_source', 'folder', '--data_dir',
            str(tmp_path / 'nowhere')])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'nowhere' in err
    assert err.count('\n') == 1


def deploy_torch_main():
  """benchmarks.deploy_torch.main where PyTorch (the [bench] extra) is."""
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return None
  from benchmarks import deploy_torch  # pylint: disable=g-import-not-at-top
  return deploy_torch.main


@pytest.fixture(scope='module')
def w1a1_run(cifar_tarball, tmp_path_factory):
  """A W1A1 WRN smoke run (BONN's layout), trained 2 epochs."""
  workdir = str(tmp_path_factory.mktemp('w1a1'))
  config = tiny_config(cifar_tarball[0], **{
      'model.binarize': 'inner', 'model.binarize_what': 'both'})
  train.train_and_evaluate(config, workdir)
  return workdir


def run_main(main, argv):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert main(argv) == 0
  return out.getvalue()


def test_trained_run_exports_and_deploys_exactly(w1a1_run, cifar_tarball,
                                                 tmp_path):
  path = str(tmp_path / 'w1a1.npz')
  printed = run_main(export.main, [w1a1_run, '--out', path])
  assert '6 packed 1-bit layers' in printed
  result = json.loads(run_main(deploy.main, [
      path, '--data_source', 'tarball', '--data_dir', cifar_tarball[0],
      '--batch_size', '64', '--compare', '--json']))
  assert result['examples'] == 200  # every test image of the tarball
  assert result['predictions_equal']
  assert result['accuracy'] == result['float_accuracy']
  assert result['max_logit_diff'] < 1e-4
  assert result['file_bytes'] < result['float32_bytes']
  # The run's own test accuracy of the same (best) checkpoint.
  with open(f'{w1a1_run}/final.json') as f:
    assert result['accuracy'] == pytest.approx(json.load(f)['test_accuracy'])
  # Each block's conv1 writes conv2's signs packed; without that, the same.
  assert result['binary_outputs'] == 3
  counts = json.loads(run_main(deploy.main, [
      path, '--data_source', 'tarball', '--data_dir', cifar_tarball[0],
      '--batch_size', '64', '--compare', '--json', '--no_binary_outputs']))
  assert counts['binary_outputs'] == 0
  assert counts['predictions_equal'] and counts['max_logit_diff'] < 1e-4
  assert counts['accuracy'] == result['accuracy']


def test_export_of_a_missing_run_is_one_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    export.main([str(tmp_path / 'nothing'), '--out', str(tmp_path / 'x.npz')])
  assert e.value.code == 1
  assert 'error:' in capsys.readouterr().err
  assert not (tmp_path / 'x.npz').exists()


@pytest.mark.parametrize('layout', ['wrn_w1a1_bonn', 'resnet_w1a1',
                                    'wrn_w1a1_bonn_every_conv',
                                    'resnet_w1a1_every_conv'])
def test_pytorch_float_eval_of_the_file_equals_the_packed_forward(layout):
  # benchmarks/deploy_torch.py reads the same file with PyTorch, in float:
  # an independent implementation of every op (padding included).
  pytest.importorskip('torch', reason='PyTorch is the [bench] extra')
  from benchmarks import deploy_torch  # pylint: disable=g-import-not-at-top
  config = config_of(LAYOUTS[layout])
  program = export.program_of(config, jax.device_get(
      trained_looking_variables(config)))
  images = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3),
                                             dtype=np.uint8)
  packed = np.asarray(deploy.make_forward(program)(images))
  theirs = deploy_torch.torch_forward(program)(images)
  np.testing.assert_allclose(theirs, packed, rtol=1e-4,
                             atol=1e-4 * np.abs(packed).max())
  np.testing.assert_array_equal(theirs.argmax(-1), packed.argmax(-1))
