"""Part step: the training step at 224x224, 1000 classes: ResNet-50 and ResNeXt-50 32x4d, bfloat16 and float32,
batch 256 and 128.

JAX: ltr_jax's jitted step (`train.make_train_step` through benchmarks/train_step.py's JaxRunner, config key
model.dtype). PyTorch: the twin (benchmarks/torch_models.py) through train_step.py's TorchRunner, channels_last,
cudnn.benchmark, AMP (`torch.autocast(bfloat16)`) for bfloat16, eager; and `torch.compile` for ResNet-50 and
ResNeXt-50 in bfloat16 at batch 256, each in a fresh process killed if it runs past `--compile-budget` (recorded as
such). Both sides: SGD momentum 0.9, weight decay 5e-4, mean cross-entropy, a fixed uint8 NHWC batch moved host ->
device every step. Timing: 3 warm-up steps, then `--windows` windows of `--steps` steps (each window ends with a
device synchronisation), images/s = batch x steps / median window. The configurations run in a fixed order of value
(STEP_ORDER); one that its estimated time no longer fits is skipped and recorded as skipped. JAX and PyTorch each run
in one long-lived process (side by side on the GPU, one working at a time; JAX's with
XLA_PYTHON_CLIENT_PREALLOCATE=false so that its memory pool grows to what it uses).

FLOPs: analytic model FLOPs per training image: 2 x the multiply-adds of every convolution and of the linear head in
a forward pass (counted with hooks on the PyTorch twin at batch 1), times 3 (forward, input gradients, weight
gradients), less the stem convolution's input gradient (no framework computes it); BatchNorm, ReLU, pooling, loss and
optimizer (elementwise, < 1%) are left out. Beside it, for one configuration per model, XLA's cost analysis of the
lowered (unoptimised) JAX step / batch (`jit(...).lower(...).cost_analysis()['flops']`, elementwise work included).
The fraction of peak is analytic FLOPs/image x images/s / `--peak` (default PEAK_BF16), for float32 runs too (they
use TF32 tensor cores: see info's precision settings).

`--tiny`: resnet32 (32x32x3, 100 classes) and resnet_mini (28x28x1, 10 classes), batch 16 for 256 and 8 for 128.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import statistics
import time
import traceback

from benchmarks.gpu.harness import Results, kill_group, log, tail

PEAK_BF16 = 790e12  # dense bf16 FLOP/s of an H100 / H200, measured (an 8192^3 product, as part info times it)
WARMUP = 3  # benchmarks/train_step.py's
# The configurations, in order of value: (framework, model, dtype, batch). Model A is resnet50 and B
# resnext50_32x4d (--tiny: resnet32 and resnet_mini, batch 16 for 256 and 8 for 128).
STEP_ORDER = (
    ("torch", "A", "bfloat16", 256),
    ("jax", "A", "bfloat16", 256),
    ("torch", "B", "bfloat16", 256),
    ("jax", "B", "bfloat16", 256),
    ("torch_compile", "A", "bfloat16", 256),
    ("torch", "A", "float32", 256),
    ("jax", "A", "float32", 256),
    ("torch", "B", "float32", 256),
    ("jax", "B", "float32", 256),
    ("torch", "A", "bfloat16", 128),
    ("jax", "A", "bfloat16", 128),
    ("torch", "B", "bfloat16", 128),
    ("jax", "B", "bfloat16", 128),
    ("torch_compile", "B", "bfloat16", 256),
    ("torch", "A", "float32", 128),
    ("jax", "A", "float32", 128),
    ("torch", "B", "float32", 128),
    ("jax", "B", "float32", 128),
)
# model -> (name, image size, channels, classes)
FULL_MODELS = {"A": ("resnet50", 224, 3, 1000), "B": ("resnext50_32x4d", 224, 3, 1000)}
TINY_MODELS = {"A": ("resnet32", 32, 3, 100), "B": ("resnet_mini", 28, 1, 10)}
# First guesses of a configuration's seconds (worker start, build, compile, timing); replaced by what the first
# configuration of each framework and model took.
FIRST_GUESS = {"jax": 75.0, "torch": 25.0}


def step_data(size: int, channels: int, classes: int, batch: int) -> dict:
  """A fixed random uint8 NHWC batch and its labels."""
  import numpy as np
  rng = np.random.default_rng(0)
  return {
      "image": rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8),
      "label": rng.integers(0, classes, (batch,), dtype=np.int32)
  }


def smoke() -> None:
  """Imports what the parts use and runs 2 steps of ltr_jax's jitted step (the quickstart model, batch 8) on the
  default backend: run.sh installs the fallback flax / optax / orbax if this fails in them with the node's own."""
  import importlib
  for name in ("grain", "ml_collections", "tensorboardX", "ltr_jax.train", "ltr_jax.data.pipeline",
               "ltr_jax.data.sources", "ltr_jax.checkpoints", "ltr_jax.inference"):
    importlib.import_module(name)
  import jax
  import numpy as np
  import train_step as ts
  runner = ts.JaxRunner("resnet_mini", 28, 1, 10, 8, step_data(28, 1, 10, 8))
  runner.run(2)
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(jax.device_get(runner.state.params))), "non-finite"
  print(f"smoke: ok ({jax.default_backend()}: {jax.devices()[0].device_kind})")


