"""ltr_jax against PyTorch on one GPU, every figure into one JSON.

`python -m benchmarks.gpu all`, run from the repository root (benchmarks/gpu/run.sh installs what the node lacks,
then calls it), is the whole run: the parts in order of value, info, step, vit, e2e and decouple (what each measures:
its module's docstring, benchmarks/gpu/<part>.py; vit's is vit_b16.py, decouple's stage2.py). They share `--budget`
seconds: each part gets its planned seconds (PLANNED, or `--budgets`) plus what the parts before it left unused, and
the last one all that is left. The JSON is rewritten after every part and every timed configuration, so a part that
fails or runs out of time leaves what it had. Where it goes: `--json`, by default benchmarks/results/gpu_<gpu>.json
(with `--tiny`: <out>/gpu_tiny_<device>.json), with a copy in the output folder `--out` (default $OUT, else
/tmp/ltr_gpu_out), beside gpu_log.txt (every process's output). A summary table ends the run.

`--tiny` runs the same code at CPU sizes in a few minutes: resnet32 (32x32) and resnet_mini (28x28x1), batch 8 / 16,
2 steps x 2 windows; vit.py's tiny ViT (2 blocks of width 128, 32x32, batch 4); 32 JPEGs, batch 8, resnet32 at 32x32,
6 steps; decouple.py at scale 0.01 on the CPU.

The other sub-commands are the parts' own processes (`info`, `smoke`, `e2e-data`, `e2e-run`); `--help` on each.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback

from benchmarks.gpu import BENCHMARKS, e2e, info, stage2, step, vit_b16
from benchmarks.gpu.harness import Results, harness_command, log, read_json, run_command, tail

# The parts after info, in order: each module's run(args, res, budget, log_file) and summary(section).
PARTS = {"step": step, "vit": vit_b16, "e2e": e2e, "decouple": stage2}
# Planned seconds per part (full size: --budget 530 or so after run.sh's install and smoke test).
PLANNED = {"info": 25, "step": 195, "vit": 100, "e2e": 110, "decouple": 85}
TINY_PLANNED = {"info": 60, "step": 150, "vit": 120, "e2e": 120, "decouple": 90}


def _json_path(args, info_json: dict) -> str:
  """--json, else gpu_<card>.json in benchmarks/results/ (--tiny: gpu_tiny_<device>.json in the output folder)."""
  if args.json:
    return args.json
  device = (info_json.get("torch") or {}).get("device") or (info_json.get("jax") or {}).get("device_kind") or "cpu"
  tag = next((t for t in ("h200", "h100", "a100", "l4") if t in device.lower()), re.sub(r"\W+", "_", device.lower()))
  folder = args.out if args.tiny else os.path.join(BENCHMARKS, "results")
  return os.path.join(folder, f"gpu_{'tiny_' if args.tiny else ''}{tag}.json")


def cmd_all(args) -> None:
  """info, then the parts of --parts within --budget seconds, then the summary."""
  start = time.monotonic()
  deadline = start + args.budget
  parts = ["info"] + [p for p in PARTS if p in args.parts.split(",")]
  planned = dict(TINY_PLANNED if args.tiny else PLANNED)
  for item in filter(None, (args.budgets or "").split(",")):
    k, v = item.split("=")
    planned[k] = float(v)
  os.makedirs(args.out, exist_ok=True)
  log_file = os.path.join(args.out, "gpu_log.txt")
  with tempfile.TemporaryDirectory(prefix="ltr_gpu_") as scratch:
    info_json = os.path.join(scratch, "info.json")
    r = run_command(harness_command("info", "--json", info_json), timeout=max(10, planned["info"] * 3),
                    log_file=log_file)
    machine = read_json(info_json) or {"error": r}
  json_path = _json_path(args, machine)
  res = Results(json_path, args.out)
  res.data.update({
      "what": "benchmarks/gpu: ltr_jax against PyTorch on one GPU", "command": " ".join(sys.argv), "tiny": args.tiny,
      "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "budget_seconds": args.budget, "parts": parts,
      "planned_seconds": planned, "peak_flops_bf16": args.peak,
      "setup": read_json(args.setup_json) if args.setup_json else None, "info": machine, "part_seconds": {}
  })
  res.write()
  log(f"writing {' and '.join(res.targets)}")
  if machine.get("torch", {}).get("bf16_matmul_tflops"):
    log(f"info: {machine['torch'].get('device')}: bf16 matmul {machine['torch']['bf16_matmul_tflops']:.0f} TFLOP/s")
  res.data["part_seconds"]["info"] = round(time.monotonic() - start, 1)

  later = parts[1:]
  for i, part in enumerate(later):
    now = time.monotonic()
    budget = max(min(planned[part], 20.0), deadline - now - sum(planned[p] for p in later[i + 1:]))
    if budget <= 5:
      res.data.setdefault("skipped_parts", []).append(part)
      res.write()
      log(f"{part}: skipped, no time left")
      continue
    log(f"{part}: {budget:.0f} s")
    t0 = time.monotonic()
    try:
      PARTS[part].run(args, res, budget, log_file)
    except Exception as e:  # noqa: BLE001  A part's failure leaves the others to run.
      res.data.setdefault("part_errors", {})[part] = tail(traceback.format_exc(), 3000)
      log(f"{part}: failed: {type(e).__name__}: {e}")
    res.data["part_seconds"][part] = round(time.monotonic() - t0, 1)
    res.write()
  res.data["total_seconds"] = round(time.monotonic() - start, 1)
  after = info.clocks_after() if info.on_gpu(machine) else None
  if after:
    res.data["nvidia_smi_query_after"] = after
  res.write()
  print_summary(res.data)
  print(f"\nwrote {' and '.join(res.targets)}", flush=True)


def print_summary(data: dict) -> None:
  print("\n========== summary ==========")
  machine = data.get("info") or {}
  t, j = machine.get("torch") or {}, machine.get("jax") or {}
  print(f"device: torch {t.get('version')} {t.get('device', 'cpu')}; jax {j.get('version')} {j.get('backend')} "
        f"{j.get('device_kind')}; bf16 matmul {t.get('bf16_matmul_tflops', float('nan')):.0f} TFLOP/s")
  print(f"versions: {json.dumps(machine.get('versions', {}))}")
  print(f"part seconds: {data.get('part_seconds')}, total {data.get('total_seconds')}")
  for name, part in PARTS.items():
    if data.get(name):
      print("\n" + "\n".join(part.summary(data[name])))
  for name, err in (data.get("part_errors") or {}).items():
    print(f"\npart {name} failed:\n{err[-800:]}")


def main() -> None:
  p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  sub = p.add_subparsers(dest="cmd", required=True)
  a = sub.add_parser("all", help="every part, in order, within --budget seconds")
  a.add_argument("--json", help="output JSON (default benchmarks/results/gpu_<gpu>.json; --tiny: in --out)")
  a.add_argument("--out", default=os.environ.get("OUT") or "/tmp/ltr_gpu_out",
                 help="folder for a copy of the JSON and gpu_log.txt (default $OUT, else /tmp/ltr_gpu_out)")
  a.add_argument("--tiny", action="store_true", help="CPU sizes (a few minutes on 2 cores)")
  a.add_argument("--budget", type=float, default=540, help="seconds for all the parts together (default 540)")
  a.add_argument("--parts", default=",".join(PARTS), help=f"of {','.join(PARTS)} (info always runs)")
  a.add_argument("--budgets", help="planned seconds per part, e.g. step=195,vit=100,e2e=110,decouple=85")
  a.add_argument("--setup-json", help="run.sh's record of the install (merged into the JSON)")
  a.add_argument(
      "--peak", type=float, default=step.PEAK_BF16,
      help=f"bf16 peak FLOP/s for the fractions of peak (default {step.PEAK_BF16:.3g}: an H100 / H200's "
      "dense bf16 rate, measured; info's bf16_matmul_tflops is this card's)")
  a.add_argument("--steps", type=int, help="steps per timing window (default 10; --tiny 2)")
  a.add_argument("--windows", type=int, help="timing windows, median reported (default 5; --tiny 2)")
  a.add_argument("--compile-budget", type=float, default=150,
                 help="seconds for one torch.compile configuration (--tiny: 60 at most)")
  a.add_argument(
      "--step-jobs", help="instead of the built-in order: framework:model:dtype:batch,... "
      "(framework jax, torch or torch_compile)")
  a.add_argument("--vit-rows", help=f"rows of part vit, in order (default {','.join(vit_b16.VIT_ORDER)})")
  a.add_argument("--vit-batch", type=int, default=128, help="part vit's batch on a GPU (default 128)")
  a.add_argument("--e2e-model", default="resnet50", help="the loop's model (default resnet50; --tiny resnet32)")
  a.add_argument("--e2e-steps", type=int, default=0, help="steps of the loop (default 160; --tiny 6)")
  a.add_argument("--e2e-images", type=int, default=0, help="distinct JPEGs to write (default 512; --tiny 32)")
  a.add_argument("--e2e-workers", help="data.num_workers values, in order (default 15,8,4; --tiny 2,1)")
  a.set_defaults(func=cmd_all)

  i = sub.add_parser("info", help="machine, versions, devices (a JSON)")
  i.add_argument("--json", required=True)
  i.set_defaults(func=info.cmd_info)
  s = sub.add_parser("smoke", help="imports + 2 jitted steps on the default backend")
  s.set_defaults(func=lambda args: step.smoke())
  d = sub.add_parser("e2e-data", help="write the JPEGs and list files")
  d.add_argument("--dir", required=True)
  d.add_argument("--images", type=int, default=512)
  d.add_argument("--lines", type=int, default=40960)
  d.add_argument("--classes", type=int, default=1000)
  d.add_argument("--size", default="500x375")
  d.add_argument("--procs", type=int, default=os.cpu_count())
  d.set_defaults(func=e2e.cmd_data)
  r = sub.add_parser("e2e-run", help="one worker count: pipeline alone, then the stage-1 loop")
  r.add_argument("--dir", required=True)
  r.add_argument("--workers", type=int, required=True)
  r.add_argument("--model", default="resnet50")
  r.add_argument("--dtype", default="bfloat16")
  r.add_argument("--batch", type=int, default=256)
  r.add_argument("--lines", type=int, required=True)
  r.add_argument("--classes", type=int, default=1000)
  r.add_argument("--image-size", type=int, default=224)
  r.add_argument("--log-every", type=int, default=20)
  r.add_argument("--pipeline-batches", type=int, default=30)
  r.add_argument("--json", required=True)
  r.set_defaults(func=e2e.cmd_run)
  args = p.parse_args()
  if args.cmd == "all":
    args.steps = args.steps or (2 if args.tiny else 10)
    args.windows = args.windows or (2 if args.tiny else 5)
    if args.tiny:
      args.compile_budget = min(args.compile_budget, 60)
  args.func(args)


if __name__ == "__main__":
  main()
