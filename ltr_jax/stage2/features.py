"""The features every stage-2 method sees, and their cache.

Features of the train / validation / test splits are extracted once per backbone (BatchNorm in inference mode,
no augmentation) and cached in a run directory's features/, keyed by a hash of the exact backbone weights and
BatchNorm statistics, of the data config and of the cache's dtype: a rerun, or a method whose backbone is stage 1's,
reads them back. The cache holds them in config key stage2.feature_dtype: a 16-bit dtype halves the memory of every
split (iNaturalist's 437k x 768 training features: 1.3 GB in float32, 0.67 GB in bfloat16); every consumer computes
in float32, casting a chunk or batch of rows at a time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import ml_collections
import ml_dtypes
import numpy as np
from jax.sharding import Mesh

from ltr_jax import inference, ops, parallel, paths
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets
from ltr_jax.models import LTRModel

SPLITS = ("train", "val", "test")
# config key stage2.feature_dtype: the dtype of the cached features.
FEATURE_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


@dataclasses.dataclass(frozen=True)
class Features:
  """The cached features of each split, with the splits' labels and class counts."""
  splits: datasets.Splits
  train: np.ndarray | None
  val: np.ndarray | None
  test: np.ndarray

  def labels(self, split: str) -> np.ndarray:
    return getattr(self.splits, split).labels


def backbone_digest(variables: Variables) -> str:
  """A hash of the exact backbone weights and BatchNorm statistics."""
  digest = hashlib.sha1()
  for leaf in jax.tree.leaves((variables["params"]["backbone"], variables["batch_stats"])):
    digest.update(np.asarray(leaf).tobytes())
  return digest.hexdigest()


def _fingerprint(backbone: str, config: ml_collections.ConfigDict, split: str, num_samples: int) -> str:
  """Identifies a feature cache: the backbone digest, the data and transform, the split, a 16-bit dtype (float32
  adds nothing, so that float32 caches written before the dtype was a choice stay valid)."""
  key = [backbone, split, num_samples, config.data.to_dict()]
  if config.stage2.feature_dtype != "float32":
    key.append(config.stage2.feature_dtype)
  return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def as_dtype(features: np.ndarray, dtype: str) -> np.ndarray:
  """`features` in `dtype` (a key of FEATURE_DTYPES; rounded to nearest) in 64-byte aligned host memory, as the
  cache holds them: ops.row_chunks then reads a chunk without copying it."""
  if features.dtype == FEATURE_DTYPES[dtype]:
    return features
  out = ops.host_array(features.shape, FEATURE_DTYPES[dtype])
  out[...] = features
  return out


def save(path: str, features: np.ndarray) -> None:
  """`features` as a .npy file. The format has no bfloat16 (np.save writes raw 2-byte voids), so bfloat16 is stored
  as its bits, uint16, which `load` views back."""
  paths.save_array(path, features.view(np.uint16) if features.dtype == ml_dtypes.bfloat16 else features)


def load(path: str, dtype: str) -> np.ndarray:
  """The features `save` wrote in `dtype` (a key of FEATURE_DTYPES), memory-mapped where the file is local."""
  return paths.load_array(path).view(FEATURE_DTYPES[dtype])


def extract(model: LTRModel, variables: Variables, splits: datasets.Splits, config: ml_collections.ConfigDict,
            run_dir: str, mesh: Mesh, split_names: tuple[str, ...] = SPLITS, five_crop: bool = False,
            digest: str | None = None) -> dict[str, np.ndarray]:
  """{split: features [N, d]} in config key stage2.feature_dtype of the splits that exist, from run_dir/features
  when the backbone is the same; with `five_crop`, those of the five crops of each image ([N, 5, d], the cache's
  <split>_five_crop.npy: inference.five_crop_transform). `digest`: backbone_digest(variables), where the caller has
  it.

  A cache counts as a hit only if every process has it (their workdirs need not be shared): otherwise every
  process runs the inference, whose gathers they all take part in. Process 0 writes the cache.
  """
  predict = inference.make_predict(model, config.data, mesh)
  cache_dir = paths.join(run_dir, "features")
  features = {}
  backbone = digest or backbone_digest(variables)
  dtype = config.stage2.feature_dtype
  for split in split_names:
    source = getattr(splits, split)
    if source is None:
      continue
    cached = f"{split}_five_crop" if five_crop else split
    path = paths.join(cache_dir, f"{cached}.npy")
    key = _fingerprint(backbone, config, cached, len(source))
    key_path = path + ".fingerprint"
    hit = paths.exists(path) and paths.exists(key_path) and paths.read_text(key_path) == key
    if parallel.all_true(hit):
      features[split] = load(path, dtype)
      continue
    # In the cache's dtype, what a rerun reads back; the float32 array is freed here, not after the next split.
    features[split] = as_dtype(
        inference.run_inference(predict, variables, source, config, mesh, f"features {cached}",
                                inference.five_crop_transform(config) if five_crop else None)[1], dtype)
    if jax.process_index() == 0:  # a new file over the old: arrays mapped from the old one stay intact
      save(path, features[split])
      paths.write_text(key_path, key)
  parallel.barrier("feature cache written")
  return features
