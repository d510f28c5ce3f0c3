"""The native XNOR-popcount conv, bit for bit against the pure-JAX one.

Every handler: packed activations in, float activations whose signs the
call packs itself (zeros of both signs and NaN among them), and the same
writing the packed bits of lo <= count <= hi (the binary output).

Every instruction path this CPU runs (scalar everywhere, AVX2 and AVX-512
VPOPCNTDQ where the CPU has them), on odd shapes: stride 2, VALID and uneven
padding, batch 1, channel counts that leave tails of every register block,
and more words than the AVX2 path's byte counters hold (31).
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bonnkd import deploy
from bonnkd.binary import packing
from bonnkd.cpu import xnor
from tests.conftest import ROOT

needs_native = pytest.mark.skipif(
    not xnor.available(), reason='the native XNOR conv is not built here')

SHAPES = [
    # (input shape, kernel size, C_out, strides, padding)
    ((2, 9, 7, 33), 3, 20, (1, 1), 'SAME'),
    ((1, 9, 7, 33), 3, 57, (2, 2), 'SAME'),
    ((3, 6, 6, 64), 3, 8, (2, 1), 'VALID'),
    ((1, 5, 5, 7), 1, 3, (1, 1), 'SAME'),
    ((2, 4, 4, 3), 3, 16, (1, 1), ((2, 0), (1, 2))),
    ((1, 8, 8, 1000), 3, 72, (1, 1), 'SAME'),  # 32 words x 9 taps
    ((1, 4, 4, 96), 3, 200, (1, 1), 'SAME'),  # 64 + 64 + 64 + 8
    # Rows of 10 inside pixels (tiles of 4, 4, 2) and of 5 (4, 1); 112 =
    # a 64-channel tile + a 48-channel one; 40 channels = 2 words.
    ((1, 11, 12, 40), 3, 112, (1, 1), 'SAME'),
    ((1, 12, 13, 40), 3, 36, (2, 2), 'SAME'),
    ((2, 3, 1, 5), 3, 17, (1, 1), 'SAME'),  # no window inside the image
]


def test_paths_name_what_the_cpu_has():
  if not xnor.available():
    assert xnor.paths() == set()
    return
  with open('/proc/cpuinfo') as f:
    flags = f.read().split('\nflags')[1].split('\n')[0] + ' '
  expected = {'scalar'}
  if ' avx2 ' in flags:
    expected.add('avx2')
  if ' avx512f ' in flags and ' avx512_vpopcntdq ' in flags:
    expected.add('avx512')
  assert xnor.paths() == expected


@needs_native
@pytest.mark.parametrize('shape,kernel_size,cout,strides,padding', SHAPES)
def test_every_path_equals_the_pure_jax_conv(shape, kernel_size, cout,
                                             strides, padding):
  rng = np.random.default_rng(cout)
  x = rng.normal(size=shape).astype(np.float32)
  kernel = rng.normal(size=(kernel_size, kernel_size, shape[-1], cout))
  x_words = packing.pack_signs(jnp.asarray(x))
  kernel_words = jnp.asarray(packing.pack_kernel_np(kernel))
  reference = packing.xnor_conv2d(x_words, kernel_words, shape[-1], strides,
                                  padding)
  for path in sorted(xnor.paths()) + ['auto']:
    out = jax.jit(lambda a, b, path=path: xnor.xnor_conv2d(
        a, b, shape[-1], strides, padding, path))(x_words, kernel_words)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, reference, err_msg=path)


@needs_native
@pytest.mark.parametrize('shape,kernel_size,cout,strides,padding', SHAPES)
def test_packing_inside_the_call_equals_the_pure_jax_conv(
    shape, kernel_size, cout, strides, padding):
  rng = np.random.default_rng(cout + 1)
  x = rng.normal(size=shape).astype(np.float32)
  # Zeros of both signs read as +1 (x >= 0), as in training; NaN as -1.
  x.flat[::5] = 0.0
  x.flat[1::7] = -0.0
  x.flat[2::11] = np.nan
  kernel = rng.normal(size=(kernel_size, kernel_size, shape[-1], cout))
  kernel_words = jnp.asarray(packing.pack_kernel_np(kernel))
  reference = packing.sign_xnor_conv2d(jnp.asarray(x), kernel_words, strides,
                                       padding)
  np.testing.assert_array_equal(
      reference, packing.xnor_conv2d(packing.pack_signs_np(x), kernel_words,
                                     shape[-1], strides, padding))
  for path in sorted(xnor.paths()) + ['auto']:
    out = jax.jit(lambda a, b, path=path: xnor.sign_xnor_conv2d(
        a, b, strides, padding, path))(x, kernel_words)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, reference, err_msg=path)


@needs_native
@pytest.mark.parametrize('shape,kernel_size,cout,strides,padding', SHAPES)
def test_binary_output_equals_the_pure_jax_one(shape, kernel_size, cout,
                                               strides, padding):
  rng = np.random.default_rng(cout + 2)
  x = rng.normal(size=shape).astype(np.float32)
  x.flat[::5] = 0.0
  kernel = rng.normal(size=(kernel_size, kernel_size, shape[-1], cout))
  kernel_words = jnp.asarray(packing.pack_kernel_np(kernel))
  # Bounds about the counts' spread, so that every test cuts some: lower
  # only, upper only, both, empty (lo > hi) and everything.
  spread = int(np.sqrt(kernel_size * kernel_size * shape[-1]))
  lo = rng.integers(-spread, spread, cout).astype(np.int32)
  hi = (lo + rng.integers(0, 2 * spread, cout)).astype(np.int32)
  big = np.iinfo(np.int32).max
  lo[0::5], hi[1::5], hi[2::5] = -big, big, lo[2::5] - 1
  lo[3::5], hi[3::5] = -big, big
  reference = packing.sign_xnor_conv2d_bits(jnp.asarray(x), kernel_words,
                                            lo, hi, strides, padding)
  counts = packing.sign_xnor_conv2d(jnp.asarray(x), kernel_words, strides,
                                    padding)
  inside = (lo <= counts) & (counts <= hi)
  assert 0 < np.mean(inside) < 1
  for path in sorted(xnor.paths()) + ['auto']:
    out = jax.jit(lambda a, b, c, d, path=path: xnor.sign_xnor_conv2d_bits(
        a, b, c, d, strides, padding, path))(x, kernel_words, lo, hi)
    assert out.dtype == jnp.uint32
    np.testing.assert_array_equal(out, reference, err_msg=path)


# Run in a process whose every call is shared with XLA's pool, however
# small (the threshold off): the signs packed by chunks of pixels, then,
# past a barrier, the rows convolved by chunks, on the calling thread and
# the pool's.
SHARED_CALLS = """
import jax.numpy as jnp
import numpy as np
from bonnkd.binary import packing
from bonnkd.cpu import xnor
from tests.test_xnor_native import SHAPES
for shape, size, cout, strides, padding in SHAPES:
  rng = np.random.default_rng(cout + 3)
  x = rng.normal(size=shape).astype(np.float32)
  kernel = rng.normal(size=(size, size, shape[-1], cout))
  words = jnp.asarray(packing.pack_kernel_np(kernel))
  counts = packing.sign_xnor_conv2d(jnp.asarray(x), words, strides, padding)
  lo = np.full(cout, -1, np.int32)
  hi = np.full(cout, 2**30, np.int32)
  bits = packing.sign_xnor_conv2d_bits(jnp.asarray(x), words, lo, hi,
                                       strides, padding)
  for path in sorted(xnor.paths()):
    np.testing.assert_array_equal(
        xnor.sign_xnor_conv2d(x, words, strides, padding, path), counts,
        err_msg=f'{shape} {path}')
    np.testing.assert_array_equal(
        xnor.sign_xnor_conv2d_bits(x, words, lo, hi, strides, padding, path),
        bits, err_msg=f'{shape} {path} bits')
