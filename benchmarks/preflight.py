"""Seconds for the pre-training data check (`ltr_jax.data.preflight.check`) over 1,000,000 list entries.

Layout (ImageNet-style, on local disk in a temporary folder): `--classes` class directories
`train/n{class:08d}/` holding `--entries / --classes` `.JPEG` files each, a training list file of
`--entries` lines `train/n.../n..._{i}.JPEG label` and a test list of `--test-per-class` lines per class over
the same files. The check reads no image, so empty files time it exactly as real ones; only the first is a
real (1x1 PNG) image, which `build_splits` decodes for the input shape.

Timed: `check(splits)` as main calls it (labels, empty classes, and the existence of every listed image of
both splits), the existence part alone (`missing_images`, one `os.scandir` per directory), and two baselines
for the same existence test: one `os.path.isfile` per image in a loop, and the same in a thread pool
(`--threads`). Each is the median of `--repeats` runs after one untimed run; the files were just written, so
the directory entries are in the page cache (a cold cache, or a network filesystem, costs more, most for the
one-call-per-image baselines).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import base  # noqa: E402
from ltr_jax.data import datasets, preflight  # noqa: E402
from common import machine, write_json  # noqa: E402

# A 1x1 grey PNG: build_splits decodes the first training image (for the input shape), so that one is real.
PNG_1X1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                        "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082")


def write_dataset(folder: str, entries: int, classes: int, test_per_class: int) -> tuple[str, str]:
  """Writes the empty image files and the train / test list files; returns the two list files."""
  per_class = entries // classes
  train_lines, test_lines = [], []
  for c in range(classes):
    directory = os.path.join(folder, "train", f"n{c:08d}")
    os.makedirs(directory)
    for i in range(per_class + (c < entries % classes)):
      name = f"n{c:08d}_{i}.JPEG"
      with open(os.path.join(directory, name), "wb") as f:
        f.write(PNG_1X1 if c == i == 0 else b"")
      line = f"train/n{c:08d}/{name} {c}"
      train_lines.append(line)
      if i < test_per_class:
        test_lines.append(line)
  lists = []
  for split, lines in (("train", train_lines), ("test", test_lines)):
    lists.append(os.path.join(folder, f"{split}.txt"))
    with open(lists[-1], "w") as f:
      f.write("\n".join(lines) + "\n")
  return lists[0], lists[1]


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of fn() over `repeats` runs, after one untimed run."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="write the results as JSON to this path")
  parser.add_argument("--entries", type=int, default=1_000_000, help="training list entries (= image files)")
  parser.add_argument("--classes", type=int, default=1000, help="class directories")
  parser.add_argument("--test-per-class", type=int, default=10, help="test list entries per class")
  parser.add_argument("--threads", type=int, default=16, help="threads of the thread-pool baseline")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  load_before = os.getloadavg()[0]

  with tempfile.TemporaryDirectory(prefix="ltr_preflight_bench_") as folder:
    start = time.perf_counter()
    train_list, test_list = write_dataset(folder, args.entries, args.classes, args.test_per_class)
    write_seconds = time.perf_counter() - start
    start = time.perf_counter()
    data = base.get_config().data
    data.update(
        dict(name="bench", kind="list", image_root=folder, train_list=train_list, test_list=test_list,
             num_classes=args.classes))
    splits = datasets.build_splits(data)
    train, test = splits.train, splits.test
    read_seconds = time.perf_counter() - start
    print(
        f"wrote {len(train):,} + {len(test):,} entries in {write_seconds:.1f} s; "
        f"build_splits (list files parsed) in {read_seconds:.1f} s", flush=True)

    every = np.arange(len(train))
    paths = [train.image_path(i) for i in every.tolist()]
    seconds = {
        "check": median_seconds(lambda: preflight.check(splits), args.repeats),
        "missing_images (scandir)": median_seconds(lambda: preflight.missing_images(train, every), args.repeats),
        "isfile loop": median_seconds(lambda: [p for p in paths if not os.path.isfile(p)], args.repeats),
    }
    with ThreadPoolExecutor(args.threads) as pool:
      seconds[f"isfile, {args.threads} threads"] = median_seconds(
          lambda: [p for p, ok in zip(paths, pool.map(os.path.isfile, paths, chunksize=1000)) if not ok], args.repeats)
    for name, s in seconds.items():
      print(f"{name}: {s:.2f} s", flush=True)
  load_after = os.getloadavg()[0]

  print(f"\nseconds for {args.entries:,} training + {len(test):,} test list entries over {args.classes} "
        f"directories, median of {args.repeats} (warm page cache; 1-min load average {load_before:.1f} before, "
        f"{load_after:.1f} after, {os.cpu_count()} cores)")
  print("| what | seconds | entries / s |")
  print("|---|---:|---:|")
  for name, s in seconds.items():
    n = args.entries + (len(test) if name == "check" else 0)
    print(f"| {name} | {s:.2f} | {n / s:,.0f} |")

  result = {
      "seconds": seconds, "entries": {"train": args.entries, "test": len(test)}, "classes": args.classes,
      "repeats": args.repeats, "threads": args.threads, "write_seconds": write_seconds,
      "build_splits_seconds": read_seconds, "page_cache": "warm (files just written)",
      "load_average_1min": {"before": load_before, "after": load_after}, "machine": machine(f"numpy {np.__version__}")
  }
  if args.json:
    write_json(args.json, result)


if __name__ == "__main__":
  main()
