"""Val accuracy of candidate configs, trained fast on an accelerator.

Used to choose the ``cpu`` preset of ``configs/phase1_bonn_wrn.py`` on the
validation split: each candidate is trained with the same step functions,
batches and schedule as ``bonnkd.train.train_and_evaluate`` (no checkpoints,
no TensorBoard), for the number of epochs that 2 CPU cores finish in the time
budget at the throughput ``benchmarks/train_step_bench.py`` measured there.
Accuracy after N epochs does not depend on the hardware, so a GPU answers the
question in seconds per candidate. Only the val split is read.

  python -m benchmarks.accelerator_sweep --data_dir PATH/cifar10-jpeg \
      --out sweep.jsonl 'model.depth=10,model.width=2,num_epochs=11' ...

Each positional argument is one candidate: comma-separated overrides of the
``cpu`` preset.
"""

import argparse
import concurrent.futures
import json
import os
import time

import jax
import numpy as np

from bonnkd import config_lib
from bonnkd import evaluation
from bonnkd import input_pipeline
from bonnkd import train


def _decode(path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'), np.uint8)


def load_folder_with_pil(root: str, split: str) -> input_pipeline.Split:
  """The split/class/image tree, ordered by file name as the tfds loader is."""
  files, labels = [], []
  for label, name in enumerate(input_pipeline.CLASS_NAMES):
    for f in os.listdir(os.path.join(root, split, name)):
      files.append(os.path.join(root, split, name, f))
      labels.append(label)
  order = np.argsort(np.asarray([os.path.relpath(f, root) for f in files]),
                     kind='stable')
  files = [files[i] for i in order]
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    images = np.stack(list(pool.map(_decode, files, chunksize=256)))
  return input_pipeline.Split(images, np.asarray(labels, np.int32)[order])


def run(config, train_split, val_split):
  """Trains ``config`` from scratch; returns val metrics after the last step."""
  setup = train.setup(config, len(train_split))
  state = setup.state
  start = time.time()
  for step in range(setup.total_steps):
    images, labels = input_pipeline.train_batch(train_split, step,
                                                config.batch_size, config.seed)
    state, metrics = setup.train_step(state,
                                      *setup.mesh.put_batch(images, labels))
  train_loss = float(metrics['loss'])
  val, _ = evaluation.evaluate(setup.eval_step, evaluation.variables_of(state),
                               val_split, config.eval_batch_size, setup.mesh)
  return {'val_accuracy': val['accuracy'], 'val_loss': val['loss'],
          'last_train_loss': train_loss, 'steps': setup.total_steps,
          'seconds': round(time.time() - start, 1)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--preset', default='configs/phase1_bonn_wrn.py:cpu')
  parser.add_argument('candidates', nargs='+')
  args = parser.parse_args()
  base = config_lib.load(args.preset)
  t = time.time()
  raw = load_folder_with_pil(args.data_dir, 'train')
  train_split, val_split = input_pipeline.split_train_val(
      raw, base.data.num_val, base.data.split_seed)
  print(f'decoded {len(raw)} train images in {time.time() - t:.0f}s; '
        f'devices: {jax.devices()}', flush=True)
  for spec in args.candidates:
    config = config_lib.override(base, filter(None, spec.split(',')))
    result = {'candidate': spec, 'seed': config.seed,
              'device': jax.devices()[0].device_kind, **run(config, train_split,
                                                            val_split)}
    print(json.dumps(result), flush=True)
    with open(args.out, 'a') as f:
      f.write(json.dumps(result) + '\n')


if __name__ == '__main__':
  main()