def analytic_flops(name: str, size: int, channels: int, classes: int) -> dict:
  """Model FLOPs per training image from the PyTorch twin (see the module docstring)."""
  import torch
  from torch_models import build_torch_model
  model = build_torch_model(name, classes, in_channels=channels).eval()
  macs = {"conv": 0, "linear": 0, "stem": 0}

  def conv_hook(module, inputs, output):
    n = output.numel() * module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
    macs["conv"] += n
    if module is model.conv1:
      macs["stem"] += n

  def linear_hook(module, inputs, output):
    macs["linear"] += output.numel() * module.in_features

  for m in model.modules():
    if isinstance(m, torch.nn.Conv2d):
      m.register_forward_hook(conv_hook)
    elif isinstance(m, torch.nn.Linear):
      m.register_forward_hook(linear_hook)
  with torch.no_grad():
    model(torch.zeros(1, channels, size, size))
  forward = 2 * (macs["conv"] + macs["linear"])
  return {
      "forward_flops_per_image": forward, "train_flops_per_image": 3 * forward - 2 * macs["stem"],
      "forward_gmacs": (macs["conv"] + macs["linear"]) / 1e9,
      "method": "analytic: 2 x multiply-adds of every conv and the linear head (hooks on the PyTorch twin, "
                "batch 1) x 3 (forward, input and weight gradients) less the stem conv's input gradient"
  }


def _timed(runner, job: dict) -> dict:
  """The first call, the rest of the warm-up, then the timing windows of a train_step.py runner."""
  first = runner.run(1)
  runner.run(WARMUP - 1)
  return {"first_call_seconds": first, "window_seconds": [runner.run(job["steps"]) for _ in range(job["windows"])]}


def _jax_job(job: dict) -> dict:
  import jax
  import train_step as ts
  from ltr_jax import parallel
  data = step_data(job["size"], job["channels"], job["classes"], job["batch"])
  t0 = time.perf_counter()
  runner = ts.JaxRunner(job["model"], job["size"], job["channels"], job["classes"], job["batch"], data,
                        dtype=job["dtype"])
  out = {
      "build_seconds": time.perf_counter() - t0,
      **_timed(runner, job), "device": f"{jax.default_backend()}: {jax.devices()[0].device_kind}"
  }
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["peak_device_memory_gb"] = stats["peak_bytes_in_use"] / 2**30
  if job.get("xla_flops"):
    try:
      t1 = time.perf_counter()
      cost = runner.step_fn.lower(runner.state, parallel.global_batch(runner.data, runner.mesh)).cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      out["xla_flops_per_image"] = float(cost["flops"]) / job["batch"]
      out["xla_cost_analysis_seconds"] = time.perf_counter() - t1
    except Exception as e:  # noqa: BLE001
      out["xla_flops_error"] = f"{type(e).__name__}: {e}"
  del runner
  gc.collect()
  return out


