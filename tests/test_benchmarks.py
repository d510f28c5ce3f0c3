"""The benchmarks time the models their names say, and read profiles right."""

import collections
import re

import jax
import jax.numpy as jnp
import pytest

from bonnkd import config_lib
from benchmarks import throughput
from benchmarks import torch_compare


@pytest.mark.parametrize('table', [torch_compare.MODELS, throughput.MODELS],
                         ids=['torch_compare', 'throughput'])
def test_wrn_names_match_their_configs(table):
  # A name such as 'wrn16_4_b64' is the row label of a committed figure: it
  # must keep timing WRN-16-4 at batch 64 when a preset's model is re-chosen
  # (the cpu preset went from WRN-16-1 to WRN-10-2).
  checked = 0
  for name, (spec, overrides) in table.items():
    match = re.fullmatch(r'wrn(\d+)_(\d+)(?:_b(\d+))?(?:_\w+)?', name)
    if not match:
      continue
    config = config_lib.override(config_lib.load(spec), overrides)
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
}
'''


def test_contraction_libraries_name_who_computes_each_convolution():
  from benchmarks import profile_step  # pylint: disable=g-import-not-at-top
  found = profile_step.contraction_libraries(_HLO)
  # Two YNNPACK fusions (a 3x3 conv, a weight gradient whose window spans the
  # 16x16 map), one convolution left to XLA, one oneDNN custom call; the
  # transpose fusion holds no contraction and counts nowhere.
  assert found == {'YNNPACK': {'convolution': 1, 'weight-grad': 1},
                   'XLA (Eigen)': {'convolution': 1},
                   'oneDNN': {'convolution': 1}}


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
