"""The train / validation / test splits of an experiment, built from config key `data`.

The kinds of storage (config key data.kind) are the records of `kinds.KINDS`.
With data.imbalance_ratio > 0 the training split is made long-tailed with the exponential profile
(CIFAR-LT protocol), and where no validation split is given, a balanced one is held out of the
training images that the long-tailed subset left unused (never out of test).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

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
  class_names: list[str] | None = None  # in label order, where the data names its classes

  @property
  def names(self) -> list[str]:
    """The class names, or the class indices as text where the data names none."""
    return list(self.class_names) if self.class_names else [str(c) for c in range(self.num_classes)]


def _picked(pick: Callable[[], Any], key: str, value: int, why: str) -> Any:
  """pick(), with a DataError for too few images of a class naming the config key that asked for them."""
  try:
    return pick()
  except longtail.TooFew as e:
    raise DataError(f"config key {key} = {value}: {e} ({why}); lower it") from e


def held_out(labels: np.ndarray, num_classes: int, data: ml_collections.ConfigDict,
             with_validation: bool) -> tuple[np.ndarray, np.ndarray | None]:
  """(training indices, validation indices or None) of the training split's `labels` under config key `data`.

  With data.imbalance_ratio, the long-tailed subset of the exponential profile from data.n_max (the largest class
  where 0), and, if `with_validation`, data.val_per_class images of every class held out of those it leaves unused;
  with data.val_fill_from_train, a class with fewer left over gives the difference out of its training images
  (CIFAR-LT's head classes, whose profile uses all their images). Without: data.val_per_class images of each class
  of at least data.val_min_class_size images held out (iNaturalist: the classes of 2 images keep both for training).
  """
  seed = data.seed
  if data.imbalance_ratio:
    full_counts = sources.class_counts(labels, num_classes)
    n_max = data.n_max or int(full_counts.max())
    profile = longtail.exponential_profile(n_max, num_classes, data.imbalance_ratio)
    order = np.random.default_rng(data.class_order_seed).permutation(num_classes) \
        if data.class_order_seed is not None else None
    indices = _picked(lambda: longtail.longtail_indices(labels, profile, order, seed=seed), "data.n_max", n_max,
                      "the long-tailed profile starts at n_max")
    if not (with_validation and data.val_per_class):
      return indices, None
    if data.val_fill_from_train:
      return _picked(lambda: longtail.filled_holdout(labels, data.val_per_class, indices, seed), "data.val_per_class",
                     data.val_per_class, "a class has fewer images than its validation share")
    held = _picked(
        lambda: longtail.balanced_holdout(labels, data.val_per_class, indices, seed), "data.val_per_class",
        data.val_per_class, "validation is held out of the images the long-tailed subset leaves unused; "
        "data.val_fill_from_train=True takes the rest from its training images")
    return indices, held
  if not (with_validation and data.val_per_class):
    return np.arange(len(labels)), None
  full_counts = sources.class_counts(labels, num_classes)
  wanted = np.where(full_counts >= data.val_min_class_size, data.val_per_class, 0)
  held = _picked(lambda: longtail.longtail_indices(labels, wanted, seed=seed), "data.val_per_class", data.val_per_class,
                 "validation is held out of the training images")
  return np.setdiff1d(np.arange(len(labels)), held), held


def build_splits(data: ml_collections.ConfigDict) -> Splits:
  """Reads config key `data` and returns the splits with their class counts and groups.

  data.seed fixes which images form the long-tailed subset and the held-out validation split; it is
  separate from the run's seed, so runs with several seeds train on the same data.
  """
  train, val, test = kinds.kind_of(data).build(data)
  num_classes = data.num_classes or train.num_classes
  if data.imbalance_ratio or val is None and data.val_per_class:
    indices, held = held_out(train.labels, num_classes, data, with_validation=val is None)
    if held is not None:
      val = longtail.Subset(train, held)
    train = longtail.Subset(train, indices)
  counts = sources.class_counts(train.labels, num_classes)
  if val is not None and len(val) == 0:
    raise DataError(f"the validation split of {data.name} is empty (config key {kinds.validation_keys(data)})")
  return Splits(data.name, num_classes, train, val, test, counts,
                longtail.group_of_classes(counts, data.many_threshold, data.few_threshold),
                (data.image_size, data.image_size, int(train[0].shape[-1])), data.preflight_decode,
                getattr(train, "class_names", None))
