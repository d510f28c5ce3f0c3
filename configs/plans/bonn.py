"""BONN's ablation: W1A1 WRN-22 with and without its Bayesian losses (issue 9).

  # 1. Choose lambda and theta on the val split (the test split is not read):
  python -m bonnkd.sweep configs/plans/bonn.py:select --out runs/bonn_select \
      --parallel 4 --set data.source=folder --set data.dir=/data/cifar10-jpeg
  # 2. Put the best into KERNEL_WEIGHT / FEATURE_WEIGHT below, then:
  python -m bonnkd.sweep configs/plans/bonn.py --out runs/bonn --parallel 3 \
      --set data.source=folder --set data.dir=/data/cifar10-jpeg

The model is ``configs/phase1_bonn_wrn.py``'s default: WRN-22-4 whose inner
3x3 convs are 1-bit in weights and activations (approx_sign, learned
modulation), stem, shortcuts and classifier real-valued, bfloat16. Variants,
same model, epochs and seeds: ``plain`` (lambda = theta = 0), ``kernel``
(lambda > 0) and ``kernel_feature`` (both), 2 seeds each. BONN reports
84.97% / 86.23% / 87.34% for its WRN-22 (the paper's 200-epoch schedule).

KERNEL_WEIGHT and FEATURE_WEIGHT are starting values, NOT yet chosen on
val: run the ``select`` stage first. Expected minutes are not measured on an
accelerator yet (``python -m benchmarks.throughput`` there gives them).
"""

from bonnkd.sweep import Run

EPOCHS = 100
NU = 1e-4
# To be replaced by the values the select stage picks on val.
KERNEL_WEIGHT = 1e-4
FEATURE_WEIGHT = 1e-3
SEEDS = (0, 1)

SCHEDULE = (f'num_epochs={EPOCHS}', f'bonn.nu={NU}')
VARIANTS = {
    'plain': (),
    'kernel': (f'bonn.kernel_weight={KERNEL_WEIGHT}',),
    'kernel_feature': (f'bonn.kernel_weight={KERNEL_WEIGHT}',
                       f'bonn.feature_weight={FEATURE_WEIGHT}'),
}
# The val-only grid of the select stage (a third of the epochs).
GRID = [(k, f) for k in (0.0, 1e-5, 1e-4, 1e-3) for f in (0.0, 1e-4, 1e-3)]


def get_plan(stage: str = ''):
  if stage == 'select':
    return [Run(f'select_k{k:g}_f{f:g}', 'configs/phase1_bonn_wrn.py',
                (f'num_epochs={EPOCHS // 3}', f'bonn.nu={NU}',
                 f'bonn.kernel_weight={k}', f'bonn.feature_weight={f}',
                 'eval_test=False'))
            for k, f in GRID]
  if stage:
    raise ValueError(f"Unknown stage {stage!r}: '' or 'select'.")
  return [Run(f'{name}_s{seed}', 'configs/phase1_bonn_wrn.py',
              SCHEDULE + overrides, seed=seed)
          for name, overrides in VARIANTS.items() for seed in SEEDS]
