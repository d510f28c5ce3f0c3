"""End to end: train, log, checkpoint, resume identically, stop on NaN."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bonnkd import train
from bonnkd.data import augment
from bonnkd.data import input_pipeline
from bonnkd.tools import inspect as bonnkd_inspect
from bonnkd.training import evaluation
from bonnkd.training import losses
from bonnkd.training import train_state
from tests.conftest import Interrupt
from tests.conftest import interrupt_at_step
from tests.conftest import read_json
from tests.conftest import read_metrics
from tests.conftest import tiny_config


def test_run_writes_metrics_checkpoints_and_final(finished_run):
  config, workdir, state = finished_run
  # 500 train images / batch 32 -> 15 steps per epoch, 45 in all.
  assert int(state.step) == 45
  records = read_metrics(workdir)
  for r in records:
    assert {'step', 'epoch', 'split', 'loss', 'accuracy', 'wall_time',
            'elapsed_s'} <= set(r)
    assert np.isfinite(r['loss'])
  train_losses = [r['loss'] for r in records if r['split'] == 'train']
  assert train_losses[-1] < train_losses[0]
  val = [r for r in records if r['split'] == 'val']
  assert [r['step'] for r in val] == [15, 30, 45]
  final = read_json(os.path.join(workdir, 'final.json'))
  # The synthetic classes are colours: easy to learn.
  assert final['test_accuracy'] > 0.5
  assert final['val_accuracy'] == max(r['accuracy'] for r in val)
  assert final['test_examples'] == 200 and final['val_examples'] == 100
  assert final['num_params'] == 77_866  # WRN-10-1 + the stem's 16 scales.
  assert final['step'] == 45
  saved = read_json(os.path.join(workdir, 'config.json'))
  assert saved['model'] == config.model.to_dict()
  # tests/conftest.py turns TensorBoard off; test_launch covers it.
  assert not any(f.startswith('events.out') for f in os.listdir(workdir))


def test_progress_is_reported_only_where_the_loop_waits_for_its_steps(
    cifar_tarball, tmp_path, monkeypatch):
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  reported = []
  monkeypatch.setattr(periodic_actions.ReportProgress, '_apply',
                      lambda self, step, t: reported.append(step))
  train.train_and_evaluate(tiny_config(cifar_tarball[0], num_epochs=1.0),
                           str(tmp_path))
  logged = [r['step'] for r in read_metrics(tmp_path)
            if r['split'] == 'train']
  # 15 steps an epoch, metrics every 4: the loop waits for its dispatched
  # steps at 4, 8, 12 and 15 (the epoch's end), and only there is a steps/s
  # true; clu's first call only starts its clock.
  assert logged == [4, 8, 12, 15]
  assert reported == [8, 12, 15]


def test_checkpoint_reads_with_plain_orbax(finished_run):
  _, workdir, state = finished_run
  mngr = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  assert mngr.latest_step() == 45
  restored = mngr.restore(
      mngr.latest_step(),
      args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  np.testing.assert_array_equal(restored['params']['head']['kernel'],
                                state.params['head']['kernel'])


def test_eval_counts_every_example_and_matches_numpy(finished_run,
                                                     cifar_tarball):
  config, _, state = finished_run
  split = input_pipeline.Split(*cifar_tarball[2]).take(130)
  run = train.setup(config, 500)  # The compiled eval step of the run.
  metrics, predictions = evaluation.evaluate(
      run.eval_step, train_state.variables_of(state), split, 64, run.mesh)
  assert metrics['count'] == 130 and predictions.shape == (130,)
  logits = state.apply_fn({'params': state.params,
                           'batch_stats': state.batch_stats},
                          augment.normalize(jnp.asarray(split.images)))
  np.testing.assert_array_equal(predictions, np.argmax(logits, -1))
  np.testing.assert_allclose(metrics['accuracy'],
                             np.mean(predictions == split.labels))


def test_interrupted_run_resumes_to_identical_parameters(
    finished_run, cifar_tarball, tmp_path, monkeypatch):
  config, _, reference = finished_run
  workdir = str(tmp_path)
  # Mid-epoch 2, after the epoch-1 checkpoint at step 15.
  undo = interrupt_at_step(monkeypatch, 20)
  with pytest.raises(Interrupt):
    train.train_and_evaluate(config, workdir)
  # Logged every 4 steps: the last record before the interruption is 20.
  assert max(r['step'] for r in read_metrics(workdir)) == 20
  undo()
  resumed = train.train_and_evaluate(config, workdir)

  assert int(resumed.step) == 45
  for a, b in zip(jax.tree.leaves(reference.params),
                  jax.tree.leaves(resumed.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  # One record per (step, split): the replayed steps are not duplicated.
  keys = [(r['step'], r['split']) for r in read_metrics(workdir)]
  assert len(keys) == len(set(keys))


def test_non_finite_loss_stops_with_step_and_keeps_files(
    cifar_tarball, tmp_path, monkeypatch):
  config = tiny_config(cifar_tarball[0], num_epochs=3.0)
  workdir = str(tmp_path)
  undo = interrupt_at_step(monkeypatch, 16)  # After the first epoch.
  with pytest.raises(Interrupt):
    train.train_and_evaluate(config, workdir)
  undo()
  # Records up to the checkpoint (step 15) are final; later ones are replayed.
  before = [r for r in read_metrics(workdir) if r['step'] <= 15]

  # A loss that turns non-finite from here on. (NaN inputs would not do:
  # XLA:CPU's max(NaN, 0) is 0, so the first ReLU would wash them out.)
  real_cross_entropy = losses.cross_entropy
  monkeypatch.setattr(losses, 'cross_entropy',
                      lambda *a, **k: real_cross_entropy(*a, **k) * jnp.nan)
  # Resumes at 15; the first log after it is step 16 (every 4 steps).
  with pytest.raises(FloatingPointError, match='train loss=nan at step 16'):
    train.train_and_evaluate(config, workdir)
  after = read_metrics(workdir)
  assert after[:len(before)] == before
  assert after[-1]['step'] == 16 and np.isnan(after[-1]['loss'])
  assert ocp.CheckpointManager(
      os.path.join(workdir, 'checkpoints')).latest_step() == 15
  assert not os.path.exists(os.path.join(workdir, 'final.json'))


def test_inspect_reports_steps_params_and_binary_layers(finished_run):
  _, workdir, _ = finished_run
  text = bonnkd_inspect.describe(os.path.join(workdir, 'checkpoints'))
  best = read_json(os.path.join(workdir, 'final.json'))['best_step']
  assert f'latest 45, best by val {best}' in text
  assert '"binarize": "first_conv"' in text
  assert 'stem/modulation' in text and 'total: 77,866' in text
  _, variables = train_state.restore_variables(workdir)
  stem = np.asarray(variables['params']['stem']['kernel'])
  # The smoke model's only 1-bit layer is the stem (first_conv, weights).
  assert '1-bit layers: 1\n' in text
  assert f'  stem: +1 fraction {np.mean(stem >= 0):.3f}' in text
  # The modulation next to XNOR's scale, mean |w| over (kh, kw, C_in).
  ratio = (np.asarray(variables['params']['stem']['modulation'])
           / np.abs(stem).mean(axis=(0, 1, 2)))
  assert (f'modulation / XNOR mean |w| per channel: median '
          f'{np.median(ratio):.3f}, min {ratio.min():.3f}, '
          f'max {ratio.max():.3f}, negative in {np.sum(ratio < 0)} of '
          f'{ratio.size} channels') in text


def test_step_on_device_rows_equals_step_on_host_batch(cifar_tarball):
  # The run's step gathers its batch from the train split held on the
  # devices; the same rows sent from the host give the same update.
  config = tiny_config(cifar_tarball[0])
  run = train.setup(config, 500)
  split = input_pipeline.load_splits(config.data)['train']
  indices = input_pipeline.train_indices(len(split), 3, 32, config.seed)
  on_devices = run.put_train_split(split)
  copy = jax.tree.map(jnp.copy, run.state)  # Both steps donate their state.
  at, metrics_at = run.train_step_at(copy, *on_devices,
                                     *run.mesh.put_batch(indices))
  _, train_rng = jax.random.split(jax.random.key(config.seed))
  host_step = jax.jit(functools.partial(train.train_step, rng=train_rng,
                                        config=config))
  host, metrics = host_step(run.state, *run.mesh.put_batch(
      split.images[indices], split.labels[indices]))
  for a, b in zip(jax.tree.leaves(at), jax.tree.leaves(host)):
    np.testing.assert_array_equal(a, b)
  assert float(metrics_at['loss']) == float(metrics['loss'])


def test_model_selection_run_reports_val_only(cifar_tarball, tmp_path,
                                              monkeypatch):
  # eval_test=False (the plans that choose presets): no test number is
  # computed or written; the test split is never evaluated.
  evaluated = []
  real_evaluate = evaluation.evaluate

  def recording_evaluate(eval_fn, variables, split, *args):
    evaluated.append(len(split))
    return real_evaluate(eval_fn, variables, split, *args)

  monkeypatch.setattr(evaluation, 'evaluate', recording_evaluate)
  config = tiny_config(cifar_tarball[0], num_epochs=1.0, eval_test=False)
  train.train_and_evaluate(config, str(tmp_path))
  final = read_json(os.path.join(tmp_path, 'final.json'))
  assert 'val_accuracy' in final
  assert not [k for k in final if k.startswith('test')]
  assert 'test' not in {r['split'] for r in read_metrics(str(tmp_path))}
  assert set(evaluated) == {100}  # Only the 100 val images, never the 200.

  # Chosen on val, the same run reads its test split once: its best
  # checkpoint, no step trained again.
  steps = [r['step'] for r in read_metrics(str(tmp_path))
           if r['split'] == 'train']
  evaluated.clear()
  chosen = tiny_config(cifar_tarball[0], num_epochs=1.0, eval_test=True,
                       force_final_eval=True)
  train.train_and_evaluate(chosen, str(tmp_path))
  again = read_json(os.path.join(tmp_path, 'final.json'))
  assert (again['best_step'], again['val_accuracy'], again['step']) == (
      final['best_step'], final['val_accuracy'], final['step'])
  assert again['test_examples'] == 200 and 0 <= again['test_accuracy'] <= 1
  assert evaluated == [100, 200]
  records = read_metrics(str(tmp_path))
  assert [r['step'] for r in records if r['split'] == 'train'] == steps
  assert [r['step'] for r in records if r['split'] == 'test'] == [
      final['best_step']]
