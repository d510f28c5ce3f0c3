"""The seed's Table 1 at full size, on one accelerator (issue 10).

  python -m bonnkd.sweep configs/plans/table1.py --out runs/table1 \
      --parallel 3 --budget_min 9 \
      --set data.source=folder --set data.dir=/data/cifar10-jpeg

(on a host without TensorFlow, ``benchmarks/accelerator_run.sh`` makes the
tarball and runs it with ``data.source=tarball``, ``tensorboard=False``).

The seed's three models, at the seed's sizes, with one schedule suited to a
few minutes of an H200: 35 epochs of SGD + Nesterov, 2 warmup epochs, cosine
decay, batch 128, lr 0.1, weight decay 5e-4; label smoothing 0.1 for the
runs trained on labels (not for KD, whose soft targets are the teacher's):

| run | model | params |
| --- | --- | --- |
| teacher_resnet18 | ResNet-18, full precision | 11,173,962 |
| phase1_wrn16_7 | WRN-16-7, 1-bit first conv (``phase1_bonn_wrn.py:seed``) | 8,396,010 |
| student_alone | the ResNet-18-layout student at 41/64 width | 4,589,591 |
| student_kd | the same, distilled from teacher_resnet18 (alpha 0.5, T 4) | 4,589,591 |

Expected minutes (``expected_min``) are the ones measured on one H200
(results/gpu/README.md, 2026-12-04, commit 141cf02), the first three
sharing the GPU (``--parallel 3``), the distilled student alone after its
teacher; the whole plan took 5.1 minutes. Measured there, seed 0 (JPEG copy
decoded by PIL): teacher 89.41%, phase-1 WRN-16-7 90.64%, student alone
88.33%, distilled 88.96% test. Targets (issue 10): teacher >= 95%, phase-1
WRN >= 95%, distilled student >= 95% and above the student alone. On CPU,
check the plan end to end at smoke size in minutes: ``--smoke``.
"""

from bonnkd.sweep import Run

EPOCHS = 35
SCHEDULE = (f'num_epochs={EPOCHS}', 'optim.lr=0.1', 'optim.warmup_epochs=2',
            'batch_size=128')
ON_LABELS = SCHEDULE + ('optim.label_smoothing=0.1',)


def get_plan():
  return [
      Run('teacher_resnet18', 'configs/teacher_resnet18.py', ON_LABELS,
          expected_min=2.6),
      Run('phase1_wrn16_7', 'configs/phase1_bonn_wrn.py:seed', ON_LABELS,
          expected_min=2.7),
      Run('student_alone', 'configs/phase2_kd_student.py',
          ON_LABELS + ('kd.enabled=False',), expected_min=3.0),
      Run('student_kd', 'configs/phase2_kd_student.py',
          SCHEDULE + ('kd.teacher_workdir={out}/teacher_resnet18',),
          after=('teacher_resnet18',), expected_min=2.1),
  ]
