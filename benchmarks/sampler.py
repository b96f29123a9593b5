"""Seconds to draw one epoch of sample indices at iNaturalist-2018 scale, per sampling strategy.

Times `IndexSampler(labels, C, strategy, seed, num_epochs).epoch_indices(epoch)` (vectorised numpy)
beside a per-sample Python loop in the style of the reference class-aware sampler
(facebookresearch/classifier-balancing `ClassAwareSampler`), in the same process.

Label profile: C = 8,142 classes, N = 437,513 images (iNaturalist 2018 train). Class j gets
x_j = 2 + 998 * (1 - j / (C - 1)) ** a images, so class 0 has 1,000 and class C-1 has 2; the exponent
`a` is found by bisection so that sum(floor(x_j)) is the largest such sum not above N, and the
remaining r = N - sum(floor(x_j)) images go one each to the r classes with the largest fractional
parts of x_j (largest-remainder rounding: the profile stays non-increasing, max 1,000, min 2, and
sums exactly to N). Labels are then shuffled with a fixed seed.

Timing: the sampler is built once per strategy (not timed); each repeat calls `epoch_indices` with a
fresh epoch number so its one-epoch cache is never hit. Progressive uses num_epochs = 90 and epochs
centred on the middle epoch 45 (lambda ~ 0.5). The Python loop draws the same N indices per epoch.
Reported: the median over `--repeats` runs, after one untimed warm-up call.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ltr_jax.data.sampling import IndexSampler  # noqa: E402
from common import machine, write_json  # noqa: E402

NUM_SAMPLES = 437_513  # iNaturalist 2018 training images
NUM_CLASSES = 8_142
MAX_COUNT, MIN_COUNT = 1_000, 2
NUM_EPOCHS = 90  # progressive: epochs of the schedule; timed around the middle one
STRATEGIES = ("instance", "class", "sqrt", "progressive")


def long_tailed_counts(num_samples: int = NUM_SAMPLES, num_classes: int = NUM_CLASSES, max_count: int = MAX_COUNT,
                       min_count: int = MIN_COUNT) -> tuple[np.ndarray, float]:
  """Per-class counts from max_count down to min_count summing exactly to num_samples, and `a`."""
  t = 1.0 - np.arange(num_classes) / (num_classes - 1)

  def real(a: float) -> np.ndarray:
    return min_count + (max_count - min_count) * t**a

  lo, hi = 1e-3, 1e3  # sum(floor(x)) decreases with a: total(lo) > N > total(hi)
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if np.floor(real(mid)).sum() > num_samples:
      lo = mid
    else:
      hi = mid
  x = real(hi)
  counts = np.floor(x).astype(np.int64)
  remainder = num_samples - int(counts.sum())
  assert 0 <= remainder < num_classes, remainder
  frac = x - counts
  counts[np.argsort(-frac, kind="stable")[:remainder]] += 1
  assert counts.sum() == num_samples and counts.max() == max_count and counts.min() == min_count
  assert np.all(np.diff(counts) <= 0)
  return counts, hi


class RandomCycleIter:
  """Cycles over a list forever, reshuffling it (Python `random`) at the start of every pass."""

  def __init__(self, data, rng: random.Random):
    self.items = list(data)
    self.rng = rng
    self.i = len(self.items) - 1

  def __iter__(self):
    return self

  def __next__(self):
    self.i += 1
    if self.i == len(self.items):
      self.i = 0
      self.rng.shuffle(self.items)
    return self.items[self.i]


def class_aware_generator(class_iter, per_class_iters, n: int, num_samples_cls: int):
  """Yields n indices: visit the next class, take num_samples_cls consecutive images of it, repeat."""
  i = j = 0
  group = ()
  while i < n:
    if j == num_samples_cls:
      j = 0
    if j == 0:
      it = per_class_iters[next(class_iter)]
      group = tuple(next(it) for _ in range(num_samples_cls))
    yield group[j]
    i += 1
    j += 1


class PythonClassAwareSampler:
  """Reference-style class-aware sampler: Python objects and loops per drawn sample."""

  def __init__(self, labels: np.ndarray, num_classes: int, num_samples_cls: int = 4, seed: int = 0):
    self.rng = random.Random(seed)
    per_class = [[] for _ in range(num_classes)]
    for index, label in enumerate(labels.tolist()):
      per_class[label].append(index)
    self.class_iter = RandomCycleIter(range(num_classes), self.rng)
    self.per_class_iters = [RandomCycleIter(x, self.rng) for x in per_class]
    self.num_samples = len(labels)
    self.num_samples_cls = num_samples_cls

  def epoch_indices(self) -> list[int]:
    return list(class_aware_generator(self.class_iter, self.per_class_iters, self.num_samples, self.num_samples_cls))


def time_calls(fn, args_per_call) -> float:
  """Median wall seconds of fn(arg) over args_per_call (one untimed warm-up first)."""
  fn(args_per_call[0])
  times = []
  for arg in args_per_call[1:]:
    start = time.perf_counter()
    fn(arg)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="write the results as JSON to this path")
  parser.add_argument("--repeats", type=int, default=7, help="timed runs per strategy (median)")
  parser.add_argument("--num-samples-cls", type=int, default=4, help="Python loop: images per class visit")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  counts, a = long_tailed_counts()
  labels = np.repeat(np.arange(NUM_CLASSES), counts)
  np.random.default_rng(args.seed).shuffle(labels)
  print(f"profile: {NUM_SAMPLES} samples, {NUM_CLASSES} classes, counts {counts.max()}..{counts.min()}, "
        f"a = {a:.4f}, median count {int(np.median(counts))}, {(counts == MIN_COUNT).sum()} classes at "
        f"{MIN_COUNT}")

  seconds = {}
  first = NUM_EPOCHS // 2 - (args.repeats + 1) // 2  # warm-up + repeats, centred on epoch 45
  load_before = os.getloadavg()[0]
  for strategy in STRATEGIES:
    sampler = IndexSampler(labels, NUM_CLASSES, strategy, args.seed, NUM_EPOCHS)
    epochs = list(range(first, first + args.repeats + 1))
    out = sampler.epoch_indices(epochs[0])
    assert len(out) == NUM_SAMPLES and out.min() >= 0 and out.max() < NUM_SAMPLES
    seconds[strategy] = time_calls(sampler.epoch_indices, epochs)

  loop = PythonClassAwareSampler(labels, NUM_CLASSES, args.num_samples_cls, args.seed)
  out = loop.epoch_indices()
  assert len(out) == NUM_SAMPLES and 0 <= min(out) and max(out) < NUM_SAMPLES
  seconds["python_loop"] = time_calls(lambda _: loop.epoch_indices(), list(range(args.repeats + 1)))

  base = seconds["python_loop"]
  print(f"\none epoch of {NUM_SAMPLES} indices, median of {args.repeats} runs "
        f"(1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores)")
  print("| strategy | s / epoch | M indices / s | speed-up vs python_loop | < 0.1 s |")
  print("|---|---:|---:|---:|:---:|")
  for name, s in seconds.items():
    ok = "yes" if s < 0.1 else "no"
    print(f"| {name} | {s:.4f} | {NUM_SAMPLES / s / 1e6:.2f} | {base / s:.1f}x | {ok} |")

  result = {
      "seconds_per_epoch": seconds, "num_samples": NUM_SAMPLES, "num_classes": NUM_CLASSES,
      "machine": machine(f"numpy {np.__version__}"), "repeats": args.repeats, "progressive_num_epochs": NUM_EPOCHS,
      "epochs_timed": f"{first + 1}..{first + args.repeats} (warm-up epoch {first})",
      "python_loop_num_samples_cls": args.num_samples_cls, "count_profile": {
          "formula": "floor(2 + 998 * (1 - j/(C-1))**a) + largest-remainder fix", "a": a, "max": int(counts.max()),
          "min": int(counts.min()), "median": float(np.median(counts)), "classes_at_min": int(
              (counts == MIN_COUNT).sum())
      }, "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}
  }
  if args.json:
    write_json(args.json, result)


if __name__ == "__main__":
  main()
