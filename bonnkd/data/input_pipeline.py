"""CIFAR-10 input: load once into host memory, split, and batch by step.

Three sources, chosen by ``config.data.source``:

* ``'tfds'``    -- ``tfds.load('cifar10')`` (downloads where there is
                   internet; ``config.data.dir`` is the tfds data_dir);
* ``'folder'``  -- a ``split/class/image`` tree, the layout
                   ``tfds.ImageFolder`` reads (e.g. a JPEG copy of CIFAR-10),
                   decoded file by file so that a bad file is named;
* ``'tarball'`` -- the official ``cifar-10-python.tar.gz``, for offline
                   clusters (``config.data.dir`` is the file's path).

CIFAR-10 is 150 MB as uint8, so the whole split lives in memory (the train
split on the devices, see ``bonnkd.train``) and a batch is a function of the
step alone: epoch ``e`` visits the train images in the order of a
permutation seeded by ``(seed, e)``. Resuming at step ``s``
therefore replays exactly the batches an uninterrupted run would have seen,
with no iterator state to checkpoint. Augmentation runs on the accelerator
inside the jitted step (:mod:`bonnkd.data.augment`), so two host cores are not
spent on it.

The validation split is ``num_val`` train images drawn by ``split_seed``; the
test split is only read for the final numbers. Every split is checked on
load: all ten classes present, every image 32x32 RGB; a file that does not
decode is named (:class:`DataError`).
"""

from collections.abc import Iterator
import dataclasses
import functools
import os
import pickle
import re
import tarfile

import ml_collections
import numpy as np

from bonnkd import errors
from bonnkd.config import validation

__all__ = [
    'CLASS_NAMES',
    'SOURCES',
    'DECODERS',
    'Split',
    'DataNotFoundError',
    'DataError',
    'validate_config',
    'ensure_available',
    'load_split',
    'load_splits',
    'train_indices',
    'eval_batches',
]

CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
               'horse', 'ship', 'truck')


SOURCES = ('tfds', 'folder', 'tarball')


class DataNotFoundError(errors.UserError, FileNotFoundError):
  """No CIFAR-10 could be read or downloaded; says which config keys to set."""


class DataError(errors.UserError):
  """The data is there but damaged or incomplete (names the file or class)."""


def validate_config(data_config) -> None:
  """Checks ``config.data``; raises a ConfigError naming the key."""
  d = data_config
  validation.check(d.source in SOURCES, 'data.source', d.source,
                   f'one of {SOURCES}')
  validation.check(d.source == 'tfds' or bool(d.dir), 'data.dir', d.dir,
                   f'the path of the data for data.source={d.source!r}')
  validation.check(d.num_val >= 0, 'data.num_val', d.num_val,
                   'an integer >= 0')
  validation.check(d.crop_padding >= 0, 'data.crop_padding', d.crop_padding,
                   'an integer >= 0')


@dataclasses.dataclass(frozen=True)
class Split:
  """One split in host memory: uint8 images (N, 32, 32, 3), int32 labels."""

  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, limit: int, seed: int = 0) -> 'Split':
    """A random subset of ``limit`` examples (all of them if limit < 0)."""
    if limit < 0 or limit >= len(self):
      return self
    idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:limit])
    return Split(self.images[idx], self.labels[idx])


_HOW_TO_SET = (
    'Set config.data.source and config.data.dir, e.g. '
    '--config.data.source=folder --config.data.dir=PATH/cifar10-jpeg '
    '(split/class/image tree), or --config.data.source=tarball '
    '--config.data.dir=PATH/cifar-10-python.tar.gz, or '
    '--config.data.source=tfds with internet access or a config.data.dir '
    '(tfds data_dir) prepared offline by python -m bonnkd.data.prepare_tfds.'
)


def _tfds_not_found(data_dir: str, e: Exception) -> DataNotFoundError:
  return DataNotFoundError(
      f'Could not load CIFAR-10 with tfds (data_dir={data_dir!r}): '
      f'{type(e).__name__}: {str(e)[:300]}. {_HOW_TO_SET}')


