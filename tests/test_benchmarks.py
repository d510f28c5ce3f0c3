"""The benchmarks time the models their names say."""

import re

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
