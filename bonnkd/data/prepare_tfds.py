"""Prepares tfds's ``cifar10`` offline, from the official binary archive.

tfds's ``cifar10`` builder downloads ``cifar-10-binary.tar.gz`` from
www.cs.toronto.edu and has no manual-download path. Where there is no
internet (a cluster, these development machines), copy that archive there and
run::

  python -m bonnkd.data.prepare_tfds --archive cifar-10-binary.tar.gz \
      --data_dir ~/tensorflow_datasets

then train with ``--config.data.source=tfds --config.data.dir=<data_dir>``.
Only the download is replaced (``DownloadManager.download_and_extract``
returns the unpacked archive); tfds's own builder code reads the binary
records and writes its TFRecords, so the prepared dataset is what
``tfds.load('cifar10')`` would have made online. The archive is the official
binary format: ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and
``test_batch.bin`` of 1 label byte + 3,072 pixel bytes (R, G, B planes of
32x32) a record, and ``batches.meta.txt`` with the class names.
"""

import argparse
import contextlib
import os
import tarfile
import tempfile
from unittest import mock

from bonnkd import errors

__all__ = ['prepare_cifar10', 'ARCHIVE_PREFIX']

# The folder inside the official archive that holds the .bin files.
ARCHIVE_PREFIX = 'cifar-10-batches-bin'
_FILES = ([f'data_batch_{i}.bin' for i in range(1, 6)]
          + ['test_batch.bin', 'batches.meta.txt'])


def _unpacked(archive: str, scratch: str) -> str:
  """The folder that holds ``cifar-10-batches-bin/`` for ``archive``."""
  if os.path.isdir(archive):
    root = archive
  else:
    if not tarfile.is_tarfile(archive):
      raise errors.UserError(
          f'--archive={archive!r} is not a tar archive; expected the official '
          'cifar-10-binary.tar.gz (or the folder it unpacks to).')
    with tarfile.open(archive, 'r:*') as tar:
      tar.extractall(scratch, filter='data')
    root = scratch
  if os.path.basename(os.path.normpath(root)) == ARCHIVE_PREFIX:
    root = os.path.dirname(os.path.normpath(root))
  missing = [f for f in _FILES
             if not os.path.isfile(os.path.join(root, ARCHIVE_PREFIX, f))]
  if missing:
    raise errors.UserError(
        f'--archive={archive!r} is not the CIFAR-10 binary release: '
        f'{ARCHIVE_PREFIX}/{missing} missing.')
  return root


def prepare_cifar10(archive: str, data_dir: str) -> str:
  """Runs tfds's ``cifar10`` builder on a local copy of the archive.

  Args:
    archive: ``cifar-10-binary.tar.gz``, or the folder it unpacks to.
    data_dir: the tfds data_dir to prepare (``config.data.dir``).

  Returns:
    The prepared dataset's directory (``data_dir/cifar10/<version>``).

  Raises:
    errors.UserError: ``archive`` is not the CIFAR-10 binary release.
  """
  if not os.path.exists(archive):
    raise errors.UserError(f'--archive={archive!r} does not exist.')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with contextlib.ExitStack() as stack:
    scratch = stack.enter_context(tempfile.TemporaryDirectory())
    root = _unpacked(archive, scratch)
    stack.enter_context(mock.patch.object(
        tfds.download.DownloadManager, 'download_and_extract',
        lambda self, url_or_urls: root))
    builder = tfds.builder('cifar10', data_dir=data_dir)
    builder.download_and_prepare()
  return str(builder.data_dir)


@errors.exit_on_user_error
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--archive', required=True,
                      help='cifar-10-binary.tar.gz or the folder it unpacks to')
  parser.add_argument('--data_dir', required=True, help='tfds data_dir')
  args = parser.parse_args(argv)
  print(f'prepared {prepare_cifar10(args.archive, args.data_dir)}')
  return 0


if __name__ == '__main__':
  main()
