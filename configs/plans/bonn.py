"""BONN's ablation: a W1A1 WRN with and without its Bayesian losses (issue 9).

Variants, same model, epochs and seeds: ``plain`` (lambda = theta = 0),
``kernel`` (lambda > 0) and ``kernel_feature`` (both, BONN's recipe), each
with the weights of ``configs.recipes.bonn_recipe``. BONN reports
84.97% / 86.23% / 87.34% for its WRN-22 (its 200-epoch schedule).

Stages (``configs/plans/bonn.py:<stage>``):

* ``''`` -- on an accelerator: WRN-22-4 (``configs/phase1_bonn_wrn.py``'s
  default, bfloat16), 100 epochs, seeds 0 and 1;
* ``select`` -- on an accelerator: the val-only grid (``eval_test=False``)
  of lambda and theta at a third of those epochs;
* ``cpu`` -- on 2 CPU cores: the ``bonn_cpu`` preset (the largest W1A1 WRN
  that trains >= 8 epochs in an hour), seeds 0 and 1;
* ``cpu_select`` -- on 2 CPU cores, val only: lambda alone and theta alone,
  each over three decades, next to plain, and lambda with the kernel loss
  held off the modulation (``kernel_latent``: not BONN's; see
  ``bonnkd/binary/bayesian_losses.py``), for ``SELECT_EPOCHS`` epochs of
  the ``bonn_cpu`` recipe at a proxy 4x faster, WRN-10-2 (the grid at
  WRN-16-3 would take 7 hours). Both losses act per weight and per feature
  (sums over weights, a mean over examples), so their weights do not scale
  with the width. The weights in ``configs/recipes.py`` came from this
  stage (results/bonn/v1/README.md).

Commands (the data path is this machine's)::

  python -m bonnkd.sweep configs/plans/bonn.py:cpu_select --out runs/bonn_select \\
      --set data.source=folder --set data.dir=../shared/data/cifar10-jpeg
  python -m bonnkd.sweep configs/plans/bonn.py:cpu --out runs/bonn \\
      --set data.source=folder --set data.dir=../shared/data/cifar10-jpeg
  python -m bonnkd.sweep configs/plans/bonn.py --out runs/bonn_gpu --parallel 3 \\
      --set data.source=folder --set data.dir=/data/cifar10-jpeg

Expected minutes: on CPU from the measured throughput of the ``bonn_cpu``
model (results/README.md); on an accelerator not measured yet for
WRN-22-4 (``python -m benchmarks.throughput`` there gives them): the W1A1
ResNet-18 of the same recipe (555M MACs an image, WRN-22-4 619M) trained
at 23,000-24,500 img/s alone on one H200 (results/gpu/README.md), so a
100-epoch run would take about 3-4 minutes there.

Measured, the ``cpu`` stage (results/README.md, "BONN's ablation on 2 CPU
cores"; 78-137 minutes a run on a 2-core AMD EPYC of family 25, 55 on one
of family 26): test accuracy, mean of seeds 0 and 1, plain 58.06%, kernel
52.43%, kernel_feature 51.92%. At 8 epochs the losses cost 5.6-6.1
points; the accelerator stage has not run.
"""

from bonnkd.sweep import Run

SEEDS = (0, 1)
VARIANTS = {
    'plain': ('bonn.kernel_weight=0.0', 'bonn.feature_weight=0.0'),
    'kernel': ('bonn.feature_weight=0.0',),
    'kernel_feature': (),
}
ACCELERATOR = 'configs/phase1_bonn_wrn.py'
ACCELERATOR_EPOCHS = 100
CPU = 'configs/phase1_bonn_wrn.py:bonn_cpu'
# From the train step measured on a 2-core AMD EPYC (family 26) with
# benchmarks.train_step_bench (results/bonn/v1/README.md): WRN-16-3 W1A1 111
# img/s, 8 epochs ~56 min with evaluations; the proxy WRN-10-2 W1A1 457
# img/s, 3 epochs ~5.5 min. A family-25 EPYC (also 'AMD EPYC' to lscpu)
# trains the WRN-16-3 at ~61 img/s: 104 min; a family-23 one at ~33 img/s,
# even with XLA:CPU's flags chosen: ~3 hours (results/README.md). Where the
# sweep has measured this machine's img/s, that replaces these minutes.
CPU_RUN_MIN = 57.0
SELECT_PROXY = ('model.depth=10', 'model.width=2')
SELECT_EPOCHS = 3
CPU_SELECT_MIN = 5.5
DECADES = (1e-4, 1e-3, 1e-2)


def _selection_grid():
  """(name, overrides): plain, then each weight alone over DECADES.

  Last, lambda again with the kernel loss off the modulation vectors
  (``kernel_latent``), the lead results/bonn/v1/README.md gives for the kernel
  loss's cost; it came after the first seven.
  """
  def weights(k, f, *more):
    return (f'bonn.kernel_weight={k}', f'bonn.feature_weight={f}') + more
  return ([('plain', weights(0.0, 0.0))]
          + [(f'kernel{k:g}', weights(k, 0.0)) for k in DECADES]
          + [(f'feature{f:g}', weights(0.0, f)) for f in DECADES]
          + [(f'kernel_latent{k:g}',
              weights(k, 0.0, 'bonn.kernel_loss_trains_modulation=False'))
             for k in DECADES])


def _select(config, overrides, expected_min):
  return [Run(f'select_{name}', config,
              overrides + grid + ('eval_test=False',),
              expected_min=expected_min)
          for name, grid in _selection_grid()]


def _ablation(config, overrides, expected_min):
  """Seed by seed: a plan stopped at its budget compares every variant."""
  return [Run(f'{name}_s{seed}', config, overrides + variant, seed=seed,
              expected_min=expected_min)
          for seed in SEEDS for name, variant in VARIANTS.items()]


def get_plan(stage: str = ''):
  if stage == '':
    return _ablation(ACCELERATOR, (f'num_epochs={ACCELERATOR_EPOCHS}',), None)
  if stage == 'select':
    return _select(ACCELERATOR, (f'num_epochs={ACCELERATOR_EPOCHS // 3}',),
                   None)
  if stage == 'cpu':
    return _ablation(CPU, (), CPU_RUN_MIN)
  if stage == 'cpu_select':
    return _select(CPU, SELECT_PROXY + (f'num_epochs={SELECT_EPOCHS}',),
                   CPU_SELECT_MIN)
  raise ValueError(
      f"Unknown stage {stage!r}: '', 'select', 'cpu' or 'cpu_select'.")
