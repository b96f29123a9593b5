"""Part decouple: benchmarks/decouple.py at iNaturalist scale (`--scale 1`, one repeat) with `--device gpu`: JAX on
the GPU against PyTorch on CUDA, in four groups (one tau and the tau sweep, NCM, cRT + LWS, argmax + matmul), each its
own decouple.py process, stopped when the part's time is up. Without a GPU (and with `--tiny`: scale 0.01) the same
on the CPU."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from benchmarks.gpu import BENCHMARKS
from benchmarks.gpu.harness import Results, log, read_json, run_command, time_left, with_outcome
from benchmarks.gpu.info import on_gpu

# iNaturalist-scale predictions first, then NCM (3.6 GB of features to make), cRT and LWS (ImageNet-LT scale), and
# the one-call micro-benchmarks last.
GROUPS = ("tau_one,tau_sweep", "ncm", "crt,lws", "argmax,matmul")


def run(args, res: Results, budget: float, log_file: str) -> None:
  """The groups in order while `budget` seconds last, into res's section 'decouple'."""
  deadline = time.monotonic() + budget
  scale = 0.01 if args.tiny else 1.0
  device = "gpu" if on_gpu(res.data.get("info") or {}) else "cpu"
  section: dict = {"scale": scale, "device": device, "repeats": 1, "groups": {}, "budget_seconds": budget}
  res.set("decouple", section)
  folder = tempfile.mkdtemp(prefix="ltr_gpu_decouple_")
  try:
    for k, group in enumerate(GROUPS):
      left = time_left(deadline, section["groups"], group, res)
      if left is None:
        continue
      # Each group may take what is left of the part: the earlier ones are the more valuable.
      out_json = os.path.join(folder, f"group{k}.json")
      log(f"decouple: {group} ...")
      r = run_command([
          sys.executable,
          os.path.join(BENCHMARKS, "decouple.py"), "--json", out_json, "--scale",
          str(scale), "--repeats", "1", "--only", group, "--device", device
      ], timeout=left, log_file=log_file, cwd=BENCHMARKS)
      got = read_json(out_json)
      entry = with_outcome(got if got is not None else {}, r)
      section["groups"][group] = entry
      res.write()
      if got:
        s = got["seconds"]
        log("decouple: " +
            ", ".join(f"{c} jax {s['jax'][c]:.3f} s torch {s['torch'][c]:.3f} s" for c in group.split(",")))
      else:
        log(f"decouple: {group} {entry.get('error')}")
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def summary(section: dict) -> list[str]:
  """Seconds of JAX and PyTorch per computation, or why a group has none."""
  lines = [f"decouple (scale {section.get('scale')}, {section.get('device')}): seconds jax / torch"]
  for group, g in section.get("groups", {}).items():
    if "seconds" in g:
      lines += [f"  {c:10s} {g['seconds']['jax'][c]:8.3f} {g['seconds']['torch'][c]:8.3f}" for c in group.split(",")]
    else:
      lines.append(f"  {group}: {g.get('error') or g.get('skipped')}")
  return lines
