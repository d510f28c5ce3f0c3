"""The base config every experiment starts from, and its durations in steps.

Config files in ``configs/`` call :func:`base_config`, override what their
phase needs and select a preset (``configs/x.py:cpu``, read by
:func:`bonnkd.config.files.load`). Durations are counted in epochs
(``num_epochs``, ``optim.warmup_epochs``, ``eval_every_epochs``);
:func:`steps_per_epoch` turns them into steps in one place.

Plain data: this module imports nothing heavy.
"""

import math

import ml_collections

__all__ = ['PHASES', 'PRESETS', 'base_config', 'resnet_model',
           'steps_per_epoch', 'num_train_steps']

PHASES = ('phase1', 'teacher', 'phase2')
# The presets every config file in configs/ defines; a file may define more
# (its own module-level PRESETS lists them all).
PRESETS = ('default', 'cpu', 'smoke')


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all phases; every field is overridable."""
  config = ml_collections.ConfigDict()
  # What the run is, for reports: 'phase1' (binarized WRN), 'teacher'
  # (full-precision teacher) or 'phase2' (student, with or without KD).
  config.phase = 'phase1'
  # Seeds parameter init, augmentation and data order (not the val split).
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'wide_resnet'
  config.model.depth = 16
  config.model.width = 4
  # Which convs are 1-bit: one of models.BINARIZE_MODES.
  config.model.binarize = 'first_conv'
  # What of those convs is 1-bit: 'weights', 'activations' or 'both'.
  config.model.binarize_what = 'weights'
  config.model.quantizer = 'ste_sign'
  # 'none', 'xnor' (mean |W|), 'modulation' (learned per channel, MCN) or
  # 'layer_modulation' (BONN's 1-bit conv: bonnkd.binary.layers).
  config.model.weight_scale = 'modulation'
  # How a learned modulation vector starts: 'xnor' (mean |W| per channel) or
  # 'normal' (BONN's random w); bonnkd.binary.layers.MODULATION_INITS.
  config.model.modulation_init = 'xnor'
  # Residual paths: 'block' (one per block) or 'every_conv' (Bi-Real: one
  # around each 3x3 conv); bonnkd.models.SHORTCUTS.
  config.model.shortcuts = 'block'
  config.model.dropout_rate = 0.0
  # 'auto' picks the fast lowering per backend (bonnkd.binary.layers.conv2d).
  config.model.conv_impl = 'auto'
  # The computation's dtype: 'float32' or 'bfloat16' (activations and
  # convolutions; parameters, optimizer state, BatchNorm statistics and the
  # loss stay float32). bfloat16 on the GPU/TPU presets.
  config.dtype = 'float32'

  config.data = ml_collections.ConfigDict()
  # 'tfds' (downloads where there is internet), 'folder' (split/class/img,
  # read with tfds.ImageFolder) or 'tarball' (cifar-10-python.tar.gz).
  config.data.source = 'tfds'
  # tfds data_dir, the image-folder root, or the tarball's path.
  config.data.dir = ''
  # Images held out of train for model selection, chosen by split_seed.
  config.data.num_val = 5000
  config.data.split_seed = 0
  # Keep a random subset (seeded, fixed) of N train / eval images (-1: all);
  # for smoke tests.
  config.data.train_limit = -1
  config.data.eval_limit = -1
  # Random crop padding; 0 disables crop. Flip is a coin per image.
  config.data.crop_padding = 4
  config.data.flip = True

  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 30.0

  config.optim = ml_collections.ConfigDict()
  # 'sgd' (Nesterov momentum, coupled L2 decay) or 'adam' (decoupled decay,
  # AdamW); bonnkd.training.train_state.create_optimizer.
  config.optim.name = 'sgd'
  config.optim.lr = 0.1
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.weight_decay = 5e-4
  # Weight decay on the latent kernels of 1-bit convs; -1: weight_decay.
  config.optim.latent_weight_decay = -1.0
  config.optim.warmup_epochs = 1.0
  # Applied to the cross-entropy with the labels; with KD, to its CE term.
  config.optim.label_smoothing = 0.0

  # Knowledge distillation (phase 2). enabled=False trains the same student
  # on the labels alone (the baseline).
  config.kd = ml_collections.ConfigDict()
  config.kd.enabled = False
  # A finished bonnkd run directory; its config.json and best checkpoint.
  config.kd.teacher_workdir = ''
  config.kd.alpha = 0.5
  config.kd.temperature = 4.0

  # Running the command of a finished run again reports its final.json and
  # changes nothing; True evaluates the best checkpoint again and rewrites it.
  config.force_final_eval = False
  # Whether final.json evaluates the best checkpoint on test too; False for
  # model selection, which reads the val split only.
  config.eval_test = True

  # BONN's Bayesian losses (bonnkd/binary/bayesian_losses.py): lambda, theta
  # and nu of Gu et al.'s Eq. 3.108. 0 turns a term off (training is then exactly
  # the plain one). The kernel loss applies to the 1-bit convs with a
  # learned modulation vector.
  config.bonn = ml_collections.ConfigDict()
  config.bonn.kernel_weight = 0.0
  config.bonn.feature_weight = 0.0
  config.bonn.nu = 1e-4
  # Whether the kernel loss's reconstruction term trains the modulation
  # vectors too (BONN's); False: the latent kernels only.
  config.bonn.kernel_loss_trains_modulation = True
  # The feature loss over a batch: 'sum' over its examples (BONN's
  # centre-loss form) or 'mean' (bonnkd's first reading, which every run
  # before the key had; theta then is batch_size times weaker).
  config.bonn.feature_reduction = 'mean'
  # Momentum of the running class centres and variances (feature loss).
  config.bonn.feature_momentum = 0.9
  # The floor of those running variances, sigma^2 >= min_variance: the
  # feature loss weighs (f - c)^2 by 1/sigma^2, so the floor caps that
  # weight. 1e-4 is what every run before the key had; on the W1A1 recipe
  # it lets the summed loss pin every feature (bonnkd/binary/
  # bayesian_losses.py; configs/plans/w1a1_cpu.py's losses_* stages).
  config.bonn.min_variance = 1e-4
  # 'batch': the feature loss (and its class statistics) on the features
  # standardised over the batch, so that shrinking them gains nothing (not
  # BONN's; bonnkd/binary/bayesian_losses.py); 'none', every earlier
  # run's: on the features as they are.
  config.bonn.feature_normalization = 'none'

  config.log_every_steps = 50
  config.eval_every_epochs = 1
  # Written to TensorBoard events as well as metrics.jsonl.
  config.tensorboard = True
  return config


def resnet_model(stage_sizes, widths, binarize: str = 'none',
                 binarize_what: str = 'both', quantizer: str = 'ste_sign',
                 weight_scale: str = 'modulation',
                 modulation_init: str = 'xnor',
                 shortcuts: str = 'block') -> ml_collections.ConfigDict:
  """``config.model`` for a :class:`bonnkd.models.ResNet`.

  Full precision unless ``binarize`` says which convs are 1-bit (the fields
  of the WRN's ``config.model``).
  """
  return ml_collections.ConfigDict(dict(
      name='resnet', stage_sizes=tuple(stage_sizes), widths=tuple(widths),
      binarize=binarize, binarize_what=binarize_what, quantizer=quantizer,
      weight_scale=weight_scale, modulation_init=modulation_init,
      shortcuts=shortcuts, conv_impl='auto'))


def steps_per_epoch(num_train_examples: int, batch_size: int) -> int:
  """Optimizer steps in one pass over the train split (last batch dropped)."""
  return max(num_train_examples // batch_size, 1)


def num_train_steps(config, num_train_examples: int) -> int:
  return int(math.ceil(
      config.num_epochs * steps_per_epoch(num_train_examples,
                                          config.batch_size)))
