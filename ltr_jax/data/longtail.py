"""Long-tailed subsets of a source: exponential profiles, list-file subsets, many/medium/few groups."""

from __future__ import annotations

import numpy as np

from ltr_jax.data.sources import EncodedImage, Source, read_list_file, undecoded
from ltr_jax.errors import DataError


class TooFew(DataError):
  """A class has fewer images than a subset asks of it."""


def exponential_profile(n_max: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
  """Images per class rank, n_i = int(n_max * IR^(-i / (C - 1))): the CIFAR-LT protocol of LDAM.

  Rank 0 gets n_max images, rank C-1 gets n_max / IR (truncated to an integer).
  """
  return np.array([int(n_max * imbalance_ratio**(-i / (num_classes - 1))) for i in range(num_classes)], dtype=np.int64)


def _pick_per_class(labels: np.ndarray, wanted: np.ndarray, allowed: np.ndarray, seed: int, what: str) -> np.ndarray:
  """Sorted indices with wanted[c] records of class c drawn uniformly among the `allowed` ones."""
  rng = np.random.default_rng(seed)
  candidates = np.flatnonzero(allowed)
  candidates = candidates[np.argsort(labels[candidates], kind="stable")]
  starts = np.searchsorted(labels[candidates], np.arange(len(wanted) + 1))
  picked = []
  for c, n in enumerate(wanted):
    pool = candidates[starts[c]:starts[c + 1]]
    if n > len(pool):
      raise TooFew(f"class {c} has {len(pool)} {what} images, {n} were asked")
    picked.append(rng.choice(pool, size=n, replace=False))
  return np.sort(np.concatenate(picked)).astype(np.int64)


def longtail_indices(labels: np.ndarray, counts_per_rank: np.ndarray, class_order: np.ndarray | None = None,
                     seed: int = 0) -> np.ndarray:
  """Sorted indices of a long-tailed subset: counts_per_rank[r] images of class class_order[r].

  `class_order` defaults to the class ids 0..C-1, so class 0 is the head, as in CIFAR-LT. Images of a
  class are drawn uniformly without replacement; the result depends only on (labels, counts, order,
  seed).
  """
  labels = np.asarray(labels)
  counts_per_rank = np.asarray(counts_per_rank, dtype=np.int64)
  order = np.arange(len(counts_per_rank)) if class_order is None else np.asarray(class_order)
  if sorted(order.tolist()) != list(range(len(counts_per_rank))):
    raise DataError(f"class_order must be a permutation of 0..{len(counts_per_rank) - 1}, got {order}")
  wanted = np.zeros(len(counts_per_rank), dtype=np.int64)
  wanted[order] = counts_per_rank
  return _pick_per_class(labels, wanted, np.ones(len(labels), bool), seed, "available")


def balanced_holdout(labels: np.ndarray, per_class: int, exclude: np.ndarray | None = None,
                     seed: int = 0) -> np.ndarray:
  """Sorted indices of per_class images of every class, none of them in `exclude`.

  Holds a class-balanced validation split out of the training images left outside a long-tailed
  subset. Classes are 0..max(labels).
  """
  labels = np.asarray(labels)
  allowed = np.ones(len(labels), bool)
  if exclude is not None:
    allowed[np.asarray(exclude, dtype=np.int64)] = False
  wanted = np.full(int(labels.max()) + 1, per_class, dtype=np.int64)
  return _pick_per_class(labels, wanted, allowed, seed, "non-excluded")


def filled_holdout(labels: np.ndarray, per_class: int, train_indices: np.ndarray,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(training indices, validation indices): per_class validation images of every class, drawn among its images
  outside `train_indices` and, where fewer are left, the difference drawn out of its `train_indices` (which then
  lose them). Every class keeps its training count but those short of left-over images."""
  labels = np.asarray(labels)
  train_indices = np.asarray(train_indices, np.int64)
  outside = np.ones(len(labels), bool)
  outside[train_indices] = False
  rng = np.random.default_rng(seed)
  held = []
  for c in range(int(labels.max()) + 1):
    spare = np.flatnonzero(outside & (labels == c))
    if len(spare) >= per_class:
      held.append(rng.choice(spare, size=per_class, replace=False))
      continue
    mine = train_indices[labels[train_indices] == c]
    if len(spare) + len(mine) < per_class:
      raise TooFew(f"class {c} has {len(spare) + len(mine)} images, {per_class} were asked for validation")
    held.append(np.concatenate([spare, rng.choice(mine, size=per_class - len(spare), replace=False)]))
  held = np.sort(np.concatenate(held)).astype(np.int64)
  return np.setdiff1d(train_indices, held), held


class Subset:
  """The records `indices` of `source`, in that order; `num_classes` is the source's."""

  def __init__(self, source: Source, indices: np.ndarray):
    self.source = source
    self.indices = np.asarray(indices, dtype=np.int64)
    if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(source)):
      raise IndexError(f"subset indices outside [0, {len(source)})")
    self.labels = source.labels[self.indices]
    self.num_classes = source.num_classes
    self.class_names = getattr(source, "class_names", None)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.source[self.indices[index]]

  def undecoded(self, index: int) -> np.ndarray | EncodedImage:
    """The source's `undecoded` record, so that subsets of image files get the transforms' fast path."""
    return undecoded(self.source, int(self.indices[index]))


def base_records(source: Source) -> tuple[Source, np.ndarray]:
  """The source that stores the records of `source` (through any Subsets) and their indices in it."""
  indices = np.arange(len(source), dtype=np.int64)
  while isinstance(source, Subset):
    indices = source.indices[indices]
    source = source.source
  return source, indices


def subset_from_list_file(source: Source, list_file: str) -> Subset:
  """The records of `source` (a source with `.paths`, e.g. a `ListFileSource`) named by `list_file`.

  This is how ImageNet-LT and Places-LT are defined: a list file over the full dataset. Records keep
  the list file's order; each listed path must be in the source with the same label.
  """
  index_of = {path: i for i, path in enumerate(source.paths)}
  indices = []
  for number, path, label in read_list_file(list_file):
    if path not in index_of:
      raise DataError(f"{list_file}:{number}: {path!r} is not in the source")
    i = index_of[path]
    if source.labels[i] != label:
      raise DataError(f"{list_file}:{number}: label {label}, the source has {source.labels[i]} for {path!r}")
    indices.append(i)
  return Subset(source, np.array(indices, dtype=np.int64))


def group_of_classes(class_counts: np.ndarray, many_threshold: int = 100, few_threshold: int = 20) -> np.ndarray:
  """'many' (n > many_threshold), 'few' (n < few_threshold) or 'medium' for each class count."""
  counts = np.asarray(class_counts)
  return np.where(counts > many_threshold, "many", np.where(counts < few_threshold, "few", "medium"))
