"""Loading each data format, the val split, and batching by step."""


import numpy as np
import pytest

from bonnkd import errors
from bonnkd.data import folder_to_tarball
from bonnkd.data import input_pipeline
from bonnkd.data import prepare_tfds
from bonnkd.data.input_pipeline import Split
from tests.conftest import data_config
from tests.conftest import offline_download
from tests.conftest import write_cifar_binary_archive
from tests.conftest import write_image_folder


def test_tarball_round_trip(cifar_tarball):
  path, (train_x, train_y), (test_x, test_y) = cifar_tarball
  splits = input_pipeline.load_splits(data_config('tarball', path))
  assert {k: len(v) for k, v in splits.items()} == {
      'train': 550, 'val': 50, 'test': 200}
  np.testing.assert_array_equal(splits['test'].images, test_x)
  np.testing.assert_array_equal(splits['test'].labels, test_y)
  # Train and val partition the original train set.
  together = np.concatenate([splits['train'].images, splits['val'].images])
  assert sorted(map(bytes, together)) == sorted(map(bytes, train_x))


def test_image_folder_labels_follow_sorted_class_names(tmp_path):
  write_image_folder(tmp_path)
  splits = input_pipeline.load_splits(data_config('folder', tmp_path, 5))
  test = splits['test']
  assert len(test) == 30 and len(splits['train']) == 25
  # PNG is lossless: the fill value identifies class and file.
  np.testing.assert_array_equal(test.labels, np.repeat(np.arange(10), 3))
  np.testing.assert_array_equal(test.images[:, 5, 5, 0],
                                [c * 20 + i for c in range(10)
                                 for i in range(3)])


@pytest.mark.parametrize('check', [input_pipeline.load_splits,
                                   input_pipeline.ensure_available])
def test_missing_data_names_the_config_keys(tmp_path, check):
  # ensure_available is the cheap check launch.py runs before timing.
  with pytest.raises(input_pipeline.DataNotFoundError,
                     match='config.data.source.*config.data.dir'):
    check(data_config('folder', tmp_path / 'nothing'))
  with pytest.raises(input_pipeline.DataNotFoundError,
                     match='config.data.dir'):
    check(data_config('tarball', tmp_path / 'x.tar.gz'))


def test_ensure_available_downloads_what_tfds_has_not_prepared(
    tmp_path, monkeypatch):
  calls = offline_download(monkeypatch)
  with pytest.raises(input_pipeline.DataNotFoundError,
                     match='ConnectionError.*config.data.source'):
    input_pipeline.ensure_available(data_config('tfds', tmp_path))
  assert calls == ['cifar10']


def test_tfds_without_network_raises_one_clear_error(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def offline_load(*args, **kwargs):
    raise ConnectionError('Failed to establish a new connection')

  monkeypatch.setattr(tfds, 'load', offline_load)
  with pytest.raises(input_pipeline.DataNotFoundError,
                     match='ConnectionError.*config.data.source'):
    input_pipeline.load_splits(data_config('tfds', tmp_path))


def toy_split(n):
  return Split(np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) *
               np.ones((1, 32, 32, 3), np.uint8), np.arange(n, dtype=np.int32))


def test_val_split_is_fixed_by_seed_and_disjoint():
  split = toy_split(100)
  train_a, val_a = input_pipeline.split_train_val(split, 10, seed=0)
  train_b, val_b = input_pipeline.split_train_val(split, 10, seed=0)
  _, val_c = input_pipeline.split_train_val(split, 10, seed=1)
  np.testing.assert_array_equal(val_a.labels, val_b.labels)
  assert not np.array_equal(val_a.labels, val_c.labels)
  assert not set(val_a.labels) & set(train_a.labels)
  assert len(train_a) + len(val_a) == 100


def batch_labels(split, step, batch_size, seed, process_index=0,
                 process_count=1):
  """The labels of the host-local rows of ``step``'s batch."""
  return split.labels[input_pipeline.train_indices(
      len(split), step, batch_size, seed, process_index, process_count)]


def test_train_batches_cover_each_epoch_once_and_replay_by_step():
  split = toy_split(100)
  seen = np.concatenate([batch_labels(split, s, 32, 7) for s in range(3)])
  # 3 full batches of 32 from 100 images: 96 distinct, 4 dropped.
  assert len(set(seen)) == 96
  # The next epoch is another permutation; any step is reproducible alone.
  assert not np.array_equal(batch_labels(split, 3, 32, 7),
                            batch_labels(split, 0, 32, 7))
  np.testing.assert_array_equal(batch_labels(split, 4, 32, 7),
                                batch_labels(split, 4, 32, 7))


def test_hosts_get_disjoint_halves_of_the_global_batch():
  split = toy_split(100)
  full = batch_labels(split, 1, 32, 0)
  halves = [batch_labels(split, 1, 32, 0, i, 2) for i in range(2)]
  # Host 0's rows then host 1's are the 1-host batch, in order: each row
  # gets the same augmentation key whatever the number of hosts.
  np.testing.assert_array_equal(np.concatenate(halves), full)


