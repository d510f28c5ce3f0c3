"""The Colab notebook runs top to bottom on CPU with the smoke presets."""

import os

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_notebook_executes(cifar_tarball, tmp_path, monkeypatch):
  monkeypatch.setenv('BONNKD_NOTEBOOK_PRESET', 'smoke')
  monkeypatch.setenv('BONNKD_NOTEBOOK_DATA_SOURCE', 'tarball')
  monkeypatch.setenv('BONNKD_NOTEBOOK_DATA_DIR', cifar_tarball[0])
  monkeypatch.setenv('BONNKD_NOTEBOOK_WORKDIR', str(tmp_path))
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  notebook = nbformat.read(os.path.join(ROOT, 'colab', 'bonnkd.ipynb'),
                           as_version=4)
  nbclient.NotebookClient(
      notebook, timeout=600, kernel_name='python3',
      resources={'metadata': {'path': os.path.join(ROOT, 'colab')}}).execute()
  for name in ('phase1', 'student_kd', 'student_alone'):
    assert os.path.exists(tmp_path / name / 'final.json')
  assert (tmp_path / 'report' / 'phase1_confusion.png').stat().st_size > 0
  images = [o for c in notebook.cells if c.cell_type == 'code'
            for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert len(images) == 4
