"""An image folder as ``cifar-10-python.tar.gz``, for hosts without TensorFlow.

  python -m bonnkd.data.folder_to_tarball cifar10-jpeg cifar-10-python.tar.gz \
      --decoder pil

The ``folder`` source decodes with TensorFlow, which an accelerator image
may lack (the lent H200's has JAX, PyTorch and PIL, not TensorFlow). This
writes the tree once in the official python-pickle layout that
``config.data.source=tarball`` reads without TensorFlow:
``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch``, each a pickled
dict of ``b'data'`` (N x 3072 uint8, the R, G, B planes of 32x32) and
``b'labels'``. The train images keep the folder's order (class, then file
name) across the five batches, so the val split that ``split_seed`` draws is
the same images as from the folder.

``--decoder tensorflow`` gives the pixels of every ``folder`` run;
``--decoder pil`` (no TensorFlow needed) uses libjpeg's accurate IDCT, whose
pixels differ from TensorFlow's fast one by up to 5 levels on about 64% of
the values of the JPEG copy of CIFAR-10: say so next to any figure.
"""

import argparse
import io
import os
import pickle
import tarfile

import numpy as np

from bonnkd import errors
from bonnkd.data import input_pipeline

__all__ = ['write_tarball']

PREFIX = 'cifar-10-batches-py'
NUM_TRAIN_BATCHES = 5


def _batch_bytes(split: input_pipeline.Split) -> bytes:
  data = split.images.transpose(0, 3, 1, 2).reshape(len(split.images), -1)
  return pickle.dumps({b'data': np.ascontiguousarray(data),
                       b'labels': [int(y) for y in split.labels]})


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
  info = tarfile.TarInfo(f'{PREFIX}/{name}')
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def write_tarball(root: str, path: str, decoder: str = 'tensorflow') -> dict:
  """Writes ``root``'s train and test splits to ``path``; returns the counts.

  Raises:
    DataNotFoundError, DataError: as the folder source would, naming the file.
  """
  splits = input_pipeline._load_folder(root, decoder)  # pylint: disable=protected-access
  train = splits['train']
  bounds = np.linspace(0, len(train), NUM_TRAIN_BATCHES + 1).astype(int)
  tmp = path + '.partial'  # A full disk leaves no half tarball at ``path``.
  try:
    with tarfile.open(tmp, 'w:gz', compresslevel=1) as tar:
      for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
        _add(tar, f'data_batch_{i}', _batch_bytes(
            input_pipeline.Split(train.images[lo:hi], train.labels[lo:hi])))
      _add(tar, 'test_batch', _batch_bytes(splits['test']))
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return {name: len(split) for name, split in splits.items()}


@errors.exit_on_user_error
def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('folder', help='split/class/image tree (train, test)')
  parser.add_argument('tarball', help='the .tar.gz to write')
  parser.add_argument('--decoder', choices=input_pipeline.DECODERS,
                      default='tensorflow')
  args = parser.parse_args(argv)
  counts = write_tarball(args.folder, args.tarball, args.decoder)
  print(f'{args.tarball}: {counts} images, decoded by {args.decoder}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
