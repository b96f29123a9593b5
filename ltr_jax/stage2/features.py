"""The features every stage-2 method sees, and their cache.

Features of the train / validation / test splits are extracted once per backbone (BatchNorm in inference mode,
no augmentation) and cached in a run directory's features/, keyed by a hash of the exact backbone weights and
BatchNorm statistics and of the data config: a rerun, or a method whose backbone is stage 1's, reads them back.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltr_jax import inference, parallel, paths
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets
from ltr_jax.models import LTRModel

SPLITS = ("train", "val", "test")


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
  """Identifies a feature cache: the backbone digest, the data and transform, the split."""
  return hashlib.sha1(
      json.dumps([backbone, split, num_samples, config.data.to_dict()], sort_keys=True,
                 default=str).encode()).hexdigest()


def extract(model: LTRModel, variables: Variables, splits: datasets.Splits, config: ml_collections.ConfigDict,
            run_dir: str, mesh: Mesh, split_names: tuple[str, ...] = SPLITS) -> dict[str, np.ndarray]:
  """{split: features [N, d]} of the splits that exist, from run_dir/features when the backbone is the same.

  A cache counts as a hit only if every process has it (their workdirs need not be shared): otherwise every
  process runs the inference, whose gathers they all take part in. Process 0 writes the cache.
  """
  predict = inference.make_predict(model, config.data, mesh)
  cache_dir = paths.join(run_dir, "features")
  features = {}
  backbone = backbone_digest(variables)
  for split in split_names:
    source = getattr(splits, split)
    if source is None:
      continue
    path = paths.join(cache_dir, f"{split}.npy")
    key = _fingerprint(backbone, config, split, len(source))
    key_path = path + ".fingerprint"
    hit = paths.exists(path) and paths.exists(key_path) and paths.read_text(key_path) == key
    if parallel.all_true(hit):
      features[split] = paths.load_array(path)
      continue
    _, features[split] = inference.run_inference(predict, variables, source, config, mesh, f"features {split}")
    if jax.process_index() == 0:  # a new file over the old: arrays mapped from the old one stay intact
      paths.save_array(path, features[split])
      paths.write_text(key_path, key)
  parallel.barrier("feature cache written")
  return features
