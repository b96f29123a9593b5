"""The notebooks in colabs/ run end to end on CPU (a tiny Fashion-MNIST-LT) and show what they promise.

The quickstart trains stage 1 and runs stage 2 in a temporary workdir; the explorer then loads that
workdir's stage-1 checkpoint. Parameters are injected papermill-style: assignments appended to the cell
tagged 'parameters'. Any cell that raises fails the test (nbclient's CellExecutionError).
"""
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

COLABS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colabs")

# 200 -> 10 images per class (Many 3, Medium 4, Few 3), 20 validation images per class, 2 epochs of stage 1.
TINY = dict(EPOCHS=2, N_MAX=200, IMBALANCE_RATIO=20.0, VAL_PER_CLASS=20, CRT_EPOCHS=1, LWS_EPOCHS=1)


def _execute(name: str, cwd, **params) -> nbformat.NotebookNode:
  nb = nbformat.read(os.path.join(COLABS, name), as_version=4)
  cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
  cell.source += "\n# Injected by tests/test_colabs.py\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
  NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
  return nb


def _texts(cell) -> str:
  """Everything a code cell printed or displayed as text or markdown."""
  parts = []
  for out in cell.get("outputs", []):
    parts.append(out.get("text", ""))
    data = out.get("data", {})
    parts += [data.get("text/markdown", ""), data.get("text/plain", "")]
  return "\n".join(parts)


def _has_png(cell) -> bool:
  return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def _cell(nb, snippet: str):
  return next(c for c in nb.cells if c.cell_type == "code" and snippet in c.source)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
  """(executed notebook, workdir) of the quickstart in a fresh temporary workdir."""
  tmp = tmp_path_factory.mktemp("colabs")
  workdir = str(tmp / "workdir")
  return _execute("quickstart_tpu.ipynb", tmp, WORKDIR=workdir, **TINY), workdir


def test_quickstart_trains_both_stages_and_shows_the_report(quickstart):
  nb, workdir = quickstart
  assert "Device(id=0" in _texts(_cell(nb, "jax.devices()"))
  assert "ltr_jax from" in _texts(_cell(nb, "importlib.util.find_spec"))  # installed: no clone, no pip
  assert "validation top-1" in _texts(_cell(nb, "train.train_and_evaluate"))
  table = _cell(nb, "report.markdown_table")
  markdown = "".join(out["data"].get("text/markdown", "") for out in table.outputs if "data" in out)
  for method in ("Joint", "NCM", "cRT", r"cRT \(cached features\) ‡", "LWS"):
    assert re.search(rf"\| {method} \| \d+\.\d \|", markdown), (method, markdown)
  assert re.search(r"\| τ-norm \(τ = [\d.]+\) \|", markdown), markdown
  plots = [c for c in nb.cells if c.cell_type == "code" and "Image(filename" in c.source]
  assert len(plots) == 4 and all(_has_png(c) for c in plots)
  assert os.path.isdir(os.path.join(workdir, "stage2"))


def test_explorer_loads_the_quickstart_checkpoint_and_plots(quickstart, tmp_path):
  _, workdir = quickstart
  nb = _execute("explore_classifier.ipynb", tmp_path, WORKDIR=workdir)
  assert "after" in _texts(_cell(nb, "restore_stage1")) and "fashion_mnist_lt" in _texts(_cell(nb, "restore_stage1"))
  assert "best τ on validation" in _texts(_cell(nb, "tau_sweep_predictions"))
  comparison = _cell(nb, "ncm_centroids")
  assert re.search(r"\| NCM \| \d+\.\d \|", _texts(comparison))
  plots = [c for c in nb.cells if c.cell_type == "code" and "plt.subplots" in c.source]
  assert len(plots) == 3 and all(_has_png(c) for c in plots), [c.outputs for c in plots]
