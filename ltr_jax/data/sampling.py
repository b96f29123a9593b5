"""Sampling strategies of the paper (Sec. 3) and the host-side weighted index sampler.

p_j = n_j^q / sum_i n_i^q with q = 1 (instance-balanced), 0 (class-balanced), 1/2 (square-root);
progressively-balanced interpolates from instance- to class-balanced over the epochs.
Every epoch has N positions, and the index at position k of epoch e is a pure function of (seed, epoch, k):
resuming from any step is exact, and every process can compute its own disjoint shard of the same global
sequence. Instance-balanced sampling is a shuffled pass, as the reference's DataLoader(shuffle=True): a fresh
permutation of the N indices each epoch, every image exactly once. The other strategies draw i.i.d.: a class j
with probability p_j, then an instance of j uniformly (the reference's class-aware sampler takes 4 images per
visited class in a row, an artefact SPEC.md leaves out). Deferred re-sampling (DRS, Cao et al. 2019) switches
to class-balanced draws from a given epoch on.
"""
from __future__ import annotations

import numpy as np

from ltr_jax.errors import DataError

STRATEGIES = ("instance", "class", "sqrt", "progressive")
_EXPONENT = {"instance": 1.0, "class": 0.0, "sqrt": 0.5}


def class_probabilities(class_counts: np.ndarray, strategy: str, epoch: int = 0, num_epochs: int = 1) -> np.ndarray:
  """p_j for `strategy` at `epoch` (0-based) of `num_epochs`.

  Progressive uses lambda = epoch / (num_epochs - 1) (the reference's linspace(0, 1, T)[epoch]):
  exactly instance-balanced at the first epoch and exactly class-balanced at the last; with a single epoch,
  instance-balanced (linspace(0, 1, 1) = [0]).
  """
  counts = np.asarray(class_counts, dtype=np.float64)
  if strategy not in STRATEGIES:
    raise DataError(f"sampling strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
  empty = np.flatnonzero(counts <= 0)
  if empty.size:
    raise DataError(f"class {int(empty[0])} has no training images ({empty.size} empty classes in all: "
                    f"{empty[:10].tolist()}{'...' if empty.size > 10 else ''}); a class-aware sampler "
                    "cannot draw from it: remove it from the label space or add images")
  if strategy == "progressive":
    lam = epoch / (num_epochs - 1) if num_epochs > 1 else 0.0
    return (1.0 - lam) * class_probabilities(counts, "instance") + lam * class_probabilities(counts, "class")
  weights = counts**_EXPONENT[strategy]
  return weights / weights.sum()


def alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Walker/Vose alias table: draw column i uniformly, keep i with prob accept[i], else alias[i].

  O(1) per draw with two gathers, where inverse-CDF search costs a cache-missing binary search.
  """
  n = len(p)
  scaled = np.asarray(p, dtype=np.float64) * n
  accept = np.ones(n)
  alias = np.arange(n)
  small = list(np.flatnonzero(scaled < 1.0))
  large = list(np.flatnonzero(scaled >= 1.0))
  while small and large:
    s, l = small.pop(), large.pop()
    accept[s] = scaled[s]
    alias[s] = l
    scaled[l] -= 1.0 - scaled[s]
    (small if scaled[l] < 1.0 else large).append(l)
  return accept, alias


class IndexSampler:
  """Indices into a dataset with labels `labels`, with the class probabilities of `strategy`.

  An epoch is N = len(labels) indices: a permutation of the dataset (instance-balanced), else N i.i.d. draws
  (class with p_j, then an instance uniformly). The whole epoch is drawn at once, vectorised, from a generator
  keyed by (seed, epoch). With drs_epoch >= 0, epochs from drs_epoch on are class-balanced whatever `strategy`.
  """

  def __init__(self, labels: np.ndarray, num_classes: int, strategy: str, seed: int = 0, num_epochs: int = 1,
               drs_epoch: int = -1):
    labels = np.asarray(labels, dtype=np.int64)
    self.num_classes = num_classes
    self.strategy = strategy
    self.seed = seed
    self.num_epochs = num_epochs
    self.drs_epoch = drs_epoch
    self.class_counts = np.bincount(labels, minlength=num_classes)
    # Dataset indices grouped by class: class j owns by_class[starts[j]:starts[j] + counts[j]].
    self._by_class = np.argsort(labels, kind="stable")
    self._starts = np.concatenate([[0], np.cumsum(self.class_counts)[:-1]])
    class_probabilities(self.class_counts, strategy, 0, num_epochs)  # validate early
    self._epochs: dict[int, np.ndarray] = {}  # the last two epochs: reads straddle a boundary
    self._alias: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

  def __len__(self) -> int:
    """Draws per epoch."""
    return len(self._by_class)

  def strategy_at(self, epoch: int) -> str:
    """The strategy of `epoch`: `strategy`, or class-balanced from drs_epoch on."""
    return "class" if 0 <= self.drs_epoch <= epoch else self.strategy

  def probabilities(self, epoch: int) -> np.ndarray:
    return class_probabilities(self.class_counts, self.strategy_at(epoch), epoch, self.num_epochs)

  def epoch_indices(self, epoch: int) -> np.ndarray:
    """All N dataset indices of `epoch`, in order."""
    if epoch in self._epochs:
      return self._epochs[epoch]
    rng = np.random.Generator(np.random.Philox(key=[self.seed, epoch]))
    strategy = self.strategy_at(epoch)
    if strategy == "instance":
      indices = rng.permutation(len(self))
    else:
      key = (strategy, epoch if strategy == "progressive" else 0)  # p_j changes per epoch only there
      if key not in self._alias:
        self._alias = {key: alias_table(self.probabilities(epoch))}
      accept, alias = self._alias[key]
      columns = rng.integers(0, self.num_classes, size=len(self))
      classes = np.where(rng.random(len(self)) < accept[columns], columns, alias[columns])
      offsets = (rng.random(len(self)) * self.class_counts[classes]).astype(np.int64)
      indices = self._by_class[self._starts[classes] + offsets]
    self._epochs = {e: v for e, v in self._epochs.items() if e == epoch - 1}
    self._epochs[epoch] = indices
    return indices

  def __getitem__(self, k: int) -> int:
    """Dataset index at global position k (epoch k // N, position k % N)."""
    epoch, position = divmod(int(k), len(self))
    return int(self.epoch_indices(epoch)[position])


def process_positions(local_positions, global_batch: int, process_index: int, process_count: int):
  """Global draw numbers of one process's local stream.

  Global batch i holds draws [i * B, (i + 1) * B); process p feeds rows [p * b, (p + 1) * b) of it,
  b = B / P. Shards of different processes are disjoint and together cover every global batch.
  Takes an int or an integer array.
  """
  if global_batch % process_count:
    raise DataError(f"global batch size {global_batch} is not divisible by the {process_count} processes")
  local_batch = global_batch // process_count
  return (local_positions // local_batch) * global_batch + process_index * local_batch + \
      local_positions % local_batch
