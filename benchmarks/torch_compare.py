"""bonnkd's train step next to a PyTorch twin of the same model, alternated.

  pip install -e '.[bench]'        # PyTorch (CPU), for this benchmark only
  python -m benchmarks.torch_compare --model wrn16_1_b128,wrn16_4_b64,student_b128

Both sides run one SGD step (Nesterov momentum, L2 weight decay on the
kernels) on the same random uint8 batch with the same per-image random crop
and flip, the same normalisation, the same pre-activation WRN (or the
phase-2 ResNet student) and, where the bonnkd config has one, the same 1-bit
stem (sign with a straight-through gradient and a learned modulation
vector). Rounds alternate between the two so that a noisy machine slows both
alike; the median of the rounds is reported with the ratio bonnkd / PyTorch.
Threads: PyTorch's intra-op pool and XLA:CPU both use every core by default;
``--threads`` sets PyTorch's. Name the CPU (``lscpu``) next to any figure.
"""

import argparse
import statistics
import time

import jax
import numpy as np

from benchmarks import pytorch
from bonnkd import errors
from bonnkd.config import files
from bonnkd.config import overrides
from bonnkd.cpu import heap
from bonnkd.cpu import step_timing
from bonnkd.data import augment

# name -> (config file:preset, overrides). The WRNs pin depth and width: the
# ``cpu`` preset's model moves when it is re-chosen (WRN-16-1, then WRN-10-2).
MODELS = {
    'wrn16_1_b128': ('configs/phase1_bonn_wrn.py:cpu',
                     ['model.depth=16', 'model.width=1']),
    'wrn16_4_b64': ('configs/phase1_bonn_wrn.py:cpu',
                    ['model.depth=16', 'model.width=4', 'batch_size=64']),
    'wrn10_2_b128': ('configs/phase1_bonn_wrn.py:cpu',
                     ['model.depth=10', 'model.width=2']),
    # float32 as its PyTorch twin (the preset trains in bfloat16 on an
    # accelerator; oneDNN's convolutions take float32).
    'student_b128': ('configs/phase2_kd_student.py', ['batch_size=128',
                                                      'kd.enabled=False',
                                                      'dtype=float32']),
}


