"""Host-side input speed: JPEG transforms per core, and the grain pipeline's scaling with workers.

Input: `--num-images` ImageNet-sized JPEGs written by this script to a temp dir (500x375, quality 90,
~75 KB each: smooth random colour gradients and sinusoids plus pixel noise, so that the entropy-coded size
and hence the decode cost are those of a photo) with a `relative/path label` list file read by
`ListFileSource`; and real Fashion-MNIST train (60,000 28x28x1 images in memory).

1. Per core: one process pinned to one core (os.sched_setaffinity) runs, on every JPEG in turn,
   - train: decode + RandomResizedCrop 224 + horizontal flip + ColorJitter(0.4, 0.4, 0.4);
   - eval: decode + Resize 256 + CenterCrop 224;
   - decode: the whole JPEG to RGB pixels, nothing else (the floor under both: ltr_jax's decode at full
     scale, which every crop of a 375-pixel side needs for a 224 output, and torchvision's PIL loader);
   once with ltr_jax's transforms on `sources.undecoded` (RandomResizedCropFlip, ResizeCenterCrop) and once
   with the torchvision-style PIL pipeline written here (`reference_train`, `reference_eval`: torchvision's
   PIL loader, the crop box resized in one `resize(..., box=...)` call, ImageEnhance brightness, contrast
   and saturation in a random order; eval: the shorter side resized to 256, then the centre crop). Both
   draw the same crop boxes, flips and jitter factors from the same generators, and both read the files
   (from the page cache). Where simplejpeg is installed (the `fast` extra), ltr_jax is also timed with it
   hidden (`ltr_jax_without_simplejpeg`: Pillow decodes, the same pixels). Each pipeline runs over all the
   images in one go (as one worker runs one pipeline), the pipelines taking turns `--rounds` times, and each
   one's fastest time per image is kept: images / s of wall-clock time (the figure on an idle machine), and
   of the process's CPU time (less disturbed by other jobs on a busy machine).
2. Scaling: images / s out of `pipeline.train_batches` for data.num_workers = 0, 1, ..., the cores this
   process may use (train transforms as above on the JPEGs, batch 64; PadCropFlip(28) on Fashion-MNIST,
   batch 128). `num_workers=0` is grain's in-process path (a 4-thread read pool, no mp_prefetch). For
   each worker count a fresh iterator is made; the first batch (spawning the workers, pickling the source,
   their imports: reported as `first_batch_seconds`) and then 4 batches per worker (per thread where
   num_workers=0: those made ahead while the workers started, and those already under way) are pulled
   untimed; then a fixed number of batches is timed. So the throughput is the steady state, EXCLUDING
   worker start-up. `main_process_core_share` is the CPU time the consuming (training) process itself
   spent over that time, as a share of one core (with num_workers=0 it includes the read threads' work).
`--size 800x600` measures iNaturalist-sized images instead (crops large enough for reduced-scale decoding).
"""
from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ltr_jax.data import pipeline, sources  # noqa: E402
from ltr_jax.data.sampling import IndexSampler  # noqa: E402
from ltr_jax.data.transforms import PadCropFlip, RandomResizedCropFlip, ResizeCenterCrop  # noqa: E402
from common import machine, write_json  # noqa: E402

QUALITY, NOISE = 90, 13  # NOISE: the pixel noise std that gives ~75 KB at 500x375, quality 90
SIZE, RESIZE, JITTER = 224, 256, 0.4
PILLOW_ONLY = "ltr_jax_without_simplejpeg"
ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
TARGETS = {"train": 1.3, "eval": 2.0}  # ltr_jax / reference, per core (the targets)
KINDS = ("train", "eval", "decode")  # decode: the whole JPEG to RGB pixels and nothing else


