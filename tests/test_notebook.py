"""The Colab notebook runs top to bottom on CPU, through both branches.

The cpu branch with the smoke presets; the accelerator branch with its full
presets (BONN's WRN-22-4 with 1-bit inner convolutions, the ResNet-18
teacher, the 4.6M student) shrunk to smoke size, their layout kept, so the
code a Colab TPU runs is exercised here.
"""

import os

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def execute(tmp_path, monkeypatch, data, **env):
  for key, value in dict(BONNKD_NOTEBOOK_DATA_SOURCE='tarball',
                         BONNKD_NOTEBOOK_DATA_DIR=data,
                         BONNKD_NOTEBOOK_WORKDIR=str(tmp_path),
                         JAX_PLATFORMS='cpu', **env).items():
    monkeypatch.setenv(key, value)
  notebook = nbformat.read(os.path.join(ROOT, 'colab', 'bonnkd.ipynb'),
                           as_version=4)
  # Should the kernel crash or a cell hang, it prints every thread's Python
  # stack to the test's captured stderr (at the crash; every 5 minutes of a
  # run that takes 2-3).
  notebook.cells.insert(0, nbformat.v4.new_code_cell(
      'import faulthandler, sys\n'
      'faulthandler.enable(file=sys.__stderr__)\n'
      'faulthandler.dump_traceback_later(300, repeat=True, '
      'file=sys.__stderr__)'))
  nbclient.NotebookClient(
      notebook, timeout=600, kernel_name='python3',
      resources={'metadata': {'path': os.path.join(ROOT, 'colab')}}).execute()
  return notebook


def outputs(notebook, kind):
  return [o for c in notebook.cells if c.cell_type == 'code'
          for o in c.get('outputs', []) if kind(o)]


def printed(notebook) -> str:
  return ''.join(o.get('text', '') for o in outputs(
      notebook, lambda o: o.get('output_type') == 'stream'))


@pytest.mark.parametrize('branch,env,runs,binary_layers', [
    # The cpu branch's smoke preset: 1-bit stem weights only.
    ('cpu', dict(BONNKD_NOTEBOOK_PRESET='smoke'),
     ('phase1', 'student_kd', 'student_alone'), 1),
    # The accelerator branch: the default presets at smoke size. WRN-10-1
    # with every inner 3x3 conv 1-bit: 3 blocks x 2 convs.
    ('accelerator', dict(BONNKD_NOTEBOOK_SCALE='smoke'),
     ('phase1', 'teacher', 'student_kd', 'student_alone'), 6),
])
def test_notebook_executes(cifar_tarball, tmp_path, monkeypatch, branch, env,
                           runs, binary_layers):
  notebook = execute(tmp_path, monkeypatch, cifar_tarball[0],
                     BONNKD_NOTEBOOK_BRANCH=branch, **env)
  for name in runs:
    assert os.path.exists(tmp_path / name / 'final.json'), name
  assert (tmp_path / 'report' / 'phase1_confusion.png').stat().st_size > 0
  images = outputs(notebook, lambda o: 'image/png' in o.get('data', {}))
  assert len(images) == 4
  text = printed(notebook)
  assert f'branch={branch}' in text
  assert f'{binary_layers} layers with 1-bit weights' in text
