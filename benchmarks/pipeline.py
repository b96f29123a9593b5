"""Images per second out of `ltr_jax.data.pipeline.train_batches` for 0, 1 and 2 grain workers.

Two inputs:
- fashion_mnist: real Fashion-MNIST train (`sources.fashion_mnist('train')`, 60,000 28x28x1 images held
  in memory), PadCropFlip(28), batch 128.
- jpeg224: `--num-images` 256x256 RGB JPEGs written by this script to a temp dir (smooth random colour
  gradients and sinusoids plus pixel noise, quality 90, ~20-40 KB each: a realistic decode cost) with a
  `relative/path label` list file read by `ListFileSource`, RandomResizedCropFlip(224, jitter=0.4),
  batch 64.
Both use an instance-balanced `IndexSampler` (the strategy does not change the per-image cost).

Timing: for each worker count a fresh `train_batches` iterator is made; max(1, num_workers) batches
(one per worker) are pulled untimed as warm-up: that covers spawning the worker processes (grain uses
the 'spawn' start method), pickling the source to them and their imports; the time to the first batch
is reported separately as `first_batch_seconds`. Then a fixed number of batches is timed, so the
throughput EXCLUDES worker start-up. `num_workers=0` is grain's in-process path (a 4-thread read pool,
no mp_prefetch). `serial_images_per_second` is a plain loop `transform(source[i], rng)` on one
thread, for reference (no grain, no batching).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ltr_jax.data import pipeline, sources  # noqa: E402
from ltr_jax.data.sampling import IndexSampler  # noqa: E402
from ltr_jax.data.transforms import PadCropFlip, RandomResizedCropFlip  # noqa: E402
from common import machine, write_json  # noqa: E402


def write_jpegs(folder: str, num_images: int, num_classes: int, size: int = 256, seed: int = 0) -> str:
  """Writes `num_images` compressible size x size JPEGs and a list file; returns the list file path."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  lines = []
  for i in range(num_images):
    channels = []
    for _ in range(3):
      a, b, c = rng.uniform(-1, 1, size=3)
      fx, fy, phase = rng.uniform(1, 8), rng.uniform(1, 8), rng.uniform(0, 2 * np.pi)
      channels.append(128 + 60 * (a * xx + b * yy + c * xx * yy)
                      + 50 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase))
    image = np.stack(channels, axis=-1) + rng.normal(0, 8, size=(size, size, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    label = i % num_classes
    rel = f"c{label:02d}/{i:05d}.jpg"
    os.makedirs(os.path.join(folder, os.path.dirname(rel)), exist_ok=True)
    Image.fromarray(image).save(os.path.join(folder, rel), quality=90)
    lines.append(f"{rel} {label}")
  list_file = os.path.join(folder, "train.txt")
  with open(list_file, "w") as f:
    f.write("\n".join(lines) + "\n")
  return list_file


def serial_rate(source, transform, count: int) -> float:
  """Images / s of a plain single-thread loop transform(source[i], rng)."""
  rng = np.random.default_rng(0)
  indices = np.arange(count) % len(source)
  start = time.perf_counter()
  for i in indices:
    transform(source[int(i)], rng)
  return count / (time.perf_counter() - start)


def time_pipeline(source, transform, batch: int, num_batches: int, workers: int) -> tuple[float, float]:
  """(images / s over `num_batches` after one warm-up batch, seconds to the first batch)."""
  sampler = IndexSampler(source.labels, source.num_classes, "instance", seed=0, num_epochs=1)
  start = time.perf_counter()
  batches = pipeline.train_batches(source, sampler, transform, global_batch=batch, start_step=0,
                                   num_steps=num_batches + max(1, workers), seed=0, num_workers=workers)
  first = next(batches)
  first_seconds = time.perf_counter() - start
  assert first["image"].shape[0] == batch
  for _ in range(workers - 1):  # one warm-up batch per worker: every worker has started
    next(batches)
  start = time.perf_counter()
  count = 0
  for b in batches:
    count += len(b["label"])
  seconds = time.perf_counter() - start
  assert count == num_batches * batch, count
  batches.close()
  del batches
  gc.collect()
  return count / seconds, first_seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="write the results as JSON to this path")
  parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
  parser.add_argument("--fashion-batches", type=int, default=100, help="timed batches of 128 (Fashion)")
  parser.add_argument("--jpeg-batches", type=int, default=20, help="timed batches of 64 (JPEG)")
  parser.add_argument("--num-images", type=int, default=512, help="JPEGs to write")
  args = parser.parse_args()
  workers = [int(w) for w in args.workers.split(",")]
  load_before = os.getloadavg()[0]

  rates: dict[str, dict[str, float]] = {"fashion_mnist": {}, "jpeg224": {}}
  firsts: dict[str, dict[str, float]] = {"fashion_mnist": {}, "jpeg224": {}}
  serial: dict[str, float] = {}

  fashion = sources.fashion_mnist("train")
  crop28 = PadCropFlip(28)
  serial["fashion_mnist"] = serial_rate(fashion, crop28, 20_000)
  for w in workers:
    rates["fashion_mnist"][str(w)], firsts["fashion_mnist"][str(w)] = time_pipeline(
        fashion, crop28, 128, args.fashion_batches, w)
    print(f"fashion_mnist workers={w}: {rates['fashion_mnist'][str(w)]:.0f} img/s", flush=True)

  with tempfile.TemporaryDirectory(prefix="ltr_jpeg_bench_") as folder:
    start = time.perf_counter()
    list_file = write_jpegs(folder, args.num_images, num_classes=10)
    jpeg = sources.ListFileSource(list_file, folder)
    size_kb = sum(os.path.getsize(jpeg.image_path(i)) for i in range(len(jpeg))) / len(jpeg) / 1024
    print(f"wrote {len(jpeg)} JPEGs (mean {size_kb:.1f} KB) in {time.perf_counter() - start:.1f} s", flush=True)
    rrc = RandomResizedCropFlip(224, jitter=0.4)
    serial["jpeg224"] = serial_rate(jpeg, rrc, 256)
    for w in workers:
      rates["jpeg224"][str(w)], firsts["jpeg224"][str(w)] = time_pipeline(jpeg, rrc, 64, args.jpeg_batches, w)
      print(f"jpeg224 workers={w}: {rates['jpeg224'][str(w)]:.0f} img/s", flush=True)

  batches = {"fashion_mnist": (128, args.fashion_batches), "jpeg224": (64, args.jpeg_batches)}
  print(f"\nimages / s out of train_batches (after one warm-up batch per worker; worker start-up "
        f"excluded; 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
        f"{os.cpu_count()} cores)")
  print("| input | batch x timed batches | serial loop | " +
        " | ".join(f"workers={w}" for w in workers) + " | first batch s (" +
        ", ".join(f"w={w}" for w in workers) + ") |")
  print("|---|---|---:|" + "---:|" * len(workers) + "---|")
  for name in rates:
    b, n = batches[name]
    cells = " | ".join(f"{rates[name][str(w)]:.0f}" for w in workers)
    first = ", ".join(f"{firsts[name][str(w)]:.2f}" for w in workers)
    print(f"| {name} | {b} x {n} | {serial[name]:.0f} | {cells} | {first} |")

  result = {"images_per_second": rates, "machine": machine(f"numpy {np.__version__}"),
            "worker_startup": "excluded (max(1, workers) warm-up batches untimed; see first_batch_seconds)",
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "first_batch_seconds": firsts, "serial_images_per_second": serial,
            "batch_size": {k: v[0] for k, v in batches.items()},
            "timed_batches": {k: v[1] for k, v in batches.items()},
            "jpeg": {"num_images": args.num_images, "size": 256, "quality": 90, "mean_kb": size_kb,
                     "transform": "RandomResizedCropFlip(224, jitter=0.4)"}}
  if args.json:
    write_json(args.json, result)


if __name__ == "__main__":
  main()
