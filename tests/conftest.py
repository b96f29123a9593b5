"""Shared fixtures: the real Fashion-MNIST files and a small list-file image folder; one XLA cache for the run.

A persistent compilation cache shared by every test and every subprocess a test starts (through the environment,
set before JAX is imported): the same model compiled by a dozen tests and scripts is compiled once. A cached
executable is the one compilation would produce, so results are unchanged.
"""

import os
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="ltr_jax_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from ltr_jax.data.sources import FASHION_MNIST_DIR  # noqa: E402


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> str:
  """Debian's Fashion-MNIST IDX files; CI installs them, so their absence fails the tests."""
  assert os.path.exists(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")), (
      f"Fashion-MNIST missing from {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist")
  return FASHION_MNIST_DIR


@pytest.fixture
def list_file_dataset(tmp_path) -> dict:
  """Five images in subfolders (PNG RGB, PNG grayscale, JPEG, a path with a space) and train.txt.

  Returns the list file, the image root, the labels and the original pixel arrays.
  """
  rng = np.random.default_rng(0)
  ramp = np.linspace(0, 255, 24, dtype=np.uint8)
  images = {
      "cats/a.png": (rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), 0),
      "cats/b.png": (rng.integers(0, 256, (6, 4), dtype=np.uint8), 0),  # Grayscale.
      "dogs/c.jpg": (np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :16], 128), -1).astype(np.uint8), 1),
      "dogs/d e.png": (rng.integers(0, 256, (3, 3, 3), dtype=np.uint8), 2),
      "birds/f.jpeg": (np.full((8, 9, 3), (200, 30, 90), np.uint8), 2),
  }
  root = tmp_path / "images"
  lines = []
  for path, (pixels, label) in images.items():
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(root / path, quality=95)
    lines.append(f"{path} {label}")
  list_file = tmp_path / "train.txt"
  list_file.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")  # A blank line at line 3.
  return {
      "list_file": str(list_file), "root": str(root), "paths": list(images),
      "labels": [label for _, label in images.values()], "pixels": [pixels for pixels, _ in images.values()]
  }