def _torch_job(job: dict) -> dict:
  import torch
  import train_step as ts
  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  torch.backends.cudnn.benchmark = True
  if not cuda:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  if job.get("flops_only"):
    return analytic_flops(job["model"], job["size"], job["channels"], job["classes"])
  data = step_data(job["size"], job["channels"], job["classes"], job["batch"])
  config = ts.model_config(job["model"], job["size"], job["batch"])
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  autocast = job["dtype"] == "bfloat16"
  compiled = job["framework"] == "torch_compile"
  runner = ts.TorchRunner(job["model"], job["channels"], job["classes"], tuple(config.data.mean),
                          tuple(config.data.std), data, channels_last=True, device=device,
                          autocast_dtype=torch.bfloat16 if autocast else None, compile=compiled)
  out = {
      "build_seconds": time.perf_counter() - t0,
      **_timed(runner, job), "device": f"cuda: {torch.cuda.get_device_name()}" if cuda else "cpu", "settings": {
          "channels_last": True, "cudnn_benchmark": True, "autocast": "bfloat16" if autocast else None,
          "compile": compiled, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
          "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32
      }
  }
  if cuda:
    out["peak_device_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
  del runner
  gc.collect()
  if cuda:
    torch.cuda.empty_cache()
  return out


def _worker(conn, env: dict, new_session: bool) -> None:
  """A process that runs step jobs sent over `conn` until it gets None."""
  if new_session:
    os.setsid()  # torch.compile's workers die with it (killpg)
  os.environ.update(env)
  while True:
    job = conn.recv()
    if job is None:
      return
    try:
      result = _jax_job(job) if job["framework"] == "jax" else _torch_job(job)
    except BaseException as e:  # noqa: BLE001
      result = {"error": f"{type(e).__name__}: {e}", "traceback": tail(traceback.format_exc(), 2000)}
    conn.send(result)


class StepWorker:
  """A long-lived process of one framework (jax, torch, or torch_compile in its own process group)."""

  def __init__(self, kind: str, env: dict):
    ctx = multiprocessing.get_context("spawn")
    self.kind = kind
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_worker, args=(child, env, kind == "torch_compile"), daemon=True)
    self.proc.start()

  def call(self, job: dict, timeout: float) -> dict | None:
    """The job's result, or None if it took longer than `timeout` (the worker is then killed) or died."""
    self.conn.send(job)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self.conn.poll(1.0):
        try:
          return self.conn.recv()
        except EOFError:
          return None
      if not self.proc.is_alive():
        return {"error": f"worker died (exit code {self.proc.exitcode})"}
    return None

  def close(self, kill: bool = False) -> None:
    if not kill and self.proc.is_alive():
      try:
        self.conn.send(None)
        self.proc.join(10)
      except (OSError, BrokenPipeError):
        pass
    if self.proc.is_alive():
      if self.kind == "torch_compile":
        kill_group(self.proc.pid)
      self.proc.kill()
      self.proc.join(5)


def _order(args) -> list[tuple]:
  """(framework, (name, size, channels, classes), dtype, batch) to run: STEP_ORDER, or `--step-jobs`."""
  if args.step_jobs:  # framework:model:dtype:batch,...
    known = list(FULL_MODELS.values()) + list(TINY_MODELS.values())
    return [(f, next(v
                     for v in known
                     if v[0] == m), d, int(b))
            for f, m, d, b in (spec.split(":") for spec in args.step_jobs.split(","))]
  models = TINY_MODELS if args.tiny else FULL_MODELS
  return [(f, models[m], d, {256: 16, 128: 8}[b] if args.tiny else b) for f, m, d, b in STEP_ORDER]


