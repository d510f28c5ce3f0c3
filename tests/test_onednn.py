"""oneDNN's convolutions (XLA FFI custom calls) equal XLA's, and train alike.

Where the library is built (``pip install -e .`` on x86-64 Linux with g++,
as on CI) every test here runs; ``test_the_library_is_built_where_it_can_be``
makes a missing build a failure there, not a skip. The fallback (no library,
or ``BONNKD_ONEDNN=0``) is tested in a child process.
"""

import functools
import os
import platform
import shutil
import subprocess
import sys
import threading

import jax
from jax import lax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

from bonnkd import train
from bonnkd.binary import layers
from bonnkd.cpu import onednn
from bonnkd.data import input_pipeline
from tests.conftest import Interrupt
from tests.conftest import ROOT
from tests.conftest import interrupt_at_step
from tests.conftest import tiny_config

needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason=f'oneDNN: {onednn.why_unavailable()}')


def xla_conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_the_library_is_built_where_it_can_be():
  if (platform.system() != 'Linux' or platform.machine() != 'x86_64'
      or shutil.which('g++') is None):
    pytest.skip('not x86-64 Linux with g++: the library is optional there')
  assert os.environ.get(onednn.ENV, '1') != '0', 'run with oneDNN on'
  assert onednn.available(), onednn.why_unavailable()


# (N, H, W, C_in, C_out, kernel, stride, padding): odd sizes, stride 2, 1x1,
# batch 1, asymmetric SAME padding, VALID and explicit padding.
CASES = [
    (2, 9, 10, 3, 5, 3, 1, 'SAME'),
    (1, 8, 8, 4, 6, 3, 2, 'SAME'),
    (3, 7, 7, 5, 4, 1, 1, 'SAME'),
    (2, 16, 16, 16, 32, 3, 2, 'SAME'),
    (1, 5, 6, 2, 3, 3, 2, 'SAME'),
    (2, 8, 8, 8, 8, 1, 2, 'VALID'),
    (1, 6, 7, 3, 4, 3, 1, ((2, 0), (1, 3))),
    (2, 9, 9, 5, 10, 1, 2, 'SAME'),  # strided 1x1, few input channels
]


@needs_onednn
@pytest.mark.parametrize('n,h,w,cin,cout,k,s,padding', CASES)
def test_forward_and_gradients_equal_xla(n, h, w, cin, cout, k, s, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, h, w, cin)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
  dy_seed = jnp.asarray(rng.normal(size=xla_conv(x, kernel, (s, s),
                                                 padding).shape), jnp.float32)

  def loss(conv):
    return lambda x, kernel: jnp.sum(conv(x, kernel, (s, s), padding)
                                     * dy_seed)

  ours = jax.jit(onednn.conv2d, static_argnums=(2, 3))(x, kernel, (s, s),
                                                       padding)
  theirs = xla_conv(x, kernel, (s, s), padding)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  grads = jax.jit(jax.grad(loss(onednn.conv2d), argnums=(0, 1)))(x, kernel)
  expected = jax.grad(loss(xla_conv), argnums=(0, 1))(x, kernel)
  for got, want in zip(grads, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_gradients_pass_jax_numerical_check():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 3)), jnp.float32)
  jtu.check_grads(
      lambda x, k: onednn.conv2d(x, k, (2, 2), 'SAME'), (x, kernel),
      order=1, modes=['rev'], atol=2e-2, rtol=2e-2, eps=1e-2)


@needs_onednn
def test_the_compiled_step_calls_onednn_not_xla():
  x = jnp.ones((2, 8, 8, 4), jnp.float32)
  kernel = jnp.ones((3, 3, 4, 8), jnp.float32)

  def loss(x, kernel):
    return jnp.sum(layers.conv2d(x, kernel, (1, 1), 'SAME', 'onednn') ** 2)

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(
      x, kernel).compile().as_text()
  for target in onednn.TARGETS:
    assert f'custom_call_target="{target}"' in hlo, target
  assert 'convolution(' not in hlo


