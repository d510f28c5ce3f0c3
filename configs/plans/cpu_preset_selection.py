"""How the first ``cpu`` preset of phase 1 was chosen: val accuracy only.

  python -m bonnkd.sweep configs/plans/cpu_preset_selection.py \
      --out runs/cpu_preset_selection --parallel 4 \
      --set data.source=folder --set data.dir=/data/cifar10-jpeg

Each candidate is the ``cpu`` preset as it stood when it was chosen (a WRN
with a 1-bit stem, batch 128, lr 0.2, label smoothing 0.1, 1 warmup epoch)
with a few overrides, trained for the epochs 2 CPU cores finish in an hour
at the throughput measured then, on an accelerator (accuracy after a given
number of epochs does not depend on the hardware). ``eval_test=False``: the
runs report val accuracy only; the test split is read once, by the chosen
preset's own run. The 25 rows measured on an H200 (the runs' val accuracy
after the last step, by the former benchmarks/accelerator_sweep.py that
this plan replaces) are in results/phase1_cpu/preset_selection_sweep.jsonl.
"""

from bonnkd.sweep import Run

# The cpu preset when it was chosen, before each candidate's overrides.
BASE = ('model.depth=16', 'model.width=1', 'num_epochs=11', 'optim.lr=0.2',
        'optim.label_smoothing=0.1', 'optim.warmup_epochs=1',
        'eval_test=False')

CANDIDATES = (
    'model.depth=10,model.width=2,num_epochs=11',
    'model.depth=10,model.width=2,num_epochs=11,optim.lr=0.1',
    'model.depth=10,model.width=2,num_epochs=11,optim.lr=0.4',
    'model.depth=10,model.width=2,num_epochs=11,optim.label_smoothing=0.0',
    'model.depth=16,model.width=2,num_epochs=4',
    'model.depth=10,model.width=3,num_epochs=6',
    'model.depth=10,model.width=2,num_epochs=11,batch_size=256,optim.lr=0.4',
    'model.depth=10,model.width=2,num_epochs=11,model.binarize=none',
    'model.depth=10,model.width=2,num_epochs=11,model.binarize_what=both',
    'model.depth=10,model.width=4,num_epochs=4',
    'model.depth=10,model.width=2,num_epochs=11,optim.lr=0.4,optim.label_smoothing=0.2',
    'model.depth=10,model.width=2,num_epochs=11,optim.lr=0.4,optim.weight_decay=0.001',
    'model.depth=10,model.width=2,num_epochs=11,optim.lr=0.4,optim.warmup_epochs=0.3',
    'model.depth=10,model.width=2,num_epochs=11,optim.lr=0.8,batch_size=256,optim.label_smoothing=0.2',
    'model.depth=10,model.width=2,num_epochs=22,optim.lr=0.4',
    'model.depth=10,model.width=1,num_epochs=25,optim.lr=0.4',
    'model.depth=16,model.width=1,num_epochs=14,optim.lr=0.4',
    'model.depth=10,model.width=2,num_epochs=11,optim.lr=0.4,seed=1',
    'model.depth=16,model.width=1,num_epochs=12,optim.lr=0.4,optim.label_smoothing=0.1',
    'model.depth=16,model.width=1,num_epochs=12,optim.lr=0.4,optim.label_smoothing=0.2',
    'model.depth=16,model.width=1,num_epochs=12,optim.lr=0.8,optim.label_smoothing=0.1',
    'model.depth=10,model.width=2,num_epochs=11.5,optim.lr=0.4,optim.label_smoothing=0.2',
    'model.depth=16,model.width=1,num_epochs=12,optim.lr=0.4,optim.label_smoothing=0.1,optim.warmup_epochs=0.5',
    'model.depth=16,model.width=1,num_epochs=12,optim.lr=0.4,optim.label_smoothing=0.1,seed=1',
    'model.depth=16,model.width=1,num_epochs=12,optim.lr=0.2,optim.label_smoothing=0.1',
)


def get_plan():
  runs = []
  for i, candidate in enumerate(CANDIDATES):
    overrides = tuple(o for o in candidate.split(',') if not o.startswith(
        'seed='))
    seeds = [int(o.split('=')[1]) for o in candidate.split(',')
             if o.startswith('seed=')]
    runs.append(Run(f'c{i:02d}', 'configs/phase1_bonn_wrn.py:cpu',
                    BASE + overrides, seed=seeds[0] if seeds else 0))
  return runs