print(len(SHAPES))
"""


@needs_native
def test_calls_shared_with_the_pool_equal_the_pure_jax_conv():
  out = subprocess.run(
      [sys.executable, '-c', SHARED_CALLS], capture_output=True, text=True,
      env={**os.environ, 'BONNKD_XNOR_PARALLEL_WORK': '0',
           'JAX_PLATFORMS': 'cpu'}, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split() == [str(len(SHAPES))]


@needs_native
def test_a_path_the_cpu_lacks_is_refused():
  missing = {'scalar', 'avx2', 'avx512'} - xnor.paths()
  if not missing:
    pytest.skip('this CPU runs every path')
  with pytest.raises(RuntimeError, match='This CPU runs the XNOR'):
    xnor.xnor_conv2d(jnp.zeros((1, 4, 4, 1), jnp.uint32),
                     jnp.zeros((3, 3, 1, 8), jnp.uint32), 8,
                     path=sorted(missing)[0])


@needs_native
def test_deploy_runs_the_custom_calls():
  kernels = deploy.xnor_kernels('auto')
  x, k = jnp.zeros((1, 8, 8, 16)), jnp.zeros((3, 3, 1, 4), jnp.uint32)
  hlo = jax.jit(lambda x, k: kernels.sign_conv(x, k, (1, 1), 'SAME')
                ).lower(x, k).as_text()
  assert 'bonnkd_sign_xnor_conv' in hlo
  bounds = jnp.zeros(4, jnp.int32)
  hlo = jax.jit(lambda x, k: kernels.sign_conv_bits(
      x, k, bounds, bounds, (1, 1), 'SAME')).lower(x, k).as_text()
  assert 'bonnkd_sign_xnor_conv_bits' in hlo


def test_forced_off_deploy_uses_the_pure_jax_conv():
  code = ('from bonnkd import deploy; from bonnkd.binary import packing; '
          'from bonnkd.cpu import xnor; '
          'print(xnor.available(), '
          'deploy.xnor_kernels("auto") == deploy.XnorKernels('
          'packing.sign_xnor_conv2d, packing.xnor_conv2d, '
          'packing.sign_xnor_conv2d_bits))')
  out = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True,
      env={**os.environ, xnor.ENV: '0', 'JAX_PLATFORMS': 'cpu'}, check=True,
      cwd=ROOT)
  assert out.stdout.split() == ['False', 'True']
  assert 'unavailable ($BONNKD_XNOR_NATIVE=0)' in out.stderr
