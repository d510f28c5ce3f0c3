"""Phase 2: a small student distilled from a trained teacher.

    L_KD = alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T))

(Hinton et al. 2015, ``bonnkd/training/losses.py``). The teacher is a finished bonnkd
run (``config.kd.teacher_workdir``): its config.json names the model, its
best checkpoint gives the frozen weights. Teacher and student see the same
augmented batch in the same jitted step.

Presets (``configs/phase2_kd_student.py:<preset>``):

* default -- the ~4.6M-parameter student (ResNet-18 layout at 41/64 width,
  4,589,591 parameters) distilled from the ResNet-18 teacher of
  ``configs/teacher_resnet18.py``; 200 epochs, for an accelerator.
* cpu -- sized for <= 60 minutes on 2 CPU cores: a 3-stage ResNet-14 with
  16-32-64 channels (two blocks a stage, 175,258 parameters), 33 epochs,
  chosen on val among five students for 45 minutes of a 2-core Intel Xeon
  (``configs/plans/phase2_cpu.py``); the teacher is the phase-1 ``cpu``
  preset's run.
* smoke -- a tiny student on a few hundred images, for tests.

Distilled student, and the student alone (the baseline differs by one
override, ``--config.kd.enabled=False``)::

  python launch.py --config configs/phase2_kd_student.py:cpu --workdir runs/kd \\
    --config.kd.teacher_workdir=results/bonn/teacher2 \\
    --config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg
  python launch.py --config configs/phase2_kd_student.py:cpu --workdir runs/alone \\
    --config.kd.enabled=False \\
    --config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg

Measured (results/README.md), ``cpu`` preset, seed 0, 2-core Intel Xeon
(lscpu family 6, model 167), JPEG copy of CIFAR-10, teacher
``results/bonn/teacher2`` (the phase-1 ``cpu`` preset, 86.10% val):
distilled 86.27% test (86.76% val) in 46.1 min, 2026-12-05 (the preset
before, a 44k ResNet-8 for 6 epochs: 75.72% distilled, 72.68% alone). The
other seed and the student alone: ``configs/plans/phase2_cpu.py:final``.
The default model at 35 epochs
(``configs/plans/table1.py``) on one H200, seed 0: distilled from the
89.41% ResNet-18, 88.96% test in 2.1 minutes; alone 88.33% in 3.0
(results/gpu/README.md). The 200-epoch preset has not been run.
"""

from bonnkd.config import defaults
from bonnkd.config import files
from bonnkd.config import smoke


def get_config(preset: str = ''):
  config = defaults.base_config()
  config.phase = 'phase2'
  config.kd.enabled = True
  config.kd.alpha = 0.5
  config.kd.temperature = 4.0
  # The CE term is on hard labels, so kd.alpha = 1 is exactly the baseline.
  config.optim.label_smoothing = 0.0
  preset = preset or 'default'
  if preset == 'default':
    config.model = defaults.resnet_model((2, 2, 2, 2), (41, 82, 164, 328))
    config.num_epochs = 200.0
    config.dtype = 'bfloat16'
    config.optim.lr = 0.1
  elif preset == 'cpu':
    # Chosen on val (configs/plans/phase2_cpu.py, results/README.md).
    config.model = defaults.resnet_model((2, 2, 2), (16, 32, 64))
    config.num_epochs = 33.0
    config.optim.lr = 0.4
  elif preset == 'smoke':
    config.model = defaults.resnet_model((1, 1), (8, 16))
    smoke.smoke_preset(config)
  else:
    raise files.unknown_preset('phase2_kd_student', preset)
  return config
