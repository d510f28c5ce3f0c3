"""The benchmarks time the models their names say, and read profiles right."""

import collections
import importlib
import json
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import batch_norm_bench
from benchmarks import binary_conv_bench
from benchmarks import conv_bench
from benchmarks import profile_step
from benchmarks import throughput
from benchmarks import torch_compare
from benchmarks import train_step_bench
from benchmarks import xla_flags_bench
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import onednn


@pytest.mark.parametrize('table', [torch_compare.MODELS, throughput.MODELS],
                         ids=['torch_compare', 'throughput'])
def test_wrn_names_match_their_configs(table):
  # A name such as 'wrn16_4_b64' is the row label of a committed figure: it
  # must keep timing WRN-16-4 at batch 64 when a preset's model is re-chosen
  # (the cpu preset went from WRN-16-1 to WRN-10-2).
  checked = 0
  for name, (spec, items) in table.items():
    match = re.fullmatch(r'wrn(\d+)_(\d+)(?:_b(\d+))?(?:_\w+)?', name)
    if not match:
      continue
    config = overrides.override(files.load(spec), items)
    depth, width, batch = match.groups()
    assert (config.model.depth, config.model.width) == (int(depth),
                                                        int(width)), name
    if batch:
      assert config.batch_size == int(batch), name
    checked += 1
  assert checked >= 3


def test_profile_splits_the_wall_time_no_operation_accounts_for():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  ops = [(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]  # overlapping: 4 ms covered
  assert profile_step.union_length(ops) == 4.0
  # The executor ran 0-8 ms of a 10 ms step: 4 ms of it under no named
  # operation (untraced), 2 ms outside it (host).
  assert profile_step.wall_split(ops, [(0.0, 8.0)], 10.0) == {
      'untraced': 4.0, 'host': 2.0}
  # No executor spans in the trace: the 6 ms not covered are all host.
  assert profile_step.wall_split(ops, [], 10.0) == {'untraced': 0.0,
                                                     'host': 6.0}


# Lines of a compiled conv-and-gradient step as XLA:CPU prints it (jax 0.10.2),
# shortened; a fused computation, then the step's own operations.
_HLO = '''
%fused_computation (param_0: f32[32,16,16,8], param_1: f32[16,16,8,32]) -> f32[32,3,3,32] {
  ROOT %convolution.2 = f32[32,3,3,32]{3,2,1,0} convolution(%param_0, %param_1), window={size=16x16 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}
%fused_computation.2 (param_0.2: f32[8,16,16,32], param_1.2: f32[3,3,32,32]) -> f32[8,16,16,32] {
  ROOT %conv_general_dilated.0 = f32[8,16,16,32]{3,2,1,0} convolution(%param_0.2, %param_1.2), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}
%fused_computation.4 (param_0.7: f32[8,16,16,32]) -> f32[32,16,16,8] {
  ROOT %transpose.1 = f32[32,16,16,8]{3,2,1,0} transpose(%param_0.7), dimensions={3,1,2,0}
}
ENTRY %main.1 (x.1: f32[8,16,16,32], k.1: f32[3,3,32,32]) -> (f32[8,16,16,32], f32[3,3,32,32]) {
  %transpose_copy_fusion.1 = f32[32,16,16,8]{3,2,1,0} fusion(%x.1), kind=kLoop, calls=%fused_computation.4
  %ynn_fusion.2 = f32[8,16,16,32]{3,2,1,0} fusion(%x.1, %k.1), kind=kCustom, calls=%fused_computation.2, backend_config={"fusion_config":{"kind":"__ynn_fusion"}}
  %ynn_fusion = f32[32,3,3,32]{3,2,1,0} fusion(%transpose_copy_fusion.1, %x.1), kind=kCustom, calls=%fused_computation, backend_config={"fusion_config":{"kind":"__ynn_fusion"}}
  %convolution.3 = f32[8,16,16,32]{3,2,1,0} convolution(%ynn_fusion.2, %k.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
  %custom-call = f32[8,16,16,32]{3,2,1,0} custom-call(%x.1, %k.1), custom_call_target="__onednn$convolution"
  %ffi_call.39 = f32[3,3,32,32]{3,2,1,0} custom-call(%x.1, %convolution.3), custom_call_target="bonnkd_onednn_conv_bwd_weights", metadata={op_name="jit(train_step)/transpose(jvp(WideResNet))/group0_block0/conv2/ffi_call"}
  %ffi_call.26 = f32[8,16,16,32]{3,2,1,0} custom-call(%x.1, %k.1), custom_call_target="bonnkd_onednn_conv_fwd", metadata={op_name="jit(train_step)/jvp(WideResNet)/group0_block0/conv2/ffi_call"}
  %wrapped_add.9 = f32[8,16,16,32]{3,2,1,0} add(%ffi_call.26, %x.1), metadata={op_name="jit(train_step)/jvp(WideResNet)/group0_block0/add"}
  %add_rsqrt_fusion.5 = f32[32]{0} add(%k.1, %k.1), metadata={op_name="jit(train_step)/jvp(WideResNet)/group0_block0/bn2/add"}
}
'''


def test_contraction_libraries_name_who_computes_each_convolution():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  found = profile_step.contraction_libraries(_HLO)
  # Two YNNPACK fusions (a 3x3 conv, a weight gradient whose window spans the
  # 16x16 map), one convolution left to XLA, one oneDNN custom call; the
  # transpose fusion holds no contraction and counts nowhere; bonnkd's own
  # oneDNN calls by their targets (bonnkd.cpu.onednn).
  assert found == {'YNNPACK': {'convolution': 1, 'weight-grad': 1},
                   'XLA (Eigen)': {'convolution': 1},
                   'oneDNN': {'convolution': 1},
                   'oneDNN (bonnkd)': {'convolution': 1, 'weight-grad': 1}}


def test_bonnkd_onednn_calls_count_as_convolutions_forward_and_backward():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  names = profile_step._op_names(_HLO)  # pylint: disable=protected-access
  assert profile_step.categorize('ffi_call.26', *names['ffi_call.26']) == (
      'conv forward')
  assert profile_step.categorize('ffi_call.39', *names['ffi_call.39']) == (
      'conv backward')


def test_a_blocks_forward_sum_is_a_residual_add_and_bns_add_is_not():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  names = profile_step._op_names(_HLO)  # pylint: disable=protected-access
  assert profile_step.categorize('wrapped_add.9', *names['wrapped_add.9']) == (
      'residual adds')
  assert profile_step.categorize('add_rsqrt_fusion.5',
                                 *names['add_rsqrt_fusion.5']) == 'BatchNorm'


def test_contraction_libraries_count_every_convolution_of_a_compiled_step():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  def loss(x, k):
    y = jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(y ** 2)
  x, k = jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 32))
  hlo = jax.jit(jax.grad(loss, (0, 1))).lower(x, k).compile().as_text()
  counts = collections.Counter()
  for kinds in profile_step.contraction_libraries(hlo).values():
    counts.update(kinds)
  # Whichever library XLA picks (it depends on XLA_FLAGS and the version):
  # the forward conv, the input gradient (a 3x3 conv) and the weight gradient.
  assert counts == {'convolution': 2, 'weight-grad': 1}


