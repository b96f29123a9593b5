"""Part e2e: the whole stage-1 loop on JPEGs against the step alone and the input pipeline alone.

The loop: `train.train_and_evaluate` with configs/imagenet_lt_rx50.py, model `--e2e-model` in bfloat16, 1000 classes,
data.kind 'list', no validation split, for `--e2e-steps` steps of batch 256 on 500x375 JPEGs written here
(benchmarks/pipeline.py's photo-like images, quality 90, `--e2e-images` distinct files listed over and over), with
data.num_workers in `--e2e-workers`, each count in a fresh process. Its images/s come from its metrics.jsonl
('train/images_per_second' per log window, the first two windows, compilation and worker start-up, left out), beside
the step alone (part step, same model, dtype and batch) and the input pipeline alone (`pipeline.train_batches` with
the same transform, workers and batch, no GPU: benchmarks/pipeline.py's time_pipeline). loop / step < 1 with
pipeline-alone < step means the input starves the GPU.

`--tiny`: 32 JPEGs, batch 8, resnet32 at 32x32, 10 classes, 6 steps, 2 and 1 workers.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time

from benchmarks.gpu import step as step_part
from benchmarks.gpu.harness import Results, harness_command, log, read_json, run_command, with_outcome


def _write_part(job: tuple) -> str:
  import pipeline as pipeline_bench
  folder, n, width, height, seed = job
  return pipeline_bench.write_jpegs(folder, n, 10, width, height, seed=seed)


def cmd_data(args) -> None:
  """Writes `--images` distinct JPEGs with `--procs` processes and the list files: train.txt of `--lines` lines (the
  JPEGs over and over, line j labelled j % classes) and test.txt (16 lines)."""
  width, height = (int(v) for v in args.size.split("x"))
  procs = max(1, min(args.procs, args.images))
  per = [args.images // procs + (k < args.images % procs) for k in range(procs)]
  jobs = [(os.path.join(args.dir, f"p{k:02d}"), n, width, height, k) for k, n in enumerate(per) if n]
  t0 = time.perf_counter()
  with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
    pool.map(_write_part, jobs)
  files = []
  for folder, _, _, _, _ in jobs:
    with open(os.path.join(folder, "train.txt")) as f:
      files += [os.path.relpath(os.path.join(folder, line.split()[0]), args.dir) for line in f if line.strip()]
  with open(os.path.join(args.dir, "train.txt"), "w") as f:
    f.write("".join(f"{files[j % len(files)]} {j % args.classes}\n" for j in range(args.lines)))
  with open(os.path.join(args.dir, "test.txt"), "w") as f:
    f.write("".join(f"{files[j % len(files)]} {j % args.classes}\n" for j in range(16)))
  kb = sum(os.path.getsize(os.path.join(args.dir, p)) for p in files) / len(files) / 1024
  info = {
      "distinct_images": len(files), "lines": args.lines, "width": width, "height": height, "mean_kb": kb,
      "classes": args.classes, "write_seconds": time.perf_counter() - t0, "processes": procs
  }
  with open(os.path.join(args.dir, "data.json"), "w") as f:
    json.dump(info, f)
  print(json.dumps(info))


def cmd_run(args) -> None:
  """One worker count: the input pipeline alone, then the stage-1 loop; a JSON to --json."""
  out: dict = {"workers": args.workers}

  def save():
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)

  from configs import imagenet_lt_rx50
  from ltr_jax.data import sources, transforms
  import pipeline as pipeline_bench
  config = imagenet_lt_rx50.get_config()
  config.model.name = args.model
  config.model.dtype = args.dtype
  config.data.update(
      dict(list_dir=args.dir, image_root=args.dir, train_list="train.txt", val_list="", test_list="test.txt",
           num_classes=args.classes, image_size=args.image_size, num_workers=args.workers, preflight=False))
  steps_per_epoch = args.lines // args.batch
  config.train.update(
      dict(batch_size=args.batch, epochs=1, warmup_epochs=0.0, log_every_steps=args.log_every, eval_every_epochs=1,
           checkpoint_every_epochs=1))

  # The input pipeline alone (no JAX work): the loop's source, transform, batch and workers.
  source = sources.ListFileSource(os.path.join(args.dir, "train.txt"), args.dir, args.classes)
  transform = transforms.train_transform_of(config.data)
  if args.pipeline_batches:
    ips, first, share = pipeline_bench.time_pipeline(source, transform, args.batch, args.pipeline_batches, args.workers)
    out["pipeline_alone"] = {
        "images_per_second": ips, "first_batch_seconds": first, "main_process_core_share": share,
        "timed_batches": args.pipeline_batches,
        "transform": f"{type(transform).__name__} ({config.data.train_transform}, "
                     f"{config.data.image_size}, jitter {config.data.color_jitter})"
    }
    save()
    print(f"pipeline alone, {args.workers} workers: {ips:.0f} img/s", flush=True)

  import jax
  from ltr_jax import train
  workdir = os.path.join(args.dir, f"run_w{args.workers}")
  shutil.rmtree(workdir, ignore_errors=True)
  out.update(
      model=args.model, dtype=args.dtype, batch=args.batch, steps=steps_per_epoch, image_size=args.image_size,
      log_every_steps=args.log_every, device=f"{jax.default_backend()}: {jax.devices()[0].device_kind}",
      config="configs/imagenet_lt_rx50.py with model.name, model.dtype, data (list files written here, "
      "no validation split, num_workers) and train (batch, 1 epoch, no warm-up, log period) replaced")
  save()
  t0 = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  out["loop_seconds"] = time.perf_counter() - t0
  out.update(loop_windows(workdir, args.batch))
  save()
  print(f"loop, {args.workers} workers: {out.get('images_per_second', float('nan')):.0f} img/s", flush=True)


def loop_windows(workdir: str, batch: int) -> dict:
  """The loop's images/s from its metrics.jsonl (also of a run stopped part-way): every log window, and over the
  windows after the first two (compilation, worker start-up)."""
  windows = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          m = json.loads(line)
        except ValueError:
          continue
        if "train/images_per_second" in m:
          windows.append((m["step"], m["train/images_per_second"]))
  # Window k covers the steps after the previous log step up to its own: images and seconds per window.
  images = [(step - prev) * batch for (step, _), prev in zip(windows, [0] + [s for s, _ in windows])]
  seconds = [n / ips for n, (_, ips) in zip(images, windows)]
  skip = 2 if len(windows) > 3 else 1
  out: dict = {
      "windows": [{"step": s, "images_per_second": ips, "seconds": t} for (s, ips), t in zip(windows, seconds)],
      "skipped_windows": skip
  }
  if len(windows) > skip:
    out["images_per_second"] = sum(images[skip:]) / sum(seconds[skip:])
    out["first_windows_seconds"] = sum(seconds[:skip])
  return out


def run(args, res: Results, budget: float, log_file: str) -> None:
  """The JPEGs, then one process per worker count while `budget` seconds last, into res's section 'e2e'."""
  deadline = time.monotonic() + budget
  tiny = args.tiny
  batch = 8 if tiny else 256
  steps = args.e2e_steps or (6 if tiny else 160)
  log_every = 2 if tiny else 20
  model = "resnet32" if tiny else args.e2e_model
  image_size = 32 if tiny else 224
  images = args.e2e_images or (32 if tiny else 512)
  classes = 10 if tiny else 1000  # every class in the list file (the sampler refuses empty classes)
  workers = [int(w) for w in (args.e2e_workers or ("2,1" if tiny else "15,8,4")).split(",")]
  section: dict = {
      "model": model, "dtype": "bfloat16", "batch": batch, "steps": steps, "image_size": image_size, "classes": classes,
      "runs": [], "skipped": [], "budget_seconds": budget
  }
  res.set("e2e", section)
  folder = tempfile.mkdtemp(prefix="ltr_gpu_e2e_")
  try:
    r = run_command(
        harness_command("e2e-data", "--dir", folder, "--images", str(images),
                        "--lines", str(batch * steps), "--classes", str(classes), "--procs",
                        str(len(os.sched_getaffinity(0)))), timeout=max(10, min(120, deadline - time.monotonic())),
        log_file=log_file)
    section["data"] = read_json(os.path.join(folder, "data.json")) or {"error": r}
    res.write()
    if r["rc"] != 0:
      log(f"e2e: writing the JPEGs failed: {r['output_tail'][-500:]}")
      return
    log(f"e2e: {section['data']['distinct_images']} JPEGs of {section['data']['width']}x"
        f"{section['data']['height']}, {section['data']['mean_kb']:.0f} KB each, in "
        f"{section['data']['write_seconds']:.1f} s")
    estimate = None
    for w in workers:
      left = deadline - time.monotonic()
      if estimate is not None and left < estimate:
        section["skipped"].append({"workers": w, "reason": f"time: about {estimate:.0f} s needed, {left:.0f} s left"})
        res.write()
        log(f"e2e: skip {w} workers (about {estimate:.0f} s needed, {left:.0f} s left)")
        continue
      out_json = os.path.join(folder, f"e2e_w{w}.json")
      log(f"e2e: {w} workers ...")
      r = run_command(
          harness_command("e2e-run", "--dir", folder, "--workers",
                          str(w), "--model", model, "--dtype", "bfloat16", "--batch", str(batch), "--lines",
                          str(batch * steps), "--classes", str(classes), "--image-size", str(image_size), "--log-every",
                          str(log_every), "--pipeline-batches", str(4 if tiny else 30), "--json", out_json),
          timeout=max(5, left), log_file=log_file, env=dict(os.environ, TQDM_DISABLE="1"))
      entry = with_outcome(read_json(out_json) or {"workers": w}, r)
      if r["rc"] != 0:
        if "images_per_second" not in entry:  # what the loop logged before it was stopped
          entry.update(loop_windows(os.path.join(folder, f"run_w{w}"), batch), partial=True)
      # Later counts reuse the compiled step (persistent cache): about the loop's own time plus start-up.
      estimate = r["seconds"] * (0.7 if estimate is None else 1.0)
      alone = step_part.images_per_second(res.data.get("step"), "jax", model, "bfloat16", batch)
      if alone and "images_per_second" in entry:
        entry["step_alone_images_per_second"] = alone
        entry["loop_over_step"] = entry["images_per_second"] / alone
      if "images_per_second" in entry and "pipeline_alone" in entry:
        entry["loop_over_pipeline_alone"] = entry["images_per_second"] / entry["pipeline_alone"]["images_per_second"]
      section["runs"].append(entry)
      res.write()
      log("e2e: " + _line(entry))
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def _line(entry: dict) -> str:
  parts = [f"{entry.get('workers')} workers:"]
  if "images_per_second" in entry:
    parts.append(f"loop {entry['images_per_second']:.0f} img/s")
  if "pipeline_alone" in entry:
    parts.append(f"pipeline alone {entry['pipeline_alone']['images_per_second']:.0f} img/s")
  if "step_alone_images_per_second" in entry:
    parts.append(f"step alone {entry['step_alone_images_per_second']:.0f} img/s (loop/step "
                 f"{entry['loop_over_step']:.2f})")
  if "error" in entry:
    parts.append(f"error: {entry['error']}")
  return " ".join(parts)


def summary(section: dict) -> list[str]:
  """One line per worker count, then what was skipped."""
  return ([f"e2e ({section.get('model')} bf16 batch {section.get('batch')}, {section.get('steps')} steps):"] +
          [f"  {_line(r)}" for r in section.get("runs", [])] + [f"  skipped {s}" for s in section.get("skipped", [])])
