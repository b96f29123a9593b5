"""The train / validation / test splits of an experiment, built from config key `data`.

The kinds of storage (config key data.kind) are the records of `kinds.KINDS`.
With data.imbalance_ratio > 0 the training split is made long-tailed with the exponential profile
(CIFAR-LT protocol), and where no validation split is given, a balanced one is held out of the
training images that the long-tailed subset left unused (never out of test).
"""
from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from ltr_jax.data import kinds, longtail, sources
from ltr_jax.errors import DataError


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
  preflight_decode: bool = False  # config key data.preflight_decode: the data check decodes every image


def build_splits(data: ml_collections.ConfigDict) -> Splits:
  """Reads config key `data` and returns the splits with their class counts and groups.

  data.seed fixes which images form the long-tailed subset and the held-out validation split; it is
  separate from the run's seed, so runs with several seeds train on the same data.
  """
  seed, kind = data.seed, kinds.kind_of(data)
  train, val, test = kind.build(data)
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
    raise DataError(f"the validation split of {data.name} is empty (config key {kinds.validation_keys(data)})")
  return Splits(data.name, num_classes, train, val, test, counts,
                longtail.group_of_classes(counts, data.many_threshold, data.few_threshold),
                (data.image_size, data.image_size, int(train[0].shape[-1])), data.preflight_decode)
