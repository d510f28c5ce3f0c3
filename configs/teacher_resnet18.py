"""A full-precision teacher for phase 2 (knowledge distillation).

Presets (``configs/teacher_resnet18.py:<preset>``):

* default -- ResNet-18 (CIFAR variant, 11,173,962 parameters), full
  precision, 200 epochs of SGD + Nesterov, cosine schedule; for an
  accelerator.
* cpu -- sized for <= 45 minutes on 2 CPU cores: ResNet-18 is ~100x too slow
  there, so the cpu teacher is a full-precision WRN-16-1 (175k parameters)
  for 9 epochs. A phase-1 ``cpu`` run can serve as the cpu teacher as
  well: the measured phase-2 runs distil from ``results/bonn/teacher2``,
  that preset's WRN-10-2 with a 1-bit stem as it stood on 2026-12-04.
* smoke -- a tiny ResNet on a few hundred images, for tests.

Command::

  python launch.py --config configs/teacher_resnet18.py:cpu --workdir runs/teacher \\
    --config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg

Measured: the default model at 35 epochs (``configs/plans/table1.py``) on
one H200, 89.41% test in 2.6 minutes (results/gpu/README.md, seed 0); the
cpu preset has not run (phase 2's measured cpu runs used a phase-1 run as
their teacher, results/README.md).
"""

from bonnkd.config import defaults
from bonnkd.config import files
from bonnkd.config import smoke


def get_config(preset: str = ''):
  config = defaults.base_config()
  config.phase = 'teacher'
  config.model.binarize = 'none'
  preset = preset or 'default'
  if preset == 'default':
    config.model = defaults.resnet_model((2, 2, 2, 2), (64, 128, 256, 512))
    config.num_epochs = 200.0
    config.dtype = 'bfloat16'
    config.optim.lr = 0.1
  elif preset == 'cpu':
    config.model.depth = 16
    config.model.width = 1
    config.num_epochs = 9.0
    config.optim.lr = 0.4
    config.optim.label_smoothing = 0.1
  elif preset == 'smoke':
    config.model = defaults.resnet_model((1, 1), (8, 16))
    smoke.smoke_preset(config)
  else:
    raise files.unknown_preset('teacher_resnet18', preset)
  return config
