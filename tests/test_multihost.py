"""Several hosts: 2 CPU processes on one coordinator train as 1 process.

Both processes run the README's command with ``--coordinator_address``
(jax.distributed; cross-process collectives on CPU are gloo's). Each feeds
its half of the global batch of 32; the parameters they end with must equal
those of a 1-process run of the same global batch, up to float32 rounding.
"""

import socket

import jax
import numpy as np

from bonnkd.training import train_state
from tests.conftest import read_json
from tests.conftest import start_launch


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def launch(workdir, data, *extra):
  # 0.4 epochs of 15 steps: 6 steps. One lowering for both: a multi-process
  # job keeps the native conv, a single process would measure its own.
  return start_launch(workdir, data, '--config.num_epochs=0.4',
                      '--config.model.conv_impl=native',
                      '--config.optim.warmup_epochs=0.1',
                      '--config.tensorboard=False', *extra)


def test_two_processes_train_as_one(cifar_tarball, tmp_path):
  data = cifar_tarball[0]
  address = f'localhost:{free_port()}'
  procs = [launch(tmp_path / 'two', data, f'--coordinator_address={address}',
                  '--num_processes=2', f'--process_id={i}') for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  one = launch(tmp_path / 'one', data)
  out = one.communicate(timeout=600)[0]
  assert one.returncode == 0, out[-3000:]

  assert read_json(tmp_path / 'two' / 'final.json')['devices'] == '2x cpu'
  step_two, two = train_state.restore_variables(tmp_path / 'two', 'latest')
  step_one, one = train_state.restore_variables(tmp_path / 'one', 'latest')
  assert step_two == step_one == 6
  for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one)):
    # Same batches, same augmentation; only the reduction order differs.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
