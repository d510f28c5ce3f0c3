"""Runs one step of a test in a process of its own.

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
    python -m tests.topology_worker ACTION DATA WORKDIR [OTHER]

The device count of a process is fixed when JAX starts, so each topology
gets its own process (tests/test_portability.py); and a process that kills
itself takes nobody else with it (tests/test_faults.py). Actions:

* ``train``: a whole 2-epoch phase-1 smoke run in WORKDIR;
* ``interrupt``: a 3-epoch run stopped at step 20 (checkpoint at 15);
* ``resume``: the same command again: finishes the 3-epoch run;
* ``use``: inspect and report the finished run WORKDIR here, and train a
  1-epoch student with it as the teacher in OTHER;
* ``kill_while_saving``: the 3-epoch run, killed (SIGKILL) at step 30 after
  orbax committed the checkpoint and before its digest was written.
"""

import json
import os
import signal
import sys

import jax

from bonnkd import train
from bonnkd.data import input_pipeline
from bonnkd.run import checkpoints
from bonnkd.tools import inspect as bonnkd_inspect
from bonnkd.tools import report
from tests.conftest import tiny_config

jax.config.update('jax_disable_most_optimizations', True)


class Interrupt(Exception):
  pass


def interrupt(config, workdir, at_step=20):
  real_batch = input_pipeline.train_indices

  def dying_batch(num_examples, step, *args, **kwargs):
    if step == at_step:
      raise Interrupt
    return real_batch(num_examples, step, *args, **kwargs)

  input_pipeline.train_indices = dying_batch
  try:
    train.train_and_evaluate(config, workdir)
  except Interrupt:
    pass
  finally:
    input_pipeline.train_indices = real_batch


def use(data, workdir, student_dir):
  """What another machine does with a finished run: inspect, report, teach."""
  text = bonnkd_inspect.describe(workdir)
  rows = report.write_report([workdir], os.path.join(student_dir + '_report'))
  config = tiny_config(data, 'phase2_kd_student', num_epochs=1.0,
                       **{'kd.teacher_workdir': workdir})
  train.train_and_evaluate(config, student_dir)
  print('RESULT', json.dumps({'inspect': text.splitlines()[1],
                              'report_test_accuracy': rows[0]['test_accuracy'],
                              'devices': jax.device_count()}))


def kill_while_saving(config, workdir, at_step=30):
  real_write_digest = checkpoints._write_digest  # pylint: disable=protected-access

  def write_or_die(step_dir):
    if os.path.basename(step_dir) == str(at_step):
      os.kill(os.getpid(), signal.SIGKILL)
    real_write_digest(step_dir)

  checkpoints._write_digest = write_or_die  # pylint: disable=protected-access
  train.train_and_evaluate(config, workdir)


def main(action, data, workdir, other=''):
  if action == 'train':
    train.train_and_evaluate(tiny_config(data, num_epochs=2.0), workdir)
  elif action == 'interrupt':
    interrupt(tiny_config(data, num_epochs=3.0), workdir)
  elif action == 'resume':
    train.train_and_evaluate(tiny_config(data, num_epochs=3.0), workdir)
  elif action == 'use':
    use(data, workdir, other)
  elif action == 'kill_while_saving':
    kill_while_saving(tiny_config(data, num_epochs=3.0), workdir)
  else:
    raise ValueError(action)
  print('DEVICES', jax.device_count())


if __name__ == '__main__':
  main(*sys.argv[1:])
