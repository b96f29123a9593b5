"""Part vit: benchmarks/vit.py on the GPU: ViT-B/16 at 224x224 (timm's vit_base_patch16_clip_224), ltr_jax against
PyTorch (timm), feature extraction in bfloat16 and float32 and LIFT's AdaptFormer training step in bfloat16 and
float32 (how each row measures: benchmarks/vit.py's docstring), batch `--vit-batch` (default 128, LIFT's), 10 calls
x 5 windows. PyTorch on CUDA with TF32 matmuls allowed (JAX's default for float32 on a GPU), JAX on its default
backend. Each row is its own vit.py process (its JAX and PyTorch worker processes built one after the other), in
order of value (VIT_ORDER, or `--vit-rows`), stopped when the part's time is up; one set of random weights serves
them all. PyTorch needs timm, which run.sh installs from the carried wheels.

Without a GPU, and with `--tiny`: vit.py's tiny ViT (2 blocks of width 128, 32x32 images, batch 4) on the CPU,
2 calls x 2 windows.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from benchmarks.gpu import BENCHMARKS
from benchmarks.gpu.harness import Results, log, read_json, run_command, time_left, with_outcome
from benchmarks.gpu.info import on_gpu

VIT_ORDER = ("features_bfloat16", "adaptformer_bfloat16", "features_float32", "adaptformer_float32")


def run(args, res: Results, budget: float, log_file: str) -> None:
  """The rows in order while `budget` seconds last, into res's section 'vit'."""
  deadline = time.monotonic() + budget
  device = "gpu" if on_gpu(res.data.get("info") or {}) else "cpu"
  rows = [r for r in (args.vit_rows or ",".join(VIT_ORDER)).split(",") if r]
  steps, windows = (2, 2) if args.tiny or device == "cpu" else (10, 5)
  section: dict = {"device": device, "tiny": args.tiny, "rows": {}, "budget_seconds": budget}
  res.set("vit", section)
  folder = tempfile.mkdtemp(prefix="ltr_gpu_vit_")
  weights = os.path.join(folder, "weights.npz")
  try:
    for k, row in enumerate(rows):
      left = time_left(deadline, section["rows"], row, res)
      if left is None:
        log(f"vit: skip {row} (out of time)")
        continue
      out_json = os.path.join(folder, f"row{k}.json")
      log(f"vit: {row} ...")
      cmd = [
          sys.executable,
          os.path.join(BENCHMARKS, "vit.py"), "--json", out_json, "--rows", row, "--device", device, "--steps",
          str(steps), "--windows",
          str(windows), "--max-wait", "0", "--no-ops", "--weights", weights
      ]
      if args.tiny or device == "cpu":
        cmd.append("--tiny")
      else:
        cmd += ["--batch", str(args.vit_batch)]
      r = run_command(cmd, timeout=left, log_file=log_file, cwd=BENCHMARKS)
      got = read_json(out_json)
      entry = (got or {}).get("rows", {}).get(row, {})
      if got:
        entry.update(model=got.get("model"), batch=got.get("batch"), machine=got.get("machine"))
      with_outcome(entry, r)
      section["rows"][row] = entry
      res.write()
      log("vit: " + _line(row, entry))
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def _line(row: str, e: dict) -> str:
  if "images_per_second" not in e:
    return f"{row}: {e.get('error') or e.get('skipped')}"
  ips, pk = e["images_per_second"], e.get("peak_device_memory_gb") or {}
  mem = (f", device peak GB jax {pk['jax']:.2f} torch {pk['torch']:.2f}"
         if pk.get("jax") is not None and pk.get("torch") is not None else "")
  return (f"{row}: jax {ips['jax']:.1f} img/s, torch {ips['torch']:.1f} img/s, jax/torch time "
          f"{e['ratio_jax_over_torch']:.2f}{mem}")


def summary(section: dict) -> list[str]:
  """One line per row: images/s of both, the time ratio, the device's peak memory; or why a row has none."""
  lines = [f"vit ({section.get('device')}{', tiny' if section.get('tiny') else ''}): images/s"]
  lines += ["  " + _line(row, e) for row, e in section.get("rows", {}).items()]
  return lines
