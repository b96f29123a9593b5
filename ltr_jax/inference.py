"""Inference over a split: the model's top-1 predictions and features of every sample, and their groups.

Jitted and data-parallel like training (BatchNorm in inference mode, no augmentation). Every sample carries its
index through the gather of the sharded outputs, so rows land at their sample's position whatever order the mesh
lists the devices of several processes in. Stage 1 validates with it, stage 2 extracts its features with it, and
the evaluate command (ltr_jax.evaluate) scores a checkpoint with it.
"""
from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltr_jax import metrics, models, ops, parallel, progress
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets, longtail, pipeline, transforms
from ltr_jax.data.sources import Source
from ltr_jax.models import LTRModel

Predict = Callable[[Variables, jax.Array], tuple[jax.Array, jax.Array]]


def make_predict(model: LTRModel, data: ml_collections.ConfigDict, mesh: Mesh) -> Predict:
  """Jitted (variables, uint8 images) -> (top-1 of the model's head [B], features [B, d]), batch sharded."""

  def predict(variables, images):
    logits, features = model.apply(variables, models.normalize(images, data.mean, data.std, model.dtype), train=False)
    return ops.top1(logits), features

  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(predict, in_shardings=(rep, shard), out_shardings=(shard, shard))


def five_crop_transform(config: ml_collections.ConfigDict) -> transforms.FiveCrop:
  """Test-time ensembling's five crops of config key data.image_size from the image resized to
  data.five_crop_resize (ltr_jax.validate checks that it is not smaller)."""
  data = config.data
  return transforms.FiveCrop(data.five_crop_resize, data.image_size, data.interpolation)


def run_inference(predict: Predict, variables: Variables, source: Source, config: ml_collections.ConfigDict, mesh: Mesh,
                  desc: str, transform: transforms.Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(top-1 predictions [N], features [N, d]) of every sample of `source`, in order, on every host, through config
  key data.eval_transform, or `transform`. A transform that gives K crops of an image (FiveCrop) gives each crop's:
  predictions [N, K], features [N, K, d]."""
  batch_size = config.stage2.batch_size
  transform = transform or transforms.eval_transform_of(config.data)
  batches = pipeline.eval_batches(source, transform, global_batch=batch_size, process_index=jax.process_index(),
                                  process_count=jax.process_count(), num_workers=config.data.num_workers)
  predictions, features = None, None
  total = -(-len(source) // batch_size)
  bar = progress.bar(total, desc, unit="batch", leave=False, disable=jax.process_index() != 0)
  for batch in batches:
    images = batch["image"]
    crops = images.shape[1] if images.ndim == 5 else 0  # [B, K, H, W, C]: K crops of each image, as K rows
    if crops:
      images = images.reshape(-1, *images.shape[2:])
    sharded = parallel.global_batch({"image": images, "index": np.repeat(batch["index"], max(crops, 1))}, mesh)
    top1, z = predict(variables, sharded["image"])
    top1, z, index = parallel.to_host((top1, z, sharded["index"]))
    if crops:  # each process's rows are whole images' crops, in order
      top1, z, index = top1.reshape(-1, crops), z.reshape(-1, crops, z.shape[-1]), index[::crops]
    real = index < len(source)  # padding of the last batch
    if features is None:
      predictions = np.zeros((len(source), *top1.shape[1:]), np.int32)
      features = ops.host_array((len(source), *z.shape[1:]))
    predictions[index[real]] = top1[real]
    features[index[real]] = z[real]
    bar.update(1)
  bar.close()
  return predictions, features


def top_k(classifier: models.Classifier, features: np.ndarray, k: int = 5,
          chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """(classes [N, k], their softmax probabilities [N, k]) of the k largest logits of `classifier` on each row of
  `features`, the largest first; chunk by chunk of rows on the host (no [N, C] array)."""
  k = min(k, classifier.kernel.shape[1])
  classes, probabilities = np.zeros((len(features), k), np.int64), np.zeros((len(features), k), np.float64)
  for start in range(0, len(features), chunk_size):
    logits = classifier.logits(features[start:start + chunk_size]).astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    classes[start:start + len(p)], probabilities[start:start + len(p)] = top, np.take_along_axis(p, top, axis=1)
  return classes, probabilities


def image_names(source: Source) -> list[str]:
  """What names each record of `source`: its image file where the records are files, else its index."""
  base, indices = longtail.base_records(source)
  if hasattr(base, "image_path"):
    return [base.image_path(int(i)) for i in indices]
  return [str(i) for i in range(len(source))]


def evaluate_split(predict: Predict, variables: Variables, source: Source, splits: datasets.Splits,
                   config: ml_collections.ConfigDict, mesh: Mesh, desc: str = "eval") -> dict[str, float | None]:
  """Top-1 All / Many / Medium / Few (percent) of the model's own head on `source`."""
  predictions, _ = run_inference(predict, variables, source, config, mesh, desc)
  return metrics.groups_of(predictions, source.labels, splits)
