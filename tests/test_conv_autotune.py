"""The CPU conv lowering is measured per machine, cached, and then used."""

import json

import jax
import jax.numpy as jnp
import pytest

from bonnkd import models
from bonnkd.binary import layers
from bonnkd.cpu import conv_autotune
from bonnkd.cpu import machine
from bonnkd.cpu import onednn


@pytest.fixture
def fresh_plan(monkeypatch, tmp_path):
  monkeypatch.setenv('BONNKD_CACHE_DIR', str(tmp_path))
  monkeypatch.setattr(layers, '_CPU_CONV_PLAN', {})


def test_conv_shapes_lists_each_distinct_conv_once():
  model = models.WideResNet(depth=10, width=1)
  shapes = conv_autotune.conv_shapes(model, batch_size=8)
  # WRN-10-1, in the order the forward calls them: stem 3->16 at 32x32;
  # group0: 16->16 twice (one shape); group1: 16->32 strided 3x3, the 1x1
  # shortcut, 32->32; group2 likewise.
  assert shapes == [
      ((8, 32, 32, 3), (3, 3, 3, 16), (1, 1)),
      ((8, 32, 32, 16), (3, 3, 16, 16), (1, 1)),
      ((8, 32, 32, 16), (3, 3, 16, 32), (2, 2)),
      ((8, 32, 32, 16), (1, 1, 16, 32), (2, 2)),
      ((8, 16, 16, 32), (3, 3, 32, 32), (1, 1)),
      ((8, 16, 16, 32), (3, 3, 32, 64), (2, 2)),
      ((8, 16, 16, 32), (1, 1, 32, 64), (2, 2)),
      ((8, 8, 8, 64), (3, 3, 64, 64), (1, 1)),
  ]


def test_tune_measures_once_per_machine_and_installs_the_winner(
    fresh_plan, monkeypatch):
  calls = []

  def fake_time(x_shape, kernel_shape, strides, impl, repeats=3):
    calls.append((x_shape, impl))
    # im2col "wins" on the stem only.
    return 1.0 if (impl == 'im2col') == (x_shape[-1] == 3) else 2.0

  monkeypatch.setattr(conv_autotune, 'time_lowering', fake_time)
  model = models.WideResNet(depth=10, width=1)
  plan = conv_autotune.tune(model, batch_size=8)
  # Every lowering of the 8 shapes (oneDNN's too, where it is built).
  assert len(calls) == len(conv_autotune.candidates()) * 8
  stem = layers.conv_shape_key((8, 32, 32, 3), (3, 3, 3, 16), (1, 1))
  assert plan[stem] == 'im2col'
  assert sorted(set(plan.values())) == ['im2col', 'native']
  with open(conv_autotune.cache_path()) as f:
    cached = json.load(f)
  assert cached == {conv_autotune.cache_key(): plan}
  assert conv_autotune.cache_key().startswith(machine.key())

  # Cached: nothing measured again.
  calls.clear()
  assert conv_autotune.tune(model, batch_size=8) == plan and not calls

  # The model now lowers the stem to one GEMM and the other convs natively.
  jaxpr = str(jax.make_jaxpr(lambda x: model.init(
      jax.random.key(0), x))(jnp.zeros((2, 32, 32, 3))))
  assert jaxpr.count('dot_general') == 1 + 1  # The stem and the head.
  # 9 convs (stem, 2 in group 0, 3 in groups 1 and 2), all but the stem.
  assert jaxpr.count('conv_general_dilated') == 8


@pytest.mark.skipif(not onednn.available(), reason='oneDNN not built here')
def test_choices_made_with_one_onednn_thread_are_not_those_for_all_cores(
    fresh_plan, monkeypatch):
  monkeypatch.setattr(conv_autotune, 'time_lowering',
                      lambda *args, **kwargs: 1.0)
  model = models.WideResNet(depth=10, width=1)
  keys = []
  try:
    for threads in (1, 0, 1):
      onednn.set_threads(threads)
      conv_autotune.tune(model, batch_size=8)
      keys.append(conv_autotune.cache_key())
  finally:
    onednn.set_threads(onednn.DEFAULT_THREADS)
  assert keys[0] == keys[2] != keys[1]
  macs = onednn.DEFAULT_PARALLEL_MACS
  assert keys[0].endswith(f'oneDNN threads 1 from {macs} MACs')
  assert keys[1].endswith(f'oneDNN threads all from {macs} MACs')
  with open(conv_autotune.cache_path()) as f:
    assert sorted(json.load(f)) == sorted(set(keys))


def test_explicit_lowering_is_not_tuned(fresh_plan, monkeypatch):
  monkeypatch.setattr(conv_autotune, 'time_lowering',
                      lambda *a, **k: pytest.fail('measured'))
  assert conv_autotune.tune(
      models.WideResNet(depth=10, width=1, conv_impl='native'), 8) == {}


def test_time_lowering_runs_every_lowering_of_the_same_conv():
  # The lowerings compute the same convolution (tests/test_layers.py and
  # tests/test_onednn.py check the values); here each is timed.
  for impl in conv_autotune.candidates():
    assert conv_autotune.time_lowering((2, 8, 8, 4), (3, 3, 4, 8), (1, 1),
                                       impl, repeats=1) > 0


