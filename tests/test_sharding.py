"""Data parallelism: 4 fake CPU devices give the same training as 1."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import functools
    import jax
    import numpy as np
    from bonnkd import models, train
    from configs import phase1_bonn_wrn

    assert jax.device_count() == 4, jax.devices()
    jax.config.update('jax_disable_most_optimizations', True)
    config = phase1_bonn_wrn.get_config('smoke')
    model = models.WideResNet(10, 1, binarize='inner', binarize_what='both')
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (32, 32, 32, 3), np.uint8),
                rng.integers(0, 10, (32,), np.int32)) for _ in range(3)]

    def run(devices):
      mesh = train.DataParallelMesh(devices)
      tx = train.create_optimizer(config, lambda step: 0.05)
      state = jax.jit(functools.partial(train.create_train_state, model=model,
                                        tx=tx),
                      out_shardings=mesh.replicated)(jax.random.key(0))
      step = jax.jit(functools.partial(train.train_step,
                                       rng=jax.random.key(1), config=config),
                     in_shardings=(mesh.replicated, mesh.batch, mesh.batch),
                     out_shardings=(mesh.replicated, mesh.replicated))
      with jax.set_mesh(mesh.mesh):
        for images, labels in batches:
          images, labels = mesh.put_batch(images, labels)
          shards = len({s.device for s in images.addressable_shards})
          state, metrics = step(state, images, labels)
      return state, metrics, shards

    one, m1, shards1 = run(jax.devices()[:1])
    four, m4, shards4 = run(jax.devices())
    assert (shards1, shards4) == (1, 4), (shards1, shards4)
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(
        jax.tree_util.tree_leaves((one.params, one.batch_stats)),
        jax.tree_util.tree_leaves((four.params, four.batch_stats)))]
    print('MAXDIFF', max(diffs), float(m1['loss']), float(m4['loss']))
''')


def test_four_devices_match_one_device():
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  result = subprocess.run([sys.executable, '-c', SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  line = next(l for l in result.stdout.splitlines()
              if l.startswith('MAXDIFF'))
  max_diff, loss1, loss4 = map(float, line.split()[1:])
  # Same math, different reduction order across devices: float32 rounding.
  assert max_diff < 1e-4, line
  assert abs(loss1 - loss4) < 1e-5, line