def torch_model(config):
  """The PyTorch twin of ``config.model`` (NCHW, float32)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class SignSTE(torch.autograd.Function):
    """sign(x) in {-1, +1}; gradient g * 1{|x| <= 1} (bonnkd's ste_sign)."""

    @staticmethod
    def forward(ctx, x):
      ctx.save_for_backward(x)
      return torch.where(x >= 0, 1.0, -1.0)

    @staticmethod
    def backward(ctx, g):
      (x,) = ctx.saved_tensors
      return g * (x.abs() <= 1).to(g.dtype)

  class BinaryStem(nn.Conv2d):
    """A 3x3 conv with 1-bit weights scaled by a learned modulation vector."""

    def __init__(self, cin, cout):
      super().__init__(cin, cout, 3, padding=1, bias=False)
      self.modulation = nn.Parameter(
          self.weight.detach().abs().mean((1, 2, 3)))

    def forward(self, x):
      y = nn.functional.conv2d(x, SignSTE.apply(self.weight), padding=1)
      return y * self.modulation[None, :, None, None]

  def conv(cin, cout, k=3, stride=1):
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)

  class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv(cin, cout, 3, stride)
      self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv(cout, cout)
      self.shortcut = (conv(cin, cout, 1, stride)
                       if cin != cout or stride != 1 else None)

    def forward(self, x):
      pre = torch.relu(self.bn1(x))
      y = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
      return y + (self.shortcut(pre) if self.shortcut is not None else x)

  class ResBlock(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1, self.bn1 = conv(cin, cout, 3, stride), nn.BatchNorm2d(cout)
      self.conv2, self.bn2 = conv(cout, cout), nn.BatchNorm2d(cout)
      self.shortcut = (nn.Sequential(conv(cin, cout, 1, stride),
                                     nn.BatchNorm2d(cout))
                       if cin != cout or stride != 1 else nn.Identity())

    def forward(self, x):
      y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
      return torch.relu(y + self.shortcut(x))

  m = config.model
  layers = []
  if m.name == 'wide_resnet':
    binary_stem = m.binarize in ('first_conv', 'all') and (
        m.binarize_what in ('weights', 'both'))
    if m.binarize not in ('none', 'first_conv') or (
        m.binarize == 'first_conv' and m.binarize_what != 'weights'):
      raise ValueError('The twin covers full-precision WRNs and a 1-bit stem '
                       f'(weights), not binarize={m.binarize!r}.')
    layers.append(BinaryStem(3, 16) if binary_stem else conv(3, 16))
    cin, n = 16, (m.depth - 4) // 6
    for group, base in enumerate((16, 32, 64)):
      for block in range(n):
        layers.append(WideBlock(cin, base * m.width,
                                2 if group and not block else 1))
        cin = base * m.width
    layers += [nn.BatchNorm2d(cin), nn.ReLU()]
  else:
    layers += [conv(3, m.widths[0]), nn.BatchNorm2d(m.widths[0]), nn.ReLU()]
    cin = m.widths[0]
    for stage, (blocks, width) in enumerate(zip(m.stage_sizes, m.widths)):
      for block in range(blocks):
        layers.append(ResBlock(cin, width, 2 if stage and not block else 1))
        cin = width
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
  return nn.Sequential(*layers)


def torch_images_per_sec(config, steps: int, rounds: int, warmup: int = 2):
  """A generator: yields PyTorch img/s for ``steps`` steps, once a round."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = torch_model(config)
  decay = [p for n, p in model.named_parameters()
           if p.ndim > 1 and 'modulation' not in n]
  rest = [p for n, p in model.named_parameters()
          if not (p.ndim > 1 and 'modulation' not in n)]
  o = config.optim
  opt = torch.optim.SGD(
      [{'params': decay, 'weight_decay': o.weight_decay},
       {'params': rest, 'weight_decay': 0.0}],
      lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
  mean = torch.tensor(augment.CIFAR10_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(augment.CIFAR10_STD).view(1, 3, 1, 1)
  b, pad = config.batch_size, config.data.crop_padding
  rng = np.random.default_rng(0)
  images = torch.from_numpy(rng.integers(0, 256, (b, 3, 32, 32), np.uint8))
  labels = torch.from_numpy(rng.integers(0, 10, (b,), np.int64))
  rows = torch.arange(32).view(1, 32, 1)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)

  def step():
    # Per-image random crop of the zero-padded image, and flip.
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1))
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1))
    flip = torch.rand(b, 1, 1) < 0.5
    cols = torch.where(flip, 31 - rows.transpose(1, 2), rows.transpose(1, 2))
    idx_y = (rows + dy).expand(b, 32, 32)
    idx_x = (cols + dx).expand(b, 32, 32)
    batch = torch.arange(b).view(b, 1, 1)
    crops = padded.permute(0, 2, 3, 1)[batch, idx_y, idx_x]  # b, 32, 32, 3
    x = (crops.permute(0, 3, 1, 2).float() - mean) / std
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), labels)
    loss.backward()
    opt.step()
    return loss

  model.train()
  for _ in range(warmup):
    step()
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps):
      loss = step()
    float(loss.detach())
    yield steps * b / (time.perf_counter() - start)


def bonnkd_images_per_sec(config, steps: int, rounds: int):
  """A generator: yields bonnkd img/s for ``steps`` steps, once a round."""
  measure = step_timing.step_timer(config)
  for _ in range(rounds):
    yield measure(steps)


@errors.exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default=','.join(MODELS))
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--threads', type=int, default=0,
                      help="PyTorch's intra-op threads (0: its default)")
  parser.add_argument('--set', action='append', default=[],
                      help='override for every model, e.g. --set '
                      'model.conv_impl=native')
  args = parser.parse_args(argv)
  torch = pytorch.require()
  if args.threads:
    torch.set_num_threads(args.threads)
  print(f'jax {jax.__version__} ({jax.default_backend()}, '
        f'{jax.device_count()} device), torch {torch.__version__} '
        f'({torch.get_num_threads()} threads); {args.steps} steps x '
        f'{args.rounds} alternated rounds')
  print(f'{"model":<14} {"bonnkd img/s":>13} {"PyTorch img/s":>14} '
        f'{"bonnkd/PyTorch":>15}')
  for name in args.model.split(','):
    spec, items = MODELS[name]
    config = overrides.override(files.load(spec), items + args.set)
    ours = bonnkd_images_per_sec(config, args.steps, args.rounds)
    theirs = torch_images_per_sec(config, args.steps, args.rounds)
    a, b = [], []
    for _ in range(args.rounds):  # Alternate: one round each.
      a.append(next(ours))
      b.append(next(theirs))
    a, b = statistics.median(a), statistics.median(b)
    print(f'{name:<14} {a:13.1f} {b:14.1f} {a / b:15.2f}', flush=True)


if __name__ == '__main__':
  heap.keep_freed_buffers()  # first: before JAX's threads allocate
  main()
