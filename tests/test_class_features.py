"""bonnkd.tools.class_features: the features BONN's feature loss sees, and
their variances within each class."""

import numpy as np

from bonnkd import models
from bonnkd.data import augment
from bonnkd.data import input_pipeline
from bonnkd.run import run_dir
from bonnkd.tools import class_features
from bonnkd.training import train_state


def test_class_variances_by_hand():
  f = np.array([[1.0, 0.0], [3.0, 4.0], [5.0, 5.0]], np.float32)
  y = np.array([0, 0, 2])
  v = class_features.class_variances(f, y, 3)
  # Class 0: values (1, 3) and (0, 4) around means 2 and 2: (1, 4).
  np.testing.assert_allclose(v[0], [1.0, 4.0])
  assert np.all(np.isnan(v[1]))  # No example of class 1.
  np.testing.assert_allclose(v[2], [0.0, 0.0])  # One example: no spread.
  text = class_features.describe(f, y, 3, floors=(0.5, 2.0))
  # Finite within-class variances: 1, 4, 0, 0.
  assert 'below 0.5: 2 of 4' in text and 'below 2: 3 of 4' in text


def test_kurtosis_by_hand_and_against_a_gaussian():
  # Dimension 0: values (0, 0, 0, 4): mean 1, central moments m2 = 3,
  # m4 = (1 + 1 + 1 + 81) / 4 = 21, kurtosis 21 / 9. Dimension 1 constant.
  f = np.array([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0], [4.0, 2.0]])
  k = class_features.kurtosis(f)
  np.testing.assert_allclose(k[0], 21 / 9)
  assert np.isnan(k[1])
  gaussian = np.random.default_rng(0).normal(size=(200_000, 2))
  np.testing.assert_allclose(class_features.kurtosis(gaussian), 3, atol=0.05)
  text = class_features.describe(f, np.zeros(4, int), 1, floors=())
  assert 'constant dimensions: 1 of 2' in text
  assert f'kurtosis over the split, per non-constant dimension (3 for a ' \
      f'Gaussian): min {21 / 9:.4g}' in text
  constant = class_features.describe(np.ones((4, 2)), np.zeros(4, int), 1,
                                     floors=())
  assert 'constant dimensions: 2 of 2' in constant
  assert 'per non-constant dimension (3 for a Gaussian): none' in constant


def test_features_are_what_the_classifier_reads(finished_run):
  config, workdir, _ = finished_run
  run = run_dir.RunDir.open(workdir)
  split = input_pipeline.load_splits(config.data)['val']
  features = class_features.features_of(run, split, batch_size=16)
  model = models.create_model(config.model, dtype=config.dtype)
  _, variables = train_state.restore_variables(run, 'best')
  logits = model.apply(variables, augment.normalize(split.images))
  head = variables['params']['head']
  np.testing.assert_allclose(features @ head['kernel'] + head['bias'],
                             logits, rtol=1e-4, atol=1e-4)


def test_command_prints_the_statistics(finished_run, capsys):
  _, workdir, _ = finished_run
  assert class_features.main([workdir, '--floors', '1e-4,1']) == 0
  out = capsys.readouterr().out
  assert 'variance within a class' in out and 'below 1:' in out
