"""Data parallelism: the compiled steps on 4 fake CPU devices train as on 1."""

import os
import subprocess
import sys
import textwrap

import pytest

from bonnkd.cpu import onednn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import sys
    import jax
    import numpy as np
    from bonnkd import train
    from bonnkd.config import overrides
    from bonnkd.data import input_pipeline
    from configs import phase1_bonn_wrn

    assert jax.device_count() == 4, jax.devices()
    jax.config.update('jax_disable_most_optimizations', True)
    config = overrides.override(phase1_bonn_wrn.get_config('smoke'), [
        'model.binarize=inner', 'model.binarize_what=both',
        f'model.conv_impl={sys.argv[1]}'])
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (32, 32, 32, 3), np.uint8),
                rng.integers(0, 10, (32,), np.int32)) for _ in range(3)]

    def run(devices):
      setup = train.setup(config, num_train_examples=3200, devices=devices)
      state = setup.state
      on_devices = setup.put_train_split(input_pipeline.Split(
          np.concatenate([b[0] for b in batches]),
          np.concatenate([b[1] for b in batches])))
      with jax.set_mesh(setup.mesh.mesh):
        for i in range(len(batches)):
          (indices,) = setup.mesh.put_batch(
              np.arange(32 * i, 32 * (i + 1), dtype=np.int32))
          shards = len({s.device for s in indices.addressable_shards})
          state, metrics = setup.train_step_at(state, *on_devices, indices)
      return state, metrics, shards

    one, m1, shards1 = run(jax.devices()[:1])
    four, m4, shards4 = run(jax.devices())
    assert (shards1, shards4) == (1, 4), (shards1, shards4)
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(
        jax.tree.leaves((one.params, one.batch_stats)),
        jax.tree.leaves((four.params, four.batch_stats)))]
    print('MAXDIFF', max(diffs), float(m1['loss']), float(m4['loss']))
''')


@pytest.mark.parametrize('conv_impl', ['native', 'onednn'])
def test_four_devices_match_one_device(conv_impl):
  if conv_impl == 'onednn' and not onednn.available():
    pytest.skip(f'oneDNN: {onednn.why_unavailable()}')
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, '-c', SCRIPT, conv_impl], env=env,
                          cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  line = next(l for l in result.stdout.splitlines()
              if l.startswith('MAXDIFF'))
  max_diff, loss1, loss4 = map(float, line.split()[1:])
  # Same math, different reduction order across devices: float32 rounding.
  assert max_diff < 1e-4, line
  assert abs(loss1 - loss4) < 1e-5, line
