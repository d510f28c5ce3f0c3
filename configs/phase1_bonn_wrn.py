"""Phase 1: a Wide-ResNet with binarized convolutions on CIFAR-10.

Presets (``configs/phase1_bonn_wrn.py:<preset>``):

* default -- BONN's setting for an accelerator: WRN-22-4 with every inner
  3x3 conv 1-bit (weights and activations, learned modulation vectors),
  stem, shortcuts and classifier real-valued; 200 epochs.
  BONN reports 87.3% for its 1-bit WRN-22 on CIFAR-10.
* cpu -- the seed's choice, sized for 2 CPU cores and <= 60 minutes of
  training: a WRN whose first convolution has 1-bit weights with a learned
  modulation vector (see the preset for the width and schedule).
* smoke -- a tiny WRN on a few hundred images, for tests (< 1 minute).

Command (offline copy of CIFAR-10)::

  python launch.py --config configs/phase1_bonn_wrn.py:cpu --workdir runs/p1 \\
    --config.data.source=folder --config.data.dir=../shared/data/cifar10-jpeg

Measured (results/README.md): the ``cpu`` preset, seed 0, on 2 CPU cores and
the JPEG copy of CIFAR-10: 82.25% test (82.76% val) after 57.6 min of
training. The default preset has not been run here (no accelerator time for
200 epochs); BONN reports 87.3% for its 1-bit WRN-22 on CIFAR-10.
"""

from bonnkd import config_lib


def get_config(preset: str = ''):
  config = config_lib.base_config()
  config.phase = 'phase1'
  config.model.name = 'wide_resnet'
  preset = preset or 'default'
  if preset == 'default':
    config.model.depth = 22
    config.model.width = 4
    config.model.binarize = 'inner'
    config.model.binarize_what = 'both'
    config.model.quantizer = 'approx_sign'
    config.model.weight_scale = 'modulation'
    config.num_epochs = 200.0
    config.batch_size = 128
    config.optim.lr = 0.1
    config.optim.weight_decay = 5e-4
  elif preset == 'cpu':
    # Chosen on the val split (benchmarks/accelerator_sweep.py, see
    # results/README.md): at ~150 img/s on 2 cores, WRN-16-1 for 11 epochs
    # fits in the hour and beat WRN-10-2, -10-3, -10-4 and -16-2 trained for
    # the same time.
    config.model.depth = 16
    config.model.width = 1
    config.model.binarize = 'first_conv'
    config.model.binarize_what = 'weights'
    config.num_epochs = 11.0
    config.batch_size = 128
    config.optim.lr = 0.4
    config.optim.weight_decay = 5e-4
    config.optim.label_smoothing = 0.1
    config.log_every_steps = 50
  elif preset == 'smoke':
    config.model.depth = 10
    config.model.width = 1
    config_lib.smoke_preset(config)
  else:
    raise config_lib.unknown_preset('phase1_bonn_wrn', preset)
  return config
