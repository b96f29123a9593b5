"""The train / validation / test splits of an experiment, built from config key `data`.

Kinds (config key data.kind):
- 'fashion_mnist': IDX files (Debian's dataset-fashion-mnist, a directory, or TFDS as a fallback);
- 'list': ImageNet-LT / Places-LT / iNaturalist list files over an image root;
- 'inat_json': iNaturalist's official JSON files (train2018.json, val2018.json) over an image root;
- 'tfds': a dataset a user prepared with TFDS (array_record), read with tfds.data_source.
With data.imbalance_ratio > 0 the training split is made long-tailed with the exponential profile
(CIFAR-LT protocol), and where no validation split is given, a balanced one is held out of the
training images that the long-tailed subset left unused (never out of test).
"""
from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from ltr_jax.data import longtail, sources
from ltr_jax.errors import ConfigError, DataError


KINDS = ("fashion_mnist", "list", "inat_json", "tfds")  # config key data.kind


@dataclasses.dataclass
class Splits:
  name: str
  num_classes: int
  train: sources.Source
  val: sources.Source | None
  test: sources.Source
  class_counts: np.ndarray  # training images per class
  groups: np.ndarray  # 'many' / 'medium' / 'few' per class, from class_counts
  image_shape: tuple[int, int, int]  # of the model's input: data.image_size and the images' channels


def _raw_splits(data: ml_collections.ConfigDict):
  """(train, val or None, test) before any long-tailed subsetting."""
  if data.kind == "fashion_mnist":
    return (sources.fashion_mnist("train", data.data_dir or None), None,
            sources.fashion_mnist("test", data.data_dir or None))
  if data.kind in ("list", "inat_json"):
    suffix, source = ("list", sources.ListFileSource) if data.kind == "list" else ("json", sources.INatJsonSource)
    def read(split):
      path = data[f"{split}_{suffix}"]
      if not path:
        return None
      if not os.path.isabs(path) and data.list_dir:
        path = os.path.join(data.list_dir, path)
      return source(path, data.image_root, data.num_classes or None)
    if not data[f"train_{suffix}"] or not data[f"test_{suffix}"]:
      raise ConfigError(f"config keys data.train_{suffix} and data.test_{suffix} must name {suffix} files "
                        f"when data.kind = {data.kind!r}")
    return read("train"), read("val"), read("test")
  if data.kind == "tfds":
    def read(split):
      return sources.TfdsSource(data.tfds_name, split, data.data_dir or None) if split else None
    return read(data.train_split), read(data.val_split), read(data.test_split)
  raise ConfigError(f"config key data.kind: unknown kind {data.kind!r} (expected one of {', '.join(KINDS)})")


def build_splits(data: ml_collections.ConfigDict) -> Splits:
  """Reads config key `data` and returns the splits with their class counts and groups.

  data.seed fixes which images form the long-tailed subset and the held-out validation split; it is
  separate from the run's seed, so runs with several seeds train on the same data.
  """
  seed = data.seed
  train, val, test = _raw_splits(data)
  num_classes = data.num_classes or train.num_classes
  if data.imbalance_ratio:
    full_counts = sources.class_counts(train.labels, num_classes)
    n_max = data.n_max or int(full_counts.max())
    profile = longtail.exponential_profile(n_max, num_classes, data.imbalance_ratio)
    order = np.random.default_rng(data.class_order_seed).permutation(num_classes) \
        if data.class_order_seed is not None else None
    indices = longtail.longtail_indices(train.labels, profile, order, seed=seed)
    if val is None and data.val_per_class:
      val = longtail.Subset(train, longtail.balanced_holdout(train.labels, data.val_per_class, indices, seed))
    train = longtail.Subset(train, indices)
  elif val is None and data.val_per_class:
    # val_per_class images of every class with at least val_min_class_size images (iNaturalist: the
    # classes of 2 images keep both for training).
    full_counts = sources.class_counts(train.labels, num_classes)
    wanted = np.where(full_counts >= data.val_min_class_size, data.val_per_class, 0)
    held = longtail.longtail_indices(train.labels, wanted, seed=seed)
    val = longtail.Subset(train, held)
    train = longtail.Subset(train, np.setdiff1d(np.arange(len(train)), held))
  counts = sources.class_counts(train.labels, num_classes)
  if val is not None and len(val) == 0:
    raise DataError(f"the validation split of {data.name} is empty (config keys data.val_list / "
                    "data.val_split / data.val_per_class)")
  return Splits(data.name, num_classes, train, val, test, counts,
                longtail.group_of_classes(counts, data.many_threshold, data.few_threshold),
                (data.image_size, data.image_size, int(train[0].shape[-1])))