def _prepare_tfds(data_dir: str) -> None:
  """Downloads and prepares tfds's cifar10 unless data_dir holds it already."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder('cifar10', data_dir=data_dir or None)
    if not builder.is_prepared():
      builder.download_and_prepare()
  except Exception as e:  # tfds raises many kinds on a failed download.
    raise _tfds_not_found(data_dir, e) from e


def _load_tfds(data_dir: str) -> dict[str, Split]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    data = tfds.load('cifar10', split=['train', 'test'], batch_size=-1,
                     as_supervised=True, data_dir=data_dir or None)
  except Exception as e:  # tfds raises many kinds on a failed download.
    raise _tfds_not_found(data_dir, e) from e
  (train_x, train_y), (test_x, test_y) = tfds.as_numpy(data)
  return {'train': Split(train_x, train_y.astype(np.int32)),
          'test': Split(test_x, test_y.astype(np.int32))}


def _decode_image(path: str, tf) -> np.ndarray:
  """One image file as uint8 (32, 32, 3); grayscale is converted to RGB.

  Decoded by TensorFlow, as ``tfds.ImageFolder`` does. Its JPEG default is
  libjpeg's fast integer IDCT (``dct_method='INTEGER_FAST'``); PIL's is the
  accurate one, which differs by up to 5 levels on about 64% of the values
  of this CIFAR-10 copy (:func:`_decode_image_pil`).

  Raises:
    DataError: the file does not decode, or is not 32x32 (names both).
  """
  try:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False).numpy()
  except tf.errors.OpError as e:
    # TensorFlow's message without its op decorations.
    message = re.sub(r'\{\{.*?\}\}|\[Op:.*', '', e.message or '').strip()
    raise DataError(f'{path} is not a readable image ({message[:200]}).') from e
  return _checked_size(image, path)


def _decode_image_pil(path: str) -> np.ndarray:
  """As :func:`_decode_image`, by PIL (accurate IDCT), for hosts without TF."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      array = np.asarray(image.convert('RGB'))
  except OSError as e:
    raise DataError(f'{path} is not a readable image ({e}).') from e
  return _checked_size(array, path)


def _checked_size(image: np.ndarray, path: str) -> np.ndarray:
  if image.shape != (32, 32, 3):
    raise DataError(
        f'{path} is {image.shape[1]}x{image.shape[0]} with {image.shape[2]} '
        'channels; CIFAR-10 images are 32x32 RGB (grayscale is converted).')
  return image


# The decoders of the folder source: TensorFlow's is the one every run uses
# (config.data.source='folder'); PIL's only makes a tarball on a host without
# TensorFlow (bonnkd.data.folder_to_tarball).
DECODERS = ('tensorflow', 'pil')


def _check_folder(root: str) -> None:
  missing = [s for s in ('train', 'test')
             if not os.path.isdir(os.path.join(root, s))]
  if missing:
    raise DataNotFoundError(
        f'config.data.dir={root!r} has no {missing} folder(s) of the form '
        f'split/class/image. {_HOW_TO_SET}')


def _load_folder(root: str, decoder: str = 'tensorflow') -> dict[str, Split]:
  """Reads ``root/{train,test}/<class>/*``, every class in every split.

  Files are visited in the order of their paths, so that the order, and
  hence the val split, is the same on every file system. ``decoder`` is one
  of :data:`DECODERS`.
  """
  _check_folder(root)
  if decoder == 'tensorflow':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    decode = functools.partial(_decode_image, tf=tf)
  elif decoder == 'pil':
    decode = _decode_image_pil
  else:
    raise ValueError(f'decoder={decoder!r}; expected one of {DECODERS}.')
  splits = {}
  for split in ('train', 'test'):
    split_dir = os.path.join(root, split)
    found = sorted(d for d in os.listdir(split_dir)
                   if os.path.isdir(os.path.join(split_dir, d)))
    if tuple(found) != CLASS_NAMES:
      absent = [c for c in CLASS_NAMES if c not in found]
      extra = [c for c in found if c not in CLASS_NAMES]
      raise DataError(
          f'{split_dir} must hold one folder per CIFAR-10 class; '
          + (f'missing: {absent}' if absent else '')
          + ('; ' if absent and extra else '')
          + (f'unexpected: {extra}' if extra else '') + '.')
    paths, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
      files = sorted(os.listdir(os.path.join(split_dir, name)))
      if not files:
        raise DataError(f'{os.path.join(split_dir, name)} holds no image.')
      paths += [os.path.join(split_dir, name, f) for f in files]
      labels += [label] * len(files)
    images = np.stack([decode(p) for p in paths])
    splits[split] = Split(images, np.asarray(labels, np.int32))
  return splits


