"""Shared fixtures: tiny synthetic CIFAR-10 files in each supported format."""

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile

import jax
import ml_collections
import numpy as np
import pytest

from bonnkd.config import overrides
from bonnkd.data import input_pipeline

# Compile fast: these tests check behaviour, not speed.
jax.config.update('jax_disable_most_optimizations', True)
# The conv lowering autotune caches per machine under $HOME; tests (and the
# processes they start, which inherit it) keep theirs in a scratch folder.
os.environ['BONNKD_CACHE_DIR'] = tempfile.mkdtemp(prefix='bonnkd_cache_')
# The runs launch.py starts here (on 500 images, whose schedules read as
# CIFAR-10's would be timed) keep XLA's flags; tests/test_xla_cpu_flags.py
# asks for the start-up timing itself.
os.environ['BONNKD_XLA_CPU_FLAGS'] = 'default'

REAL_DATA_ENV = 'BONNKD_CIFAR10_DIR'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_cifar(num_train: int, num_test: int, seed: int = 0):
  """Learnable fake CIFAR: class c is noise around a class-specific colour."""
  rng = np.random.default_rng(seed)
  colours = rng.integers(30, 226, (10, 3))

  def make(n):
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    noise = rng.integers(-30, 31, (n, 32, 32, 3))
    images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255)
    return images.astype(np.uint8), labels.astype(np.int32)

  return make(num_train), make(num_test)


def write_cifar_tarball(path, train, test):
  """Writes the official cifar-10-python.tar.gz layout (5 train batches)."""

  def add(tar, name, images, labels):
    payload = {b'data': images.transpose(0, 3, 1, 2).reshape(len(images), -1),
               b'labels': [int(y) for y in labels]}
    blob = pickle.dumps(payload)
    info = tarfile.TarInfo(f'cifar-10-batches-py/{name}')
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))

  with tarfile.open(path, 'w:gz') as tar:
    for i, idx in enumerate(np.array_split(np.arange(len(train[1])), 5)):
      add(tar, f'data_batch_{i + 1}', train[0][idx], train[1][idx])
    add(tar, 'test_batch', *test)
  return path


def write_cifar_binary_archive(path, train, test):
  """Writes the official cifar-10-binary.tar.gz (what tfds downloads).

  Each record is 1 label byte + 3,072 pixel bytes (the R, G, B planes of
  32x32), in data_batch_1..5.bin and test_batch.bin under
  cifar-10-batches-bin/, with the class names in batches.meta.txt.
  """

  def add(tar, name, blob):
    info = tarfile.TarInfo(f'cifar-10-batches-bin/{name}')
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))

  def records(images, labels):
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], planes],
                          axis=1).tobytes()

  with tarfile.open(path, 'w:gz') as tar:
    for i, idx in enumerate(np.array_split(np.arange(len(train[1])), 5)):
      add(tar, f'data_batch_{i + 1}.bin', records(train[0][idx], train[1][idx]))
    add(tar, 'test_batch.bin', records(*test))
    add(tar, 'batches.meta.txt',
        ('\n'.join(input_pipeline.CLASS_NAMES) + '\n').encode())
  return path


@pytest.fixture(scope='session')
def cifar_tarball(tmp_path_factory):
  """A 600-train / 200-test synthetic tarball; returns (path, train, test)."""
  train, test = synthetic_cifar(600, 200)
  path = tmp_path_factory.mktemp('tarball') / 'cifar-10-python.tar.gz'
  write_cifar_tarball(path, train, test)
  return str(path), train, test


@pytest.fixture(scope='session')
def finished_run(cifar_tarball, tmp_path_factory):
  """An uninterrupted 3-epoch phase-1 smoke run on the synthetic tarball."""
  from bonnkd import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('run'))
  config = tiny_config(cifar_tarball[0], num_epochs=3.0)
  state = train.train_and_evaluate(config, workdir)
  return config, workdir, state


@pytest.fixture
def real_cifar_dir():
  path = os.environ.get(REAL_DATA_ENV, '')
  if not path or not os.path.isdir(path):
    pytest.skip(f'Set {REAL_DATA_ENV} to the CIFAR-10 image-folder copy '
                '(e.g. ../shared/data/cifar10-jpeg) to run this test.')
  return path


def data_config(source, path, num_val=50):
  """A ``config.data`` reading ``path`` as ``source``, every image kept."""
  return ml_collections.ConfigDict(dict(
      source=source, dir=str(path), num_val=num_val, split_seed=0,
      train_limit=-1, eval_limit=-1))


def write_image_folder(root, per_class=3):
  """split/class/NNNN.png, 32x32; pixel (5, 5) is class * 20 + index."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split in ('train', 'test'):
    for label, name in enumerate(input_pipeline.CLASS_NAMES):
      os.makedirs(root / split / name)
      for i in range(per_class):
        pixels = np.full((32, 32, 3), label * 20 + i, np.uint8)
        pixels[0, 0] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(root / split / name / f'{i:04d}.png')
  return root


def tiny_config(data_path: str, config_name: str = 'phase1_bonn_wrn',
                **items):
  """The smoke preset of ``configs/<config_name>.py`` on the synthetic data."""
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f'configs.{config_name}').get_config(
      'smoke')
  config.data.source = 'tarball'
  config.data.dir = data_path
  config.data.num_val = 100
  config.data.train_limit = -1
  config.data.eval_limit = -1
  config.tensorboard = False
  return overrides.override(config, items.items())


def read_json(path):
  with open(path) as f:
    return json.load(f)


def read_metrics(workdir):
  """The records of a run's metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


class Interrupt(Exception):
  """Stands for a run stopped from outside (Ctrl-C, a lost machine)."""


def interrupt_at_step(monkeypatch, step: int):
  """Makes a run raise :class:`Interrupt` when it asks for ``step``'s rows.

  Returns:
    ``undo()``, which gives the run its batches back (to resume it).
  """
  real = input_pipeline.train_indices

  def dying(num_examples, at, *args, **kwargs):
    if at == step:
      raise Interrupt
    return real(num_examples, at, *args, **kwargs)

  monkeypatch.setattr(input_pipeline, 'train_indices', dying)
  return lambda: monkeypatch.setattr(input_pipeline, 'train_indices', real)


def start_launch(workdir, data, *extra, env=None):
  """Starts ``launch.py`` on the phase-1 smoke preset and the synthetic data.

  500 train images / batch 32 = 15 steps an epoch. Returns the Popen; its
  stdout holds stderr too. ``env``: variables set beside the environment's.
  """
  cmd = [sys.executable, 'launch.py',
         '--config', 'configs/phase1_bonn_wrn.py:smoke',
         '--workdir', str(workdir),
         '--config.data.source=tarball', f'--config.data.dir={data}',
         '--config.data.train_limit=-1', '--config.data.num_val=100', *extra]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, JAX_PLATFORMS='cpu',
                                   **(env or {})))


def offline_download(monkeypatch):
  """Makes every tfds download fail as it does offline; returns the calls."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  calls = []

  def download_and_prepare(builder, *args, **kwargs):
    calls.append(builder.name)
    raise ConnectionError('Failed to establish a new connection')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      download_and_prepare)
  return calls
