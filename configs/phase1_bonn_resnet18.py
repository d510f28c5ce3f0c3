"""Phase 1 at ResNet-18: the W1A1 ResNet-18 of ReCU and BiPer, BONN-trained.

Presets (``configs/phase1_bonn_resnet18.py:<preset>``):

* default -- ResNet-18 (CIFAR variant) in the layout of ReCU (Xu et al.,
  ICCV 2021) and BiPer (Vargas et al., CVPR 2024): every 3x3 conv of the
  residual blocks 1-bit in weights and activations (approx_sign, learned
  modulation vectors), hardtanh in place of ReLU, a BatchNorm before the
  classifier; the stem, the three 1x1 shortcuts and the classifier
  real-valued: 98.4% of the conv weights are 1-bit
  (``python -m bonnkd.tools.summary --config configs/phase1_bonn_resnet18.py``).
  BONN's losses at the weights of its recipe (``recipes.bonn_recipe``,
  chosen on val for the WRN, not for this net); 200 epochs, bfloat16, for
  an accelerator: about 6 minutes on one H200, which trained it at 23,000-
  24,500 img/s. Literature: ReCU 92.8%, BiPer 93.75% (600 + 300 epochs).
* cpu -- the same layout at a quarter of the widths (16-32-64-128, 0.7M
  parameters), 8 epochs: the W1A1 ResNet-18 code path on 2 CPU cores.
* smoke -- one block per stage at 1/8 of the widths, for tests.

Command::

  python launch.py --config configs/phase1_bonn_resnet18.py --workdir runs/r18_w1a1 \\
    --config.data.source=folder --config.data.dir=/data/cifar10-jpeg

Measured on one H200 (results/gpu/README.md, 2026-12-04, seed 0, shorter
than the preset): 30 epochs with the losses 68.92% test in 1.6 minutes; 50
epochs without them (``--config.bonn.kernel_weight=0
--config.bonn.feature_weight=0``) 84.91% in 2.4 minutes.
"""

from bonnkd.config import defaults
from bonnkd.config import files
from bonnkd.config import smoke
from configs import recipes


def get_config(preset: str = ''):
  config = defaults.base_config()
  config.phase = 'phase1'
  preset = preset or 'default'
  if preset == 'default':
    config.model = defaults.resnet_model((2, 2, 2, 2), (64, 128, 256, 512))
    config.num_epochs = 200.0
    config.dtype = 'bfloat16'
    config.optim.lr = 0.1
    config.optim.weight_decay = 5e-4
  elif preset == 'cpu':
    config.model = defaults.resnet_model((2, 2, 2, 2), (16, 32, 64, 128))
    config.num_epochs = 8.0
    config.optim.lr = 0.1
    config.log_every_steps = 50
  elif preset == 'smoke':
    config.model = defaults.resnet_model((1, 1, 1, 1), (8, 16, 32, 64))
    smoke.smoke_preset(config)
  else:
    raise files.unknown_preset('phase1_bonn_resnet18', preset)
  # W1A1 in ReCU's layout, with BONN's losses at the weights chosen on val
  # for the WRN (configs/recipes.py BONN_*), not tuned for this net.
  return recipes.bonn_recipe(config)