def write_jpegs(folder: str, num_images: int, num_classes: int, width: int, height: int, seed: int = 0) -> str:
  """Writes `num_images` width x height photo-like JPEGs and a list file; returns the list file path."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(width, height)
  lines = []
  for i in range(num_images):
    channels = []
    for _ in range(3):
      a, b, c = rng.uniform(-1, 1, size=3)
      fx, fy, phase = rng.uniform(1, 8), rng.uniform(1, 8), rng.uniform(0, 2 * np.pi)
      channels.append(128 + 60 * (a * xx + b * yy + c * xx * yy) + 50 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase))
    image = np.stack(channels, axis=-1) + rng.normal(0, NOISE, size=(height, width, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    label = i % num_classes
    rel = f"c{label:02d}/{i:05d}.jpg"
    os.makedirs(os.path.join(folder, os.path.dirname(rel)), exist_ok=True)
    Image.fromarray(image).save(os.path.join(folder, rel), quality=QUALITY)
    lines.append(f"{rel} {label}")
  list_file = os.path.join(folder, "train.txt")
  with open(list_file, "w") as f:
    f.write("\n".join(lines) + "\n")
  return list_file


def _pil_load(path: str) -> Image.Image:
  """torchvision's `pil_loader` (ImageFolder's default)."""
  with open(path, "rb") as f:
    return Image.open(f).convert("RGB")


def reference_train(path: str, rng: np.random.Generator) -> np.ndarray:
  """decode + RandomResizedCrop + flip + ColorJitter as torchvision does them on PIL images."""
  image = _pil_load(path)
  top, left, h, w = RandomResizedCropFlip(SIZE).crop_box(image.height, image.width, rng)
  image = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
  if rng.random() < 0.5:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  factors = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
  for op in rng.permutation(3):
    image = ENHANCERS[op](image).enhance(factors[op])
  return np.asarray(image)


def reference_eval(path: str) -> np.ndarray:
  """decode + Resize(256) + CenterCrop(224) as torchvision does them on PIL images."""
  image = _pil_load(path)
  w, h = image.size
  new_w, new_h = (RESIZE, int(RESIZE * h / w)) if w <= h else (int(RESIZE * w / h), RESIZE)
  image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
  left, top = int(round((new_w - SIZE) / 2)), int(round((new_h - SIZE) / 2))
  return np.asarray(image.crop((left, top, left + SIZE, top + SIZE)))


def _pillow_only(run):
  """`run` with simplejpeg hidden, as where it is not installed."""

  def pillow_run(i, rng):
    fast, sources.simplejpeg = sources.simplejpeg, None
    try:
      return run(i, rng)
    finally:
      sources.simplejpeg = fast

  return pillow_run


def _per_core(list_file: str, root: str, core: int, rounds: int) -> dict:
  """Runs in a process pinned to `core`: {'wall' | 'cpu': {'train' | 'eval': {'ltr_jax' | 'pil_reference': img/s}}}.

  Each pipeline runs over all the images in one go, as a worker would (interleaving pipelines image by image
  lets one decoder's code and tables evict another's from the caches, which changes their ranking), and the
  pipelines take turns, `rounds` times after one warm-up round, in an order rotated every round; each
  pipeline's time per image is its fastest over the rounds, which other jobs on the core can only slow.
  """
  os.sched_setaffinity(0, {core})
  source = sources.ListFileSource(list_file, root)
  train, evaluate = RandomResizedCropFlip(SIZE, jitter=JITTER), ResizeCenterCrop(RESIZE, SIZE)
  runs = {
      ("train", "ltr_jax"): lambda i, rng: train(sources.undecoded(source, i), rng),
      ("train", "pil_reference"): lambda i, rng: reference_train(source.image_path(i), rng),
      ("eval", "ltr_jax"): lambda i, rng: evaluate(sources.undecoded(source, i)),
      ("eval", "pil_reference"): lambda i, rng: reference_eval(source.image_path(i)),
      ("decode", "ltr_jax"): lambda i, rng: sources.undecoded(source, i).decode(),
      ("decode", "pil_reference"): lambda i, rng: np.asarray(_pil_load(source.image_path(i))),
  }
  if sources.simplejpeg is not None:  # also ltr_jax as without the `fast` extra: Pillow decodes
    for kind in KINDS:
      runs[(kind, PILLOW_ONLY)] = _pillow_only(runs[(kind, "ltr_jax")])
  seconds = {key: np.full((2, len(source)), np.inf) for key in runs}  # [wall, cpu] x image
  keys = list(runs)
  for r in range(rounds + 1):  # round 0 warms up (imports, page cache) and is not kept
    for key in keys[r % len(keys):] + keys[:r % len(keys)]:  # a rotated order in every round
      run = runs[key]
      for i in range(len(source)):
        rng = np.random.Generator(np.random.Philox(key=[0, i]))  # the same draws in every pipeline
        wall, cpu = time.perf_counter(), time.process_time()
        run(i, rng)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if r:
          seconds[key][:, i] = np.minimum(seconds[key][:, i], (wall, cpu))
  result: dict = {"wall": {kind: {} for kind in KINDS}, "cpu": {kind: {} for kind in KINDS}}
  for (kind, name), (wall, cpu) in seconds.items():
    result["wall"][kind][name] = len(source) / wall.sum()
    result["cpu"][kind][name] = len(source) / cpu.sum()
  return result


def per_core_rates(list_file: str, root: str, rounds: int) -> dict:
  """`_per_core` in a fresh process pinned to the last core this process may use."""
  core = max(os.sched_getaffinity(0))
  with multiprocessing.get_context("spawn").Pool(1) as pool:
    return pool.apply(_per_core, (list_file, root, core, rounds))


def time_pipeline(source, transform, batch: int, num_batches: int, workers: int) -> tuple[float, float, float]:
  """(images / s over `num_batches` in the steady state, seconds to the first batch, this process's CPU
  time over the timed batches / their wall-clock time)."""
  sampler = IndexSampler(source.labels, source.num_classes, "instance", seed=0, num_epochs=1)
  start = time.perf_counter()
  batches = pipeline.train_batches(source, sampler, transform, global_batch=batch, start_step=0,
                                   num_steps=num_batches + 1 + 4 * (workers or 4), seed=0, num_workers=workers)
  first = next(batches)
  first_seconds = time.perf_counter() - start
  assert first["image"].shape[0] == batch
  for _ in range(4 * (workers or 4)):  # made ahead or under way (see the module docstring)
    next(batches)
  start, cpu = time.perf_counter(), time.process_time()
  count = 0
  for b in batches:
    count += len(b["label"])
  seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
  assert count == num_batches * batch, count
  batches.close()
  del batches
  gc.collect()
  return count / seconds, first_seconds, cpu / seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", help="write the results as JSON to this path")
  parser.add_argument("--workers", help="comma-separated worker counts (default 0, 1, ..., the usable cores)")
  parser.add_argument("--rounds", type=int, default=5, help="timed rounds over the JPEGs, per core")
  parser.add_argument("--fashion-batches", type=int, default=100, help="timed batches of 128 (Fashion)")
  parser.add_argument("--jpeg-batches", type=int, default=20, help="timed batches of 64 (JPEG)")
  parser.add_argument("--num-images", type=int, default=64, help="JPEGs to write")
  parser.add_argument("--size", default="500x375", help="JPEG width x height (ImageNet's typical size)")
  args = parser.parse_args()
  width, height = (int(n) for n in args.size.split("x"))
  cores = len(os.sched_getaffinity(0))
  workers = [int(w) for w in args.workers.split(",")] if args.workers else list(range(cores + 1))
  load_before = os.getloadavg()[0]

  with tempfile.TemporaryDirectory(prefix="ltr_jpeg_bench_") as folder:
    list_file = write_jpegs(folder, args.num_images, 10, width, height)
    jpeg = sources.ListFileSource(list_file, folder)
    size_kb = sum(os.path.getsize(jpeg.image_path(i)) for i in range(len(jpeg))) / len(jpeg) / 1024
    print(f"wrote {len(jpeg)} JPEGs of {width}x{height}, quality {QUALITY}, mean {size_kb:.1f} KB", flush=True)
    per_core = per_core_rates(list_file, folder, args.rounds)
    for kind, rate in per_core["wall"].items():
      print(
          f"per core {kind}: " +
          ", ".join(f"{name} {rate[name]:.0f} img/s ({rate[name] / rate['pil_reference']:.2f}x)" for name in rate),
          flush=True)

    inputs = {
        "jpeg_imagenet": (jpeg, RandomResizedCropFlip(SIZE, jitter=JITTER), 64, args.jpeg_batches),
        "fashion_mnist": (sources.fashion_mnist("train"), PadCropFlip(28), 128, args.fashion_batches)
    }
    rates: dict[str, dict[str, float]] = {name: {} for name in inputs}
    firsts: dict[str, dict[str, float]] = {name: {} for name in inputs}
    main_share: dict[str, dict[str, float]] = {name: {} for name in inputs}
    for name, (source, transform, batch, num_batches) in inputs.items():
      for w in workers:
        rates[name][str(w)], firsts[name][str(w)], main_share[name][str(w)] = time_pipeline(
            source, transform, batch, num_batches, w)
        print(
            f"{name} workers={w}: {rates[name][str(w)]:.0f} img/s (main process: "
            f"{main_share[name][str(w)]:.2f} of a core)", flush=True)
  load_after = os.getloadavg()[0]

  print(f"\n1-min load average {load_before:.1f} before, {load_after:.1f} after; {cores} usable cores")
  print(f"\nper core, {width}x{height} JPEGs (images / s; wall clock, and CPU time in brackets)")
  names = [name for name in per_core["wall"]["train"] if name != "pil_reference"]
  print("| transform | PIL reference | " + " | ".join(f"{name} | ratio" for name in names) + " |")
  print("|---|---:|" + "---:|---:|" * len(names))
  for kind in KINDS:
    wall, cpu = per_core["wall"][kind], per_core["cpu"][kind]
    print(f"| {kind} | {wall['pil_reference']:.0f} ({cpu['pil_reference']:.0f}) | " +
          " | ".join(f"{wall[name]:.0f} ({cpu[name]:.0f}) | {wall[name] / wall['pil_reference']:.2f} "
                     f"({cpu[name] / cpu['pil_reference']:.2f})" for name in names) + " |")
  wall = per_core["wall"]
  for kind, target in TARGETS.items():
    print(f"{kind} at {target}x the reference is {target * wall[kind]['pil_reference']:.0f} img/s, "
          f"{1e3 / (target * wall[kind]['pil_reference']):.2f} ms per image; decoding alone takes "
          f"{1e3 / wall['decode']['ltr_jax']:.2f} ms ({wall['decode']['ltr_jax']:.0f} img/s)")
  print("\nimages / s out of train_batches (steady state, worker start-up excluded; in brackets the share of "
        "a core the consuming process used)")
  print("| input | batch x timed batches | " + " | ".join(f"workers={w}" for w in workers) + " | first batch s (" +
        ", ".join(f"w={w}" for w in workers) + ") |")
  print("|---|---|" + "---:|" * len(workers) + "---|")
  for name, (_, _, b, n) in inputs.items():
    cells = " | ".join(f"{rates[name][str(w)]:.0f} ({main_share[name][str(w)]:.2f})" for w in workers)
    first = ", ".join(f"{firsts[name][str(w)]:.2f}" for w in workers)
    print(f"| {name} | {b} x {n} | {cells} | {first} |")

  result = {
      "per_core_images_per_second": per_core["wall"], "per_core_cpu_images_per_second": per_core["cpu"],
      "images_per_second": rates, "first_batch_seconds": firsts, "main_process_core_share": main_share,
      "machine": machine(f"numpy {np.__version__}", f"Pillow {Image.__version__}",
                         f"simplejpeg {getattr(sources.simplejpeg, '__version__', 'not installed')}"),
      "usable_cores": cores, "load_average_1min": {"before": load_before, "after": load_after},
      "worker_startup": "excluded (the first batch and 4 per worker or thread untimed; see "
                        "first_batch_seconds)", "batch_size": {name: v[2] for name, v in inputs.items()},
      "timed_batches": {name: v[3] for name, v in inputs.items()}, "jpeg": {
          "num_images": args.num_images, "width": width, "height": height, "quality": QUALITY, "mean_kb": size_kb,
          "per_core_rounds": args.rounds, "train": f"RandomResizedCropFlip({SIZE}, jitter={JITTER})",
          "eval": f"ResizeCenterCrop({RESIZE}, {SIZE})"
      }
  }
  if args.json:
    write_json(args.json, result)


if __name__ == "__main__":
  main()