def _check_tarball(path: str) -> None:
  if not os.path.isfile(path):
    raise DataNotFoundError(
        f'config.data.dir={path!r} is not a file. {_HOW_TO_SET}')


def _load_tarball(path: str) -> dict[str, Split]:
  """Reads the official python-pickle release (data_batch_1..5, test_batch)."""
  _check_tarball(path)

  def read(tar, member):
    batch = pickle.load(tar.extractfile(member), encoding='bytes')
    images = batch[b'data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images.astype(np.uint8), np.asarray(batch[b'labels'], np.int32)

  with tarfile.open(path, 'r:*') as tar:
    members = {os.path.basename(m.name): m for m in tar.getmembers()}
    wanted = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
    if missing := [w for w in wanted if w not in members]:
      raise DataNotFoundError(
          f'{path!r} is not cifar-10-python.tar.gz: {missing} missing.')
    train = [read(tar, members[f'data_batch_{i}']) for i in range(1, 6)]
    test = read(tar, members['test_batch'])
  return {
      'train': Split(np.concatenate([x for x, _ in train]),
                     np.concatenate([y for _, y in train])),
      'test': Split(*test),
  }


def _check_split(split: Split, name: str, source: str) -> None:
  """Every image uint8 32x32x3, every label a class id, every class there.

  Raises:
    DataError: naming the split, the source and what is wrong.
  """
  if split.images.shape[1:] != (32, 32, 3) or split.images.dtype != np.uint8:
    raise DataError(
        f'The {name} split of {source} has images of shape '
        f'{split.images.shape[1:]} and dtype {split.images.dtype}; expected '
        'uint8 (32, 32, 3).')
  if len(split.labels) != len(split.images):
    raise DataError(f'The {name} split of {source} has {len(split.images)} '
                    f'images but {len(split.labels)} labels.')
  counts = np.bincount(split.labels, minlength=len(CLASS_NAMES)) if len(
      split.labels) and split.labels.min() >= 0 else None
  if counts is None or len(counts) != len(CLASS_NAMES):
    raise DataError(f'The {name} split of {source} has labels outside 0..9.')
  if absent := [CLASS_NAMES[c] for c in np.flatnonzero(counts == 0)]:
    raise DataError(f'The {name} split of {source} has no image of class '
                    f'{absent}.')


def split_train_val(train: Split, num_val: int, seed: int):
  """Holds ``num_val`` images out of train, chosen by a seeded permutation."""
  if num_val >= len(train):
    raise errors.ConfigError(
        f'config.data.num_val={num_val} leaves no training images out of '
        f'{len(train)}.')
  perm = np.random.default_rng(seed).permutation(len(train))
  val_idx, train_idx = np.sort(perm[:num_val]), np.sort(perm[num_val:])
  return (Split(train.images[train_idx], train.labels[train_idx]),
          Split(train.images[val_idx], train.labels[val_idx]))


def ensure_available(data_config) -> None:
  """Raises now, before anything costly, where there is no data to read.

  Before launch.py times XLA:CPU's flags
  (:func:`bonnkd.cpu.xla_cpu_flags.choose`, minutes of compilation): the folder's ``train`` and ``test`` folders or
  the tarball exist, and tfds's cifar10 is prepared in its data_dir,
  downloaded now if it is not, as ``tfds.load`` would (offline, tfds retried
  for 3.4 minutes before it gave up on a development machine). A damaged
  file is found later, by :func:`load_splits`, which reads every one.

  Raises:
    DataNotFoundError: as :func:`load_splits` would, with the keys to set.
  """
  check = {'tfds': _prepare_tfds, 'folder': _check_folder,
           'tarball': _check_tarball}[data_config.source]
  check(data_config.dir)


def load_split(data_config, split: str, source: str | None = None,
               data_dir: str | None = None, limit: int = -1) -> Split:
  """One split of a run's ``config.data``, or of the source / dir given.

  For the tools that read a finished run's data (``bonnkd.deploy``,
  ``bonnkd.tools.class_features``): ``data_config`` is the run's
  ``config.data`` (a ConfigDict or a dict), ``limit`` >= 0 a random subset
  (:meth:`Split.take`).

  Raises:
    errors.ConfigError, DataNotFoundError: a bad source, or data that is not
      there (one message naming it), before anything is read.
  """
  data = ml_collections.ConfigDict(dict(data_config))
  data.source = source or data.source
  data.dir = data_dir or data.dir
  data.eval_limit = limit
  validate_config(data)
  ensure_available(data)
  return load_splits(data)[split]


def load_splits(data_config) -> dict[str, Split]:
  """Returns {'train', 'val', 'test'} splits as host arrays.

  Args:
    data_config: ``config.data`` (source, dir, num_val, split_seed,
      train_limit, eval_limit).

  Raises:
    DataNotFoundError: nothing to read, with the config keys to set.
  """
  loader = {'tfds': _load_tfds, 'folder': _load_folder,
            'tarball': _load_tarball}[data_config.source]
  raw = loader(data_config.dir)
  for name, split in raw.items():
    _check_split(split, name, f'{data_config.source}:{data_config.dir}')
  train, val = split_train_val(raw['train'], data_config.num_val,
                               data_config.split_seed)
  return {
      'train': train.take(data_config.train_limit),
      'val': val.take(data_config.eval_limit),
      'test': raw['test'].take(data_config.eval_limit),
  }


@functools.lru_cache(maxsize=2)
def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The visiting order of epoch ``epoch``; cached: every step of it asks."""
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False
  return perm


def train_indices(num_examples: int, step: int, batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1):
  """Indices into the train split of the host-local rows of ``step``'s batch.

  Each epoch is a fresh permutation seeded by ``(seed, epoch)``; the last
  incomplete batch of an epoch is dropped. Host ``i`` of ``n`` gets rows
  ``[i * b/n, (i+1) * b/n)`` of the global batch (its indices sorted), so
  the global batch does not depend on ``n``.

  Returns:
    int32 (b/n,).
  """
  steps_per_epoch = num_examples // batch_size
  epoch, index = divmod(step, steps_per_epoch)
  perm = epoch_permutation(num_examples, seed, epoch)
  # Sorted as a whole before slicing, so that the global batch (and the
  # augmentation each row gets) is the same for any number of processes.
  batch = np.sort(perm[index * batch_size:(index + 1) * batch_size])
  local = batch_size // process_count
  return batch[process_index * local:(process_index + 1) * local].astype(
      np.int32)


def eval_batches(split: Split, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[tuple[np.ndarray, ...]]:
  """Host-local eval batches; the last one padded, with a mask of real rows.

  Yields:
    (images, labels, mask) with ``mask[i] == 1`` for real examples, so that
    summing a masked metric over all batches counts every example once.
  """
  local = batch_size // process_count
  for start in range(0, len(split), batch_size):
    lo = min(start + process_index * local, len(split))
    hi = min(lo + local, len(split))
    images, labels = split.images[lo:hi], split.labels[lo:hi]
    pad = local - len(labels)
    mask = np.concatenate([np.ones(len(labels), np.float32),
                           np.zeros(pad, np.float32)])
    images = np.concatenate(
        [images, np.zeros((pad, *split.images.shape[1:]), np.uint8)])
    labels = np.concatenate([labels, np.zeros(pad, np.int32)])
    yield images, labels, mask