# Each benchmark's main at its smallest size, so that none stops working
# unnoticed (their figures come from full-size runs, results/README.md).

SMOKE = 'configs/phase1_bonn_wrn.py:smoke'


def table_rows(out: str, first_word: str) -> list[list[str]]:
  """The printed rows that start with ``first_word``, split on spaces."""
  return [line.split() for line in out.splitlines()
          if line.split()[:1] == [first_word]]


def test_seconds_per_call_repeats_until_the_round_lasts_min_seconds():
  calls = []

  def sleeps_1ms():
    calls.append(1)
    time.sleep(0.001)
    return 0

  # One untimed call, then exactly `repeats` timed ones.
  assert conv_bench.seconds_per_call(sleeps_1ms, repeats=3) >= 0.001
  assert len(calls) == 4
  calls.clear()
  # Then until the timed calls last 30 ms: at most 31 of >= 1 ms each.
  assert conv_bench.seconds_per_call(sleeps_1ms, repeats=1,
                                     min_seconds=0.03) >= 0.001
  assert 2 < len(calls) <= 32


def test_conv_bench_times_each_lowering_per_shape(capsys):
  conv_bench.main(['--batch', '2', '--repeats', '1', '--rounds', '1',
                   '--shapes', '2', '--impls', 'native,im2col'])
  rows = [line.split() for line in capsys.readouterr().out.splitlines()
          if line.strip().startswith('32^2')]
  assert len(rows) == 2
  for row in rows:
    native_ms, im2col_ms, ratio = float(row[4]), float(row[5]), row[6]
    assert native_ms > 0 and im2col_ms > 0
    assert ratio == f'{native_ms / im2col_ms:.2f}x' or abs(
        float(ratio[:-1]) - native_ms / im2col_ms) < 0.02
    assert row[-1] in ('native', 'im2col', 'onednn')


def test_batch_norm_bench_times_flax_against_bonnkd(capsys):
  batch_norm_bench.main(['--models', 'wrn16_1_b128', '--rounds', '1',
                         '--min_round_s', '0'])
  rows = table_rows(capsys.readouterr().out, 'wrn16_1_b128')
  assert [row[1] for row in rows] == ['128x32x32x16', '128x16x16x32',
                                      '128x8x8x64']
  for row in rows:
    flax_ms, bonnkd_ms = float(row[2]), float(row[3])
    assert abs(float(row[4][:-1]) - flax_ms / bonnkd_ms) < 0.01 + 0.01 * (
        flax_ms / bonnkd_ms)