def test_eval_batches_pad_and_mask_count_every_example_once():
  split = toy_split(70)
  batches = list(input_pipeline.eval_batches(split, 32))
  assert [len(b[2]) for b in batches] == [32, 32, 32]
  mask = np.concatenate([b[2] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  assert mask.sum() == 70
  np.testing.assert_array_equal(labels[mask > 0], np.arange(70))


def test_real_image_folder(real_cifar_dir):
  config = data_config('folder', real_cifar_dir, num_val=5000)
  splits = input_pipeline.load_splits(config)
  assert {k: len(v) for k, v in splits.items()} == {
      'train': 45000, 'val': 5000, 'test': 10000}
  assert splits['test'].images.shape == (10000, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(splits['test'].labels),
                                [1000] * 10)


def test_tfds_prepared_offline_by_its_own_builder(tmp_path, cifar_tarball,
                                                  monkeypatch):
  # The official binary archive; tfds's cifar10 builder prepares it with only
  # its download replaced (bonnkd.data.prepare_tfds, as the README says).
  _, (train_x, train_y), (test_x, test_y) = cifar_tarball
  archive = write_cifar_binary_archive(tmp_path / 'cifar-10-binary.tar.gz',
                                       (train_x, train_y), (test_x, test_y))
  data_dir = tmp_path / 'tfds'
  assert prepare_tfds.main(['--archive', str(archive),
                            '--data_dir', str(data_dir)]) == 0
  # Prepared: the cheap check downloads nothing.
  calls = offline_download(monkeypatch)
  input_pipeline.ensure_available(data_config('tfds', data_dir))
  assert not calls
  splits = input_pipeline.load_splits(data_config('tfds', data_dir, 100))
  assert {k: len(v) for k, v in splits.items()} == {
      'train': 500, 'val': 100, 'test': 200}
  # tfds stores the records in its own order: compare (image, label) sets.
  def pairs(images, labels):
    return sorted(zip(map(bytes, images), labels.tolist()))
  assert pairs(splits['test'].images, splits['test'].labels) == pairs(
      test_x, test_y)
  together = Split(np.concatenate([splits['train'].images,
                                   splits['val'].images]),
                   np.concatenate([splits['train'].labels,
                                   splits['val'].labels]))
  assert pairs(together.images, together.labels) == pairs(train_x, train_y)
  assert splits['test'].labels.dtype == np.int32


def test_prepare_tfds_rejects_what_is_not_the_binary_release(cifar_tarball,
                                                             tmp_path):
  # The python-pickle release is not what tfds's builder reads.
  with pytest.raises(errors.UserError, match='data_batch_1.bin'):
    prepare_tfds.prepare_cifar10(cifar_tarball[0], str(tmp_path))


@pytest.mark.parametrize('decoder', input_pipeline.DECODERS)
def test_folder_to_tarball_gives_the_folders_splits(tmp_path, decoder):
  # The tarball read without TensorFlow holds the folder's images in the
  # folder's order: the same train, val and test splits.
  write_image_folder(tmp_path / 'tree', per_class=6)
  path = tmp_path / 'cifar-10-python.tar.gz'
  counts = folder_to_tarball.write_tarball(str(tmp_path / 'tree'), str(path),
                                           decoder)
  assert counts == {'train': 60, 'test': 60}
  from_folder = input_pipeline.load_splits(
      data_config('folder', tmp_path / 'tree', 7))
  from_tarball = input_pipeline.load_splits(data_config('tarball', path, 7))
  for name in ('train', 'val', 'test'):
    np.testing.assert_array_equal(from_tarball[name].images,
                                  from_folder[name].images)
    np.testing.assert_array_equal(from_tarball[name].labels,
                                  from_folder[name].labels)


def test_pil_decoder_is_libjpegs_accurate_idct(tmp_path):
  # TensorFlow's own decoder with the accurate IDCT is the reference; its
  # default (the fast IDCT, what the folder source reads) differs.
  tf = pytest.importorskip('tensorflow')
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (32, 32, 3), np.uint8)
  path = str(tmp_path / 'noise.jpg')
  Image.fromarray(pixels).save(path, quality=75)
  raw = tf.io.read_file(path)
  accurate = tf.io.decode_jpeg(raw, channels=3,
                               dct_method='INTEGER_ACCURATE').numpy()
  np.testing.assert_array_equal(input_pipeline._decode_image_pil(path),
                                accurate)
  assert (input_pipeline._decode_image(path, tf) != accurate).any()


def test_pil_decoder_names_a_file_that_does_not_decode(tmp_path):
  write_image_folder(tmp_path, per_class=1)
  bad = tmp_path / 'test' / 'cat' / '0000.png'
  bad.write_bytes(b'not an image')
  with pytest.raises(input_pipeline.DataError, match='0000.png'):
    folder_to_tarball.write_tarball(str(tmp_path), str(tmp_path / 'x.tar.gz'),
                                    'pil')
  assert not (tmp_path / 'x.tar.gz').exists()
