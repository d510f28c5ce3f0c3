"""Phase 1's ``cpu`` preset chosen again on val, for an hour of 2 CPU cores.

Issue 25 asks for the CPU presets re-chosen for what the hour fits now that
the train step is faster (oneDNN's convolutions, the BatchNorm gradient),
phase 1 toward 88% in <= 60 minutes. The ``phase1_bonn_wrn.py:cpu`` of
then (WRN-10-2 with a 1-bit stem, 28 epochs) gave 85.53% test (85.62% val)
in 51.0 min on a family-26 EPYC; its step ran at 691 img/s on a 2-core
Intel Xeon (lscpu family 6, model 167), where 28 epochs take ~35 minutes.

Chosen on val, 2026-12-05 (results/phase1_cpu/select/, one seed each):
WRN-16-2 for 21 epochs, 87.78% val in 40.0 min, now the ``cpu`` preset;
WRN-10-2 for 39 epochs 87.26%, WRN-10-3 for 22 86.84%, WRN-16-1 for 48
86.60%, WRN-10-4 for 13 85.78%; its test, read once, 87.77%. Each took
38.0-47.0 minutes of the 45 planned.

``candidates`` -- the ``cpu`` preset's recipe (1-bit stem with a learned
modulation, batch 128, lr 0.4, label smoothing 0.1, weight decay 5e-4) at
five depths and widths, each for the epochs its measured train step fits
into ``BUDGET_MIN`` minutes on that Xeon; val only (``eval_test=False``).
The first selection (``configs/plans/cpu_preset_selection.py``, an hour
at a quarter of today's speed) favoured the model fast enough to reach
enough epochs; with four times the epochs a larger one may win, which is
the question::

  python -m bonnkd.sweep configs/plans/phase1_cpu.py --out runs/phase1 \\
      --set data.source=folder --set data.dir=../shared/data/cifar10-jpeg

Images per second of each candidate's train step (batch 128), measured
quiet on that Xeon on 2026-12-05 08:17-08:19 UTC with malloc keeping
XLA:CPU's freed buffers (``bonnkd.cpu.heap``, commit 4438cb1; the
step 1.09-1.14x as fast as without), the mean of two processes each
(``python -m benchmarks.train_step_bench --config
configs/phase1_bonn_wrn.py:cpu --set model.depth=D --set model.width=K
--impl auto --steps 3 --rounds 3``,
results/benchmarks/phase1_candidates_step_xeon_family6_model167.txt), are
``CANDIDATES``' third field; batch 256 trained WRN-10-2 no faster (702
against 691 img/s, without the heap setting), so batch 128 stays. On a
family-25 EPYC (AVX2) the same epochs take about twice as long: pass
``--budget_min`` there.

``final`` -- the ``cpu`` preset once it is the chosen candidate, test read,
seed 1. The seed-0 run is the chosen candidate's own, whose best
checkpoint (by val) reads the test split once::

  python launch.py --config configs/phase1_bonn_wrn.py:cpu \\
      --workdir runs/phase1/<candidate> <the candidate's overrides> \\
      --config.eval_test=True --config.force_final_eval=True
  python -m bonnkd.sweep configs/plans/phase1_cpu.py:final --out runs/phase1 \\
      --set data.source=folder --set data.dir=../shared/data/cifar10-jpeg
"""

from bonnkd.sweep import Run
from bonnkd.sweep import run_for_budget

CONFIG = 'configs/phase1_bonn_wrn.py:cpu'
TRAIN_IMAGES = 45_000
BUDGET_MIN = 45.0
EVAL_S = 6.0
# name -> (depth, width, train step img/s on the Xeon); the preset of
# then first.
CANDIDATES = {
    'wrn10_2': (10, 2, 713.7),
    'wrn16_2': (16, 2, 368.4),
    'wrn10_3': (10, 3, 388.1),
    'wrn10_4': (10, 4, 232.1),
    'wrn16_1': (16, 1, 906.7),
}


def _candidate(name: str) -> Run:
  depth, width, images_per_sec = CANDIDATES[name]
  return run_for_budget(
      name, CONFIG,
      (f'model.depth={depth}', f'model.width={width}', 'eval_test=False'),
      images_per_sec, BUDGET_MIN, EVAL_S, TRAIN_IMAGES)


def get_plan(stage: str = 'candidates'):
  if stage == 'candidates':
    return [_candidate(name) for name in CANDIDATES]
  if stage == 'final':
    return [Run('cpu_s1', CONFIG, seed=1)]
  raise ValueError(f"Unknown stage {stage!r}: 'candidates' or 'final'.")
