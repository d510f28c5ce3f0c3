"""bonnkd: 1-bit CNNs and knowledge distillation on CIFAR-10, in JAX / Flax.

The folders are the parts (the README's "Layout" lists every module):

* ``train.py`` -- ``train_and_evaluate(config, workdir)``, the train step;
  ``sweep.py`` -- plans of many runs; ``errors.py`` -- the user's mistakes.
* ``config/`` -- the base config, config files and overrides, validation.
* ``data/`` -- CIFAR-10 from tfds, an image folder or the tarball;
  augmentation.
* ``binary/`` -- sign with straight-through estimators, the 1-bit conv
  layer and its scales, BONN's Bayesian losses.
* ``models.py`` -- Wide-ResNet and ResNet with binarization by config.
* ``training/`` -- train state and optimizer, losses, evaluation, the
  teacher, the device mesh.
* ``run/`` -- the run directory: config, metrics, checkpoints, final.json,
  the lock.
* ``cpu/`` -- what makes a CPU run fast on the machine at hand: machine key,
  conv lowering autotune, XLA:CPU flags, step timing, oneDNN's convolutions
  as XLA custom calls (C++ in ``cpu/native/``).
* ``tools/`` -- report, summary, inspect.
"""
