"""Multi-host evaluation is right whatever order the mesh lists the processes' devices in: 2 processes x 2
devices (jax.distributed over gloo on localhost), with process 0's devices first or interleaved with process
1's, give the predictions and features of 1 process x 4 devices, which are those of the model applied directly."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from ltr_jax import models, train
from ltr_jax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "eval_script.py")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from eval_script import TEST_SUBSET  # noqa: E402
from train_script import tiny_config  # noqa: E402


def _free_port() -> int:
  """A port the OS gives out as free now, for the jax.distributed coordinator (no clash with test_train's)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir, out, devices: int, *distributed) -> subprocess.Popen:
  cmd = [sys.executable, SCRIPT, str(workdir), str(out), str(devices), *map(str, distributed)]
  return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _per_class_accuracy(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Percent correct per class, in plain numpy (independent of ltr_jax.metrics)."""
  return np.array([100.0 * np.mean(predictions[labels == c] == c) for c in range(10)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A stage-1 checkpoint of 62 steps on 100 images per class (about 50% test accuracy), and the logits and
  features of the model applied directly to TEST_SUBSET in this process."""
  workdir = tmp_path_factory.mktemp("trained")
  config = tiny_config()
  config.data.update(dict(n_max=100, imbalance_ratio=1.0))
  state = train.train_and_evaluate(config, str(workdir))
  images = sources.fashion_mnist("test").images[TEST_SUBSET]
  model = models.from_config(config.model, 10)
  logits, features = jax.jit(
      lambda v, x: model.apply(v, models.normalize(x, config.data.mean, config.data.std, model.dtype), train=False))(
          state.variables, images)
  return workdir, np.asarray(logits), np.asarray(features)


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
  """The outputs of eval_script.py in 1 process x 4 devices ('single') and 2 processes x 2 devices ('multi')."""
  workdir, _, _ = trained
  out = tmp_path_factory.mktemp("runs")
  port = _free_port()
  procs = [_start(workdir, out / "single.npz", 4)]
  procs += [_start(workdir, out / "multi.npz", 2, f"127.0.0.1:{port}", 2, p) for p in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
  return {name: dict(np.load(out / f"{name}.npz")) for name in ("single", "multi")}


def test_one_process_gives_each_sample_its_own_prediction(trained, runs):
  _, logits, features = trained
  single = runs["single"]
  np.testing.assert_array_equal(single["default/mesh_processes"], [0, 0, 0, 0])
  # Row i is test image TEST_SUBSET[i]: the model applied directly (a near-tie may break either way).
  np.testing.assert_allclose(single["default/features"], features, rtol=1e-4, atol=1e-5)
  top2 = np.sort(logits, axis=1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 1e-3
  np.testing.assert_array_equal(single["default/predictions"][clear], logits.argmax(1)[clear])


def test_two_processes_with_interleaved_devices_equal_one_process(runs):
  single, multi = runs["single"], runs["multi"]
  # The meshes are what they claim: the process owning each mesh position.
  np.testing.assert_array_equal(multi["default/mesh_processes"], [0, 0, 1, 1])
  np.testing.assert_array_equal(multi["interleaved/mesh_processes"], [0, 1, 0, 1])
  labels = sources.fashion_mnist("test").labels[TEST_SUBSET]
  accuracy = _per_class_accuracy(single["default/predictions"], labels)
  # The model has learned (chance: 10%), so predictions scored against other samples' labels would differ.
  assert np.mean(accuracy) > 30.0 and len(np.unique(single["default/predictions"])) >= 8, accuracy
  for order in ("default", "interleaved"):
    predictions = multi[f"{order}/predictions"]
    np.testing.assert_array_equal(_per_class_accuracy(predictions, labels), accuracy, err_msg=order)
    np.testing.assert_array_equal(predictions, single["default/predictions"], err_msg=order)
    np.testing.assert_allclose(multi[f"{order}/features"], single["default/features"], rtol=1e-5, atol=1e-6,
                               err_msg=order)