def test_binary_conv_bench_times_the_packed_conv_against_xla(capsys):
  binary_conv_bench.main(['--models', 'wrn16_3', '--batch', '1', '--shapes',
                          '2', '--repeats', '1', '--rounds', '1', '--impls',
                          'packed,xla'])
  rows = [line.split() for line in capsys.readouterr().out.splitlines()
          if line.strip().startswith('wrn16_3')]
  # The first two W1A1 shapes of WRN-16-3: 48 -> 48, then 48 -> 96 stride 2.
  assert [row[3:6] for row in rows] == [['48', '48', '1'], ['48', '96', '2']]
  for row in rows:
    packed_ms, xla_ms = float(row[6]), float(row[7])
    assert abs(float(row[8][:-1]) - xla_ms / packed_ms) < 0.01 + 0.01 * (
        xla_ms / packed_ms)


def test_binary_conv_bench_chain_runs_each_input_in_order():
  layer = lambda x: jnp.cumsum(x * x, axis=-1)
  xs = tuple(jnp.arange(6.0).reshape(2, 3) + k for k in range(3))
  forward = binary_conv_bench.chained(layer, 3)
  for y, x in zip(forward(xs), xs):
    np.testing.assert_array_equal(y, np.cumsum(np.square(x), axis=-1))
  # Each layer after the first waits for the previous one's output.
  hlo = forward.lower(xs).as_text()
  assert hlo.count('optimization_barrier') == 2


def test_throughput_times_each_dtype_and_feed(capsys):
  throughput.main(['--model', 'wrn16_1_cpu', '--dtype', 'float32',
                   '--data', 'host,device', '--steps', '1', '--rounds', '1',
                   '--set', 'batch_size=8', '--set', 'model.depth=10'])
  rows = table_rows(capsys.readouterr().out, 'wrn16_1_cpu')
  assert [row[2] for row in rows] == ['host', 'device']
  assert all(float(row[3]) > 0 for row in rows)


def test_train_step_bench_compares_lowerings(capsys):
  impls, expected = 'native,im2col', {'native', 'im2col'}
  if onednn.available():
    impls, expected = 'native,onednn', {'native', 'onednn/t1', 'onednn/t0'}
  train_step_bench.main(['--config', SMOKE, '--impl', impls, '--steps', '1',
                         '--rounds', '2', '--onednn_threads', '1,0'])
  out = capsys.readouterr().out
  rates = {line.split(':')[0].strip(): line for line in out.splitlines()
           if 'img/s' in line}
  assert set(rates) == expected
  assert '(1.00x)' in rates['native']


def test_xla_flags_bench_times_each_candidate_in_a_child(capsys):
  xla_flags_bench.main(['--config', SMOKE, '--candidates',
                        'default,no_ynn_conv', '--steps', '1', '--rounds',
                        '1'])
  out = capsys.readouterr().out
  rows = {name: table_rows(out, name) for name in ('default', 'no_ynn_conv')}
  assert all(len(r) == 1 and float(r[0][1]) > 0 for r in rows.values())
  assert float(rows['default'][0][2]) == 1.0  # The ratio's base.


def test_profile_step_writes_its_categories(tmp_path, capsys):
  out = tmp_path / 'profile.json'
  profile_step.main(['--config', SMOKE, '--steps', '1', '--out', str(out)])
  assert 'ms per step' in capsys.readouterr().out
  with open(out) as f:
    profile = json.load(f)
  assert profile['ms_per_step'] > 0
  assert set(profile['categories_ms']) == set(profile_step.CATEGORIES)


def test_torch_compare_puts_both_side_by_side(capsys):
  pytest.importorskip('torch', reason='PyTorch is the [bench] extra')
  torch_compare.main(['--model', 'student_b128', '--steps', '1',
                      '--rounds', '1', '--set', 'batch_size=8'])
  rows = table_rows(capsys.readouterr().out, 'student_b128')
  assert len(rows) == 1 and all(float(v) > 0 for v in rows[0][1:])


@pytest.mark.parametrize('name', ['torch_compare', 'deploy_torch'])
def test_a_benchmark_against_pytorch_without_it_is_one_error(
    name, monkeypatch, capsys, tmp_path):
  module = importlib.import_module(f'benchmarks.{name}')
  monkeypatch.setitem(sys.modules, 'torch', None)  # As if not installed.
  argv = ['--model', 'student_b128'] if name == 'torch_compare' else [
      str(tmp_path / 'model.npz')]
  with pytest.raises(SystemExit) as e:
    module.main(argv)
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert err.startswith('error: PyTorch is not installed')
  assert "pip install -e '.[bench]'" in err and err.count('\n') == 1
