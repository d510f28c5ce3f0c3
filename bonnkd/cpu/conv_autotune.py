"""The CPU convolution lowering, measured on this machine instead of assumed.

Which lowering of a convolution is fastest on XLA:CPU depends on the CPU:
on one AMD EPYC im2col (one GEMM over the shifted windows) beat the native
convolution 1.3-4x on 32x32 maps; on an Intel Xeon with AVX-512, and on a
newer EPYC, the native one wins; oneDNN's convolution, a custom call
(:mod:`bonnkd.cpu.onednn`), beat both on most shapes where it is built
(``results/README.md``). So ``conv_impl='auto'`` does not follow a rule
written in code: :func:`tune` times every lowering of :func:`candidates`
(forward and backward, jitted) for every convolution shape of a model at
its batch size, once per machine, and :mod:`bonnkd.binary.layers` uses the
winner of each shape. Results are cached in a JSON file keyed by
:func:`bonnkd.cpu.machine.key` (the CPU, the core count, the jax version and
any XLA_FLAGS) and the candidates (``$BONNKD_CACHE_DIR``, default
``~/.cache/bonnkd/conv_autotune.json``), so a run pays the few seconds of
measurement only the first time on a machine. GPU and TPU keep the native
convolution (cuDNN, the TPU's convolution unit) and are not tuned.

  from bonnkd.cpu import conv_autotune
  conv_autotune.tune(model, batch_size=128)   # before jitting the model
"""

import time

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bonnkd.binary import layers
from bonnkd.cpu import machine
from bonnkd.cpu import onednn

__all__ = ['conv_shapes', 'time_lowering', 'candidates', 'cache_key',
           'tune', 'cache_path']

_CACHE_NAME = 'conv_autotune.json'


def cache_path() -> str:
  return machine.cache_file(_CACHE_NAME)


def conv_shapes(model: nn.Module, batch_size: int,
                image_shape=(32, 32, 3)) -> list[tuple]:
  """The distinct (input shape, kernel shape, strides) of a model's convs.

  The input shapes carry ``batch_size``, the batch the lowering is timed at;
  the choice is then used for that shape at any batch size.
  """
  shapes = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, layers.QuantConv) and context.method_name == (
        '__call__'):
      x = args[0]
      shape = ((batch_size, *x.shape[1:]),
               (*module.kernel_size, x.shape[-1], module.features),
               tuple(module.strides))
      if shape not in shapes:
        shapes.append(shape)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))
  return shapes


def time_lowering(x_shape, kernel_shape, strides, impl: str,
                  repeats: int = 3) -> float:
  """Median seconds of one forward + backward of the conv with ``impl``."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)

  def loss(x, kernel):
    return jnp.sum(layers.conv2d(x, kernel, strides, 'SAME', impl) ** 2)

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  jax.block_until_ready(step(x, kernel))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(x, kernel))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def candidates() -> tuple[str, ...]:
  """The lowerings 'auto' chooses among here: oneDNN's where it is built."""
  if not onednn.available():
    onednn.why_unavailable()  # Logs once why.
    return tuple(impl for impl in layers.CPU_LOWERINGS if impl != 'onednn')
  return layers.CPU_LOWERINGS


def cache_key() -> str:
  """The key of this machine's choices in the cache.

  The machine, the lowerings chosen among, and oneDNN's threads a call (a
  choice made with one thread a call is not one for all cores).
  """
  impls = candidates()
  key = f'{machine.key()} | {",".join(impls)}'
  if 'onednn' in impls:
    threads, macs = onednn.threads()
    key += f' | oneDNN threads {threads or "all"} from {macs} MACs'
  return key


def tune(model: nn.Module, batch_size: int) -> dict[str, str]:
  """Chooses the fastest lowering for each conv shape of ``model`` here.

  Measures the shapes not yet in the cache, then installs the choices for
  ``conv_impl='auto'`` (:func:`bonnkd.binary.layers.use_cpu_conv_plan`).
  No-op on GPU and TPU, and for a model whose ``conv_impl`` is not 'auto'.

  Returns:
    {shape key: one of :func:`candidates`} for the model's convs.
  """
  if jax.default_backend() != 'cpu' or getattr(
      model, 'conv_impl', 'auto') != 'auto':
    return {}
  impls = candidates()
  cache, machine_key = machine.read_cache(_CACHE_NAME), cache_key()
  plan = cache.setdefault(machine_key, {})
  measured, keys = {}, []
  for x_shape, kernel_shape, strides in conv_shapes(model, batch_size):
    key = layers.conv_shape_key(x_shape, kernel_shape, strides)
    keys.append(key)
    if key not in plan:
      times = {impl: time_lowering(x_shape, kernel_shape, strides, impl)
               for impl in impls}
      plan[key] = min(times, key=times.get)
      measured[key] = {k: round(v * 1e3, 2) for k, v in times.items()}
  if measured:
    logging.info('Conv lowering measured on %s (ms, forward + backward): %s',
                 machine_key, measured)
    machine.write_cache(_CACHE_NAME, cache)
  layers.use_cpu_conv_plan(plan)
  return {k: plan[k] for k in keys}