@needs_onednn
def test_a_strided_1x1_conv_reaches_onednn_at_stride_1():
  # oneDNN 3.2's strided 1x1 weight gradient writes past its scratchpad on
  # NHWC inputs with few channels (it corrupted a notebook run's heap): the
  # input is subsampled first and oneDNN sees a 1x1 conv of stride 1.
  x = jnp.ones((2, 32, 32, 5), jnp.float32)
  kernel = jnp.ones((1, 1, 5, 10), jnp.float32)

  def loss(x, kernel):
    return jnp.sum(onednn.conv2d(x, kernel, (2, 2), 'SAME') ** 2)

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).as_text()
  calls = [line for line in hlo.splitlines() if 'bonnkd_onednn_conv' in line]
  assert len(calls) == 3
  for call in calls:
    assert 'stride_h = 1' in call and 'stride_w = 1' in call, call


@needs_onednn
def test_vmap_maps_over_the_leading_axis():
  rng = np.random.default_rng(2)
  xs = jnp.asarray(rng.normal(size=(3, 2, 6, 6, 4)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
  mapped = jax.vmap(lambda x: onednn.conv2d(x, kernel))(xs)
  for i in range(3):
    np.testing.assert_allclose(mapped[i], xla_conv(xs[i], kernel, (1, 1),
                                                   'SAME'),
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_xla_convolution():
  assert layers.lowering((2, 8, 8, 4), (3, 3, 4, 8), (1, 1), 'onednn',
                         jnp.bfloat16) == 'native'
  with pytest.raises(TypeError, match='float32'):
    if not onednn.available():
      raise TypeError('float32 (the library is not built here)')
    onednn.conv2d(jnp.ones((1, 4, 4, 2), jnp.bfloat16),
                  jnp.ones((3, 3, 2, 2), jnp.bfloat16))


def steps(config, n=3):
  """n train steps of the run's own step on fixed random rows."""
  run = train.setup(config, 3200)
  rng = np.random.default_rng(0)
  split = input_pipeline.Split(
      rng.integers(0, 256, (32 * n, 32, 32, 3), np.uint8),
      rng.integers(0, 10, (32 * n,), np.int32))
  on_devices = run.put_train_split(split)
  state, losses = run.state, []
  for i in range(n):
    (indices,) = run.mesh.put_batch(np.arange(32 * i, 32 * (i + 1),
                                              dtype=np.int32))
    state, metrics = run.train_step_at(state, *on_devices, indices)
    losses.append(float(metrics['loss']))
  return state, losses


@needs_onednn
@pytest.mark.parametrize('layout', [{}, {'model.binarize': 'inner',
                                         'model.binarize_what': 'both'}],
                         ids=['1-bit stem', 'W1A1'])
def test_train_steps_equal_the_native_ones(cifar_tarball, layout):
  native, native_losses = steps(tiny_config(
      cifar_tarball[0], **layout, **{'model.conv_impl': 'native'}))
  ours, our_losses = steps(tiny_config(
      cifar_tarball[0], **layout, **{'model.conv_impl': 'onednn'}))
  np.testing.assert_allclose(our_losses, native_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(ours.params),
                  jax.tree.leaves(native.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@needs_onednn
def test_interrupted_onednn_run_resumes_bit_exact(cifar_tarball, tmp_path,
                                                  monkeypatch):
  config = tiny_config(cifar_tarball[0], **{'model.conv_impl': 'onednn',
                                            'num_epochs': 2.0})
  reference = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  # Mid-epoch 2, after the epoch-1 checkpoint at step 15.
  undo = interrupt_at_step(monkeypatch, 20)
  with pytest.raises(Interrupt):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  undo()
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert int(resumed.step) == int(reference.step) == 30
  for a, b in zip(jax.tree.leaves(reference.params),
                  jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(a, b)


FALLBACK = '''
import jax, jax.numpy as jnp
from bonnkd.binary import layers
from bonnkd.cpu import onednn
x = jnp.ones((1, 6, 6, 2), jnp.float32)
k = jnp.ones((3, 3, 2, 4), jnp.float32)
f = jax.jit(lambda x, k: layers.conv2d(x, k, (1, 1), 'SAME', 'onednn'))
hlo = f.lower(x, k).compile().as_text()
print('AVAILABLE', onednn.available(), repr(onednn.why_unavailable()))
print('CUSTOM_CALL', 'bonnkd_onednn' in hlo)
print('SUM', float(f(x, k).sum()))
'''


def test_forced_off_by_environment_uses_xla_and_says_so():
  env = dict(os.environ, BONNKD_ONEDNN='0', JAX_PLATFORMS='cpu',
             PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-c', FALLBACK], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       check=True)
  lines = dict(line.split(' ', 1) for line in out.stdout.splitlines())
  assert lines['AVAILABLE'] == "False '$BONNKD_ONEDNN=0'"
  assert lines['CUSTOM_CALL'] == 'False'
  # 6x6 SAME 3x3 of ones over 2 channels: 4 corners x 8, 16 edges x 12,
  # 16 inner x 18, times 4 output channels.
  assert float(lines['SUM']) == 4 * (4 * 8 + 16 * 12 + 16 * 18)
  # Logged once, at the first conv that asked for it.
  assert out.stderr.count("oneDNN convolutions unavailable") == 1, out.stderr


@needs_onednn
@pytest.mark.parametrize('x_shape,kernel_shape', [
    ((4, 16, 16, 16), (3, 3, 16, 32)),
    # The 1x1 conv whose gradients hung with two threads a call.
    ((32, 32, 32, 5), (1, 1, 5, 10)),
])
def test_one_thread_and_all_cores_compute_the_same(x_shape, kernel_shape):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
  grad = jax.jit(jax.grad(lambda x, k: jnp.sum(onednn.conv2d(x, k) ** 2),
                          argnums=(0, 1)))
  results = {}
  try:
    # Every call gets the team (these are below the default's size). All
    # cores first: the same shapes with one thread then take primitives of
    # their own (a team size is part of the cache key), not those made for
    # a team the call does not have.
    onednn.set_parallel_macs(0)
    for threads in (0, 1):
      onednn.set_threads(threads)
      results[threads] = jax.device_get(grad(x, kernel))
    # The default: calls this small run on one thread whatever the team.
    onednn.set_parallel_macs(onednn.DEFAULT_PARALLEL_MACS)
    onednn.set_threads(0)
    results['small'] = jax.device_get(grad(x, kernel))
  finally:
    onednn.set_threads(onednn.DEFAULT_THREADS)
    onednn.set_parallel_macs(onednn.DEFAULT_PARALLEL_MACS)
  for a, b in zip(results[1], results[0]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  # One thread, the same primitives' sums in the same order: bit for bit.
  jax.tree.map(np.testing.assert_array_equal, results['small'], results[1])
  with pytest.raises(ValueError, match='0 \\(all cores\\)'):
    onednn.set_threads(-1)
  with pytest.raises(ValueError, match='multiply-adds'):
    onednn.set_parallel_macs(-1)


@needs_onednn
def test_each_calling_thread_runs_primitives_of_its_own_with_the_same_result():
  # Independent convs and their gradients in one step, run from this thread
  # and from two others: each thread's calls make and run primitives of
  # their own (oneDNN's rule for its default build), all bit-equal, and
  # equal to XLA's conv to float tolerance.
  rng = np.random.default_rng(5)
  shapes = [((8, 16, 16, 16), (3, 3, 16, 32)), ((8, 8, 8, 32), (3, 3, 32, 32)),
            ((8, 16, 16, 8), (1, 1, 8, 16)), ((4, 16, 16, 16), (3, 3, 16, 16))]
  args = [(jnp.asarray(rng.normal(size=x), jnp.float32),
           jnp.asarray(rng.normal(size=k), jnp.float32))
          for x, k in shapes * 2]

  def loss(conv, args):
    return sum(jnp.sum(jnp.tanh(conv(x, k))) for x, k in args)

  step = jax.jit(jax.value_and_grad(functools.partial(
      loss, lambda x, k: onednn.conv2d(x, k, (1, 1), 'SAME'))))
  results = [jax.device_get(step(args))]
  threads = [threading.Thread(
      target=lambda: results.append(jax.device_get(step(args))))
             for _ in range(2)]
  for thread in threads:
    thread.start()
    thread.join()
  assert len(results) == 3
  for got in results[1:]:
    jax.tree.map(np.testing.assert_array_equal, got, results[0])
  reference = jax.device_get(jax.jit(jax.value_and_grad(functools.partial(
      loss, lambda x, k: lax.conv_general_dilated(
          x, k, (1, 1), 'SAME',
          dimension_numbers=('NHWC', 'HWIO', 'NHWC')))))(args))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-3),
               results[0], reference)