def run(args, res: Results, budget: float, log_file: str) -> None:
  """Every configuration that fits `budget` seconds, into res's section 'step'."""
  deadline = time.monotonic() + budget
  order = _order(args)
  section: dict = {
      "timing": f"{WARMUP} warm-up steps, then median of {args.windows} windows of {args.steps} steps; "
                "each window ends with a device synchronisation", "peak_flops_bf16": args.peak, "configs": [],
      "skipped": [], "flops": {}, "budget_seconds": budget
  }
  # The JAX worker lives beside the PyTorch one: its pool grows to what it uses instead of taking 75% of the GPU.
  jax_env = {"XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "false")}
  section["jax_worker_env"] = jax_env
  res.set("step", section)
  workers: dict[str, StepWorker] = {}
  spent: dict[tuple, float] = {}  # (framework, model) -> seconds of its last configuration

  def worker(kind: str) -> StepWorker:
    if kind not in workers or not workers[kind].proc.is_alive():
      workers[kind] = StepWorker(kind, jax_env if kind == "jax" else {})
    return workers[kind]

  xla_flops_done: set[str] = set()
  try:
    # Analytic FLOPs first (CPU, a second per model), in the PyTorch worker.
    for name, size, channels, classes in dict.fromkeys(m for _, m, _, _ in order):
      r = worker("torch").call(
          {
              "framework": "torch", "flops_only": True, "model": name, "size": size, "channels": channels,
              "classes": classes
          }, timeout=120)
      section["flops"][name] = r if r is not None else {"error": "timed out"}
    res.write()
    for framework, (name, size, channels, classes), dtype, batch in order:
      left = deadline - time.monotonic()
      if framework == "torch_compile":
        estimate = min(args.compile_budget, left)
        enough = left >= min(args.compile_budget, 20 if args.tiny else 60)
      else:
        estimate = spent.get((framework, name)) or max([v for (f, _), v in spent.items() if f == framework],
                                                       default=FIRST_GUESS[framework] * (0.3 if args.tiny else 1))
        enough = left >= estimate
      if not enough:
        section["skipped"].append({
            "framework": framework, "model": name, "dtype": dtype, "batch": batch,
            "reason": f"time: about {estimate:.0f} s needed, {left:.0f} s of the part left"
        })
        res.write()
        log(f"step: skip {(framework, name, dtype, batch)} (about {estimate:.0f} s needed, {left:.0f} s left)")
        continue
      job = {
          "framework": framework, "model": name, "size": size, "channels": channels, "classes": classes, "dtype": dtype,
          "batch": batch, "steps": args.steps, "windows": args.windows,
          "xla_flops": framework == "jax" and name not in xla_flops_done
      }
      log(f"step: {framework} {name} {dtype} batch {batch} ...")
      t0 = time.monotonic()
      if framework == "torch_compile":
        w = StepWorker("torch_compile", {})
        result = w.call(job, timeout=max(1.0, min(args.compile_budget, left)))
        w.close(kill=True)
      else:
        w = worker(framework)
        result = w.call(job, timeout=max(1.0, min(left, 3 * estimate + 60)))
        if result is None:
          w.close(kill=True)
      seconds = time.monotonic() - t0
      if framework != "torch_compile":
        spent[(framework, name)] = seconds
      entry = {
          "framework": framework, "model": name, "dtype": dtype, "batch": batch, "image_shape": [size, size, channels],
          "classes": classes, "seconds": round(seconds, 1)
      }
      if result is None:
        entry["error"] = (f"torch.compile did not finish within {args.compile_budget:.0f} s (compile + "
                          f"warm-up + timing): skipped"
                          if framework == "torch_compile" else f"timed out after {seconds:.0f} s")
      elif "error" in result:
        entry.update(result)
      else:
        median = statistics.median(result["window_seconds"])
        ips = batch * args.steps / median
        entry.update(result)
        entry.update(images_per_second=ips, step_ms=1e3 * median / args.steps,
                     compile_seconds=result["first_call_seconds"] - median / args.steps)
        flops = section["flops"].get(name, {}).get("train_flops_per_image")
        if flops:
          entry["tflops_per_second"] = flops * ips / 1e12
          entry["fraction_of_bf16_peak"] = flops * ips / args.peak
        if "xla_flops_per_image" in result:
          xla_flops_done.add(name)
      section["configs"].append(entry)
      res.write()
      log("step: " + _line(entry))
  finally:
    for w in workers.values():
      w.close()
  section["table"] = table(section)
  res.write()


def images_per_second(section: dict | None, framework: str, model: str, dtype: str, batch: int) -> float | None:
  """The step's images/s of one configuration in a step section, None if it has none."""
  for e in (section or {}).get("configs", []):
    if (e["framework"], e["model"], e["dtype"], e["batch"]) == (framework, model, dtype, batch):
      return e.get("images_per_second")
  return None


def _line(e: dict) -> str:
  head = f"{e['framework']:13s} {e['model']:16s} {e['dtype']:8s} {e['batch']:4d}"
  if "images_per_second" not in e:
    return f"{head} {e.get('error', '?')[:150]}"
  frac = f" {100 * e['fraction_of_bf16_peak']:5.1f}% of peak" if "fraction_of_bf16_peak" in e else ""
  return (f"{head} {e['images_per_second']:9.1f} img/s {e['step_ms']:8.1f} ms/step{frac} "
          f"(first call {e['first_call_seconds']:.1f} s)")


def table(section: dict) -> list[str]:
  """Markdown rows: model, dtype, batch, JAX / torch eager / torch.compile img/s and % of peak, JAX/torch."""
  rows = [
      "| model | dtype | batch | JAX img/s (% peak) | PyTorch eager img/s (% peak) | torch.compile img/s "
      "(% peak) | JAX / eager | JAX compile s |", "|---|---|---:|---:|---:|---:|---:|---:|"
  ]
  cells: dict = {}
  for e in section["configs"]:
    cells.setdefault((e["model"], e["dtype"], e["batch"]), {})[e["framework"]] = e

  def cell(e):
    if e is None:
      return "—"
    if "images_per_second" not in e:
      return "failed" if "error" in e else "—"
    frac = f" ({100 * e['fraction_of_bf16_peak']:.1f}%)" if "fraction_of_bf16_peak" in e else ""
    return f"{e['images_per_second']:.0f}{frac}"

  for (model, dtype, batch), c in cells.items():
    j, t, tc = c.get("jax"), c.get("torch"), c.get("torch_compile")
    ratio = (f"{j['images_per_second'] / t['images_per_second']:.2f}"
             if j and t and "images_per_second" in j and "images_per_second" in t else "—")
    comp = f"{j['compile_seconds']:.1f}" if j and "compile_seconds" in j else "—"
    rows.append(f"| {model} | {dtype} | {batch} | {cell(j)} | {cell(t)} | {cell(tc)} | {ratio} | {comp} |")
  return rows


def summary(section: dict) -> list[str]:
  """The table, then what was skipped or failed."""
  lines = ["step (images/s, % of bf16 peak):", *(section.get("table") or table(section))]
  lines += [
      f"  skipped: {s['framework']} {s['model']} {s['dtype']} {s['batch']}: {s['reason']}"
      for s in section.get("skipped", [])
  ]
  lines += [
      f"  error: {e['framework']} {e['model']} {e['dtype']} {e['batch']}: {str(e['error'])[:200]}"
      for e in section.get("configs", [])
      if "error" in e
  ]
  return lines
