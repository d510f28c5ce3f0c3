"""Smoke size: a config shrunk to a few hundred images (tests, plan checks)."""

import ml_collections

__all__ = ['smoke_preset', 'at_smoke_scale']


def smoke_preset(config) -> ml_collections.ConfigDict:
  """Shrinks data and schedule to a few hundred images for tests (< 1 min)."""
  config.data.num_val = 128
  config.data.train_limit = 256
  config.data.eval_limit = 128
  config.num_epochs = 2.0
  config.batch_size = 32
  config.eval_batch_size = 64
  config.optim.lr = 0.05
  config.optim.warmup_epochs = 0.5
  config.log_every_steps = 4
  return config


def at_smoke_scale(config) -> ml_collections.ConfigDict:
  """A copy of ``config`` at smoke size, its model's layout kept.

  The data and schedule of :func:`smoke_preset`; a WRN becomes WRN-10-1 and
  a ResNet gets one block a stage at 1/8 of its widths, with the same
  binarization, quantizer and scales. For exercising a full-size preset's
  code paths (the notebook's accelerator branch in CI) in seconds.
  """
  config = smoke_preset(config.copy_and_resolve_references())
  if config.model.name == 'wide_resnet':
    config.model.depth, config.model.width = 10, 1
  else:
    config.model.stage_sizes = tuple(1 for _ in config.model.stage_sizes)
    config.model.widths = tuple(max(w // 8, 4) for w in config.model.widths)
  return config
