"""The grain pipeline on real Fashion-MNIST: deterministic, resumable, worker- and host-independent."""
import numpy as np
import pytest

from ltr_jax.data import longtail, pipeline, sources
from ltr_jax.data.sampling import IndexSampler
from ltr_jax.data.transforms import (Identity, PadCropFlip, RandomResizedCropFlip, ResizeCenterCrop, eval_transform,
                                     train_transform)
from ltr_jax.errors import ConfigError


@pytest.fixture(scope="module")
def fmnist_lt():
  train = sources.fashion_mnist("train")
  indices = longtail.longtail_indices(train.labels, longtail.exponential_profile(200, 10, 10), seed=0)
  return longtail.Subset(train, indices)


def _batches(source, start_step, num_steps, workers=0, process_index=0, process_count=1, seed=3):
  sampler = IndexSampler(source.labels, 10, "sqrt", seed=seed, num_epochs=4)
  return list(
      pipeline.train_batches(source, sampler, PadCropFlip(28), global_batch=32, start_step=start_step,
                             num_steps=num_steps, seed=seed, process_index=process_index, process_count=process_count,
                             num_workers=workers))


def test_batches_follow_the_sampler(fmnist_lt):
  batches = _batches(fmnist_lt, 0, 3)
  assert len(batches) == 3
  assert batches[0]["image"].shape == (32, 28, 28, 1) and batches[0]["image"].dtype == np.uint8
  sampler = IndexSampler(fmnist_lt.labels, 10, "sqrt", seed=3, num_epochs=4)
  expected = fmnist_lt.labels[sampler.epoch_indices(0)[:96]]
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), expected)


def test_epochs_advance_by_steps(fmnist_lt):
  sampler = IndexSampler(fmnist_lt.labels, 10, "sqrt", seed=3, num_epochs=4)
  spe = pipeline.steps_per_epoch(len(fmnist_lt), 32)
  batches = _batches(fmnist_lt, spe, spe + 2)  # the first two steps of epoch 1
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]),
                                fmnist_lt.labels[sampler.epoch_indices(1)[:64]])


def test_resumed_stream_equals_uninterrupted(fmnist_lt):
  full = _batches(fmnist_lt, 0, 8)
  resumed = _batches(fmnist_lt, 5, 8)
  for a, b in zip(full[5:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_workers_give_the_same_batches(fmnist_lt):
  for a, b in zip(_batches(fmnist_lt, 0, 4), _batches(fmnist_lt, 0, 4, workers=2)):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_process_shards_assemble_the_global_batch(fmnist_lt):
  full = _batches(fmnist_lt, 0, 3)
  shards = [_batches(fmnist_lt, 0, 3, process_index=p, process_count=2) for p in range(2)]
  for step in range(3):
    np.testing.assert_array_equal(np.concatenate([shards[p][step]["image"] for p in range(2)]), full[step]["image"])


def test_eval_batches_cover_the_split_once_with_padding(fmnist_lt):
  batches = list(pipeline.eval_batches(fmnist_lt, Identity(), global_batch=64))
  index = np.concatenate([b["index"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  real = index < len(fmnist_lt)
  assert len(index) % 64 == 0 and len(index) - len(fmnist_lt) < 64
  np.testing.assert_array_equal(index[real], np.arange(len(fmnist_lt)))
  np.testing.assert_array_equal(labels[real], fmnist_lt.labels)
  np.testing.assert_array_equal(batches[0]["image"][5], fmnist_lt[5])


def test_pad_crop_flip_is_a_shifted_window():
  image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
  rng = np.random.default_rng(0)
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  for _ in range(20):
    out = PadCropFlip(28)(image, rng)
    windows = [padded[y:y + 28, x:x + 28] for y in range(9) for x in range(9)]
    assert any(np.array_equal(out, w) or np.array_equal(out, w[:, ::-1]) for w in windows)


def test_imagenet_transforms_shapes_and_center_crop():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
  for jitter in (0.0, 0.4):
    out = RandomResizedCropFlip(224, jitter=jitter)(image, rng)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
  # A constant image stays constant through resize + centre crop.
  flat = np.full((300, 400, 3), 77, np.uint8)
  out = ResizeCenterCrop(256, 224)(flat)
  assert out.shape == (224, 224, 3) and (out == 77).all()


def test_unknown_transform_names_the_config_key():
  with pytest.raises(ConfigError, match="data.train_transform"):
    train_transform("autoaugment", 224)
  with pytest.raises(ConfigError, match="data.eval_transform"):
    eval_transform("ten_crop", 224)


def test_worker_processes_leave_nothing_behind_at_exit():
  """A pipeline with worker processes, consumed to its end by a process that keeps the last batch and exits: its
  stderr is empty (no 'leaked shared_memory / semaphore objects' from the resource tracker, no traceback of an array
  unmapped during shutdown)."""
  import os
  import subprocess
  import sys
  code = ("from ltr_jax.data import pipeline, sampling, sources, transforms\n"
          "source = sources.fashion_mnist('test')\n"
          "sampler = sampling.IndexSampler(source.labels, 10, 'instance', seed=0, num_epochs=1)\n"
          "batches = list(pipeline.train_batches(source, sampler, transforms.PadCropFlip(28), global_batch=64,\n"
          "                                      start_step=0, num_steps=4, seed=0, num_workers=2))\n"
          "print(len(batches), batches[-1]['image'].shape)\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "4 (64, 28, 28, 1)", out.stderr[-3000:]
  assert out.stderr == "", out.stderr[-3000:]
