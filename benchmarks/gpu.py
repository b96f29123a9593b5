"""The GPU run: ltr_jax against PyTorch on one GPU, every figure into one JSON. `benchmarks/gpu.sh` is the
one command that installs what the device lacks and calls `python benchmarks/gpu.py all`; run it with `--tiny` on a
CPU to check the whole run in a few minutes.

Parts, in order of value, each with a time budget (`--budget` seconds in all; time a part leaves unused goes to
the next), the JSON rewritten after every part and every timed configuration (a part that fails or runs out of
time leaves what it had):

info       machine, package versions, `nvidia-smi`, JAX's and PyTorch's devices and precision settings, and the
           bf16 matrix rate measured on the card (an 8192^3 product through PyTorch, random data).
step       the training step at 224x224, 1000 classes: ResNet-50 and ResNeXt-50 32x4d, bfloat16 and float32,
           batch 256 and 128. JAX: ltr_jax's jitted step (`train.make_train_step` through
           `benchmarks/train_step.py`'s JaxRunner, config key model.dtype). PyTorch: the twin
           (`benchmarks/torch_models.py`) through train_step.py's TorchRunner, channels_last, cudnn.benchmark,
           AMP (`torch.autocast(bfloat16)`) for bfloat16, eager; and `torch.compile` for ResNet-50 and
           ResNeXt-50 in bfloat16 at batch 256, each in a fresh process killed if it runs past
           `--compile-budget` (recorded as such). Both sides: SGD momentum 0.9, weight decay 5e-4, mean
           cross-entropy, a fixed uint8 NHWC batch moved host -> device every step. Timing: 3 warm-up steps, then
           `--windows` windows of `--steps` steps (each window ends with a device synchronisation), images/s =
           batch x steps / median window. The configurations run in a fixed order of value (STEP_ORDER); one
           that its estimated time no longer fits is skipped and recorded as skipped. JAX and PyTorch each run in
           one long-lived process (side by side on the GPU, one working at a time; JAX's with
           XLA_PYTHON_CLIENT_PREALLOCATE=false so that its memory pool grows to what it uses).
           FLOPs: analytic model FLOPs per training image: 2 x the multiply-adds of every convolution and of the
           linear head in a forward pass (counted with hooks on the PyTorch twin at batch 1), times 3 (forward,
           input gradients, weight gradients), less the stem convolution's input gradient (no framework computes
           it); BatchNorm, ReLU, pooling, loss and optimizer (elementwise, < 1%) are left out. Beside it, for one
           configuration per model, XLA's cost analysis of the lowered (unoptimised) JAX step / batch
           (`jit(...).lower(...).cost_analysis()['flops']`, elementwise work included). The fraction of peak is
           analytic FLOPs/image x images/s / 790e12 (the H200's / H100's dense bf16 rate as measured on these
           machines; `--peak`), for float32 runs too (they use TF32 tensor cores: see info's precision settings).
e2e        the whole stage-1 loop (`train.train_and_evaluate`, config configs/imagenet_lt_rx50.py with model
           `--e2e-model` in bfloat16, 1000 classes, data.kind 'list', no validation split) for `--e2e-steps` steps
           of batch 256 on 500x375 JPEGs written here (benchmarks/pipeline.py's photo-like images, quality 90,
           `--e2e-images` distinct files listed over and over), with data.num_workers in `--e2e-workers`, each
           count in a fresh process: images/s of the loop from its metrics.jsonl ('train/images_per_second' per
           log window, the first two windows, compilation and worker start-up, left out) against the step
           alone (part step, same model, dtype and batch) and against the input pipeline alone
           (`pipeline.train_batches` with the same transform, workers and batch, no GPU:
           benchmarks/pipeline.py's time_pipeline). loop / step < 1 with pipeline-alone < step means the
           input starves the GPU.
decouple   benchmarks/decouple.py at iNaturalist scale (`--scale 1`, one repeat) with `--device gpu`: JAX on the
           GPU against PyTorch on CUDA, in four groups (one tau and the tau sweep, NCM, cRT + LWS, argmax +
           matmul), each its own decouple.py process, stopped when the part's time is up.
tests      the quickstart end to end (`python -m ltr_jax.main --config=configs/quickstart.py`) and the test
           suite (`pytest`, no -x, pytest-xdist's -n when installed, a per-test --timeout when pytest-timeout is
           installed), side by side, with XLA_PYTHON_CLIENT_PREALLOCATE=false so that they share the GPU; the
           quickstart's report and every failing test with its first error line go into the JSON.

`--tiny` runs the same code at CPU sizes: resnet32 (32x32) and resnet_mini (28x28x1), batch 8 / 16, 2 steps x 2
windows; 32 JPEGs, batch 8, resnet32 at 32x32, 6 steps; decouple.py at scale 0.01 on the CPU; the quickstart
with 1 epoch per stage; one test file.

Other sub-commands are the parts' own processes (`info`, `smoke`, `e2e-data`, `e2e-run`); `--help` on each.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
  sys.path.insert(0, HERE)
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

PEAK_BF16 = 790e12  # dense bf16 FLOP/s of the H200 (and H100) as measured on these machines (KINDS.md)
OUT = os.environ.get("OUT", "")  # the device tool's folder of files that come back
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax",
            "optax", "orbax-checkpoint", "chex", "numpy", "scipy", "ml-dtypes", "grain", "array-record",
            "tensorflow-datasets", "ml-collections", "tensorboardX", "pillow", "simplejpeg", "torch", "torchvision",
            "triton", "pytest", "pytest-xdist", "pytest-timeout", "nbclient", "ipykernel", "protobuf", "etils")

# The step part's configurations, in order of value: (framework, model, dtype, batch). Full size: model A is
# resnet50 and B resnext50_32x4d at 224x224x3, 1000 classes; --tiny: resnet32 (32x32x3, 100 classes) and
# resnet_mini (28x28x1, 10 classes) at batch 16 for 256 and 8 for 128.
STEP_ORDER = (
    ("torch", "A", "bfloat16", 256), ("jax", "A", "bfloat16", 256),
    ("torch", "B", "bfloat16", 256), ("jax", "B", "bfloat16", 256),
    ("torch_compile", "A", "bfloat16", 256),
    ("torch", "A", "float32", 256), ("jax", "A", "float32", 256),
    ("torch", "B", "float32", 256), ("jax", "B", "float32", 256),
    ("torch", "A", "bfloat16", 128), ("jax", "A", "bfloat16", 128),
    ("torch", "B", "bfloat16", 128), ("jax", "B", "bfloat16", 128),
    ("torch_compile", "B", "bfloat16", 256),
    ("torch", "A", "float32", 128), ("jax", "A", "float32", 128),
    ("torch", "B", "float32", 128), ("jax", "B", "float32", 128),
)
FULL_MODELS = {"A": ("resnet50", 224, 3, 1000), "B": ("resnext50_32x4d", 224, 3, 1000)}
TINY_MODELS = {"A": ("resnet32", 32, 3, 100), "B": ("resnet_mini", 28, 1, 10)}
# First guesses of a configuration's seconds (worker start, build, compile, timing); replaced by what the
# first configuration of each framework and model took.
FIRST_GUESS = {"jax": 75.0, "torch": 25.0}


def log(message: str) -> None:
  line = f"[gpu.py {time.strftime('%H:%M:%S')}] {message}"
  print(line, flush=True)


# ------------------------------------------------------------------------------------------------ results file


class Results:
  """The JSON of the run, rewritten (atomically) after every change, here and under $OUT."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self.data: dict = {}

  def set(self, key: str, value) -> None:
    self.data[key] = value
    self.write()

  def write(self) -> None:
    targets = [self.path] + ([os.path.join(OUT, os.path.basename(self.path))] if OUT else [])
    for target in targets:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      tmp = target + ".tmp"
      with open(tmp, "w") as f:
        json.dump(self.data, f, indent=2, default=str)
      os.replace(tmp, target)


def _tail(text: str, n: int = 3000) -> str:
  return text[-n:]


def run_command(cmd: list[str], timeout: float, log_file: str, env: dict | None = None, cwd: str = ROOT,
                interrupt_first: bool = False) -> dict:
  """Runs `cmd` in its own process group, its output appended to `log_file`; past `timeout` seconds the whole
  group is stopped (SIGINT first with interrupt_first, so that pytest writes its report; then SIGTERM, SIGKILL).
  Returns rc, seconds, timed_out and the output's tail."""
  start = time.monotonic()
  with open(log_file, "a") as out:
    out.write(f"\n===== {' '.join(cmd)} (limit {timeout:.0f} s)\n")
    out.flush()
    begin = out.tell()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    timed_out = False
    try:
      proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
      timed_out = True
      for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 5), (signal.SIGKILL, 5)) if interrupt_first else \
          ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
          os.killpg(proc.pid, sig)
        except ProcessLookupError:
          break
        try:
          proc.wait(timeout=grace)
          break
        except subprocess.TimeoutExpired:
          continue
    _kill_group(proc.pid)  # what the command left behind (grain workers, compile workers)
  with open(log_file, errors="replace") as f:
    f.seek(begin)
    text = f.read()
  return {"rc": proc.returncode, "seconds": round(time.monotonic() - start, 2), "timed_out": timed_out,
          "output_tail": _tail(text)}


def _kill_group(pgid: int) -> None:
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def _python() -> list[str]:
  return [sys.executable]


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


# ------------------------------------------------------------------------------------------------ info


def cmd_info(args) -> None:
  """Machine, versions, nvidia-smi, devices, precision settings, the measured bf16 matrix rate."""
  import importlib.metadata as md
  import platform
  from common import machine
  out: dict = {"machine": machine(), "python": platform.python_version(), "executable": sys.executable,
               "cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)), "versions": {},
               "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE",
                                                      "XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_COMPILATION_CACHE_DIR",
                                                      "PYTHONPATH", "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")}}
  for name in PACKAGES:
    try:
      out["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
      pass
  try:
    import ltr_jax
    out["ltr_jax_path"] = os.path.dirname(ltr_jax.__file__)
  except Exception as e:  # noqa: BLE001
    out["ltr_jax_path"] = f"not importable: {e}"
  smi = shutil.which("nvidia-smi")
  if smi:
    for key, cmd in (("nvidia_smi", [smi]),
                     ("nvidia_smi_query", [smi, "--query-gpu=name,driver_version,memory.total,clocks.sm,"
                                           "clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu,"
                                           "utilization.gpu,compute_mode,mig.mode.current", "--format=csv"])):
      try:
        out[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
      except (OSError, subprocess.TimeoutExpired) as e:
        out[key] = f"failed: {e}"
  try:
    import torch
    t = {"version": torch.__version__, "cuda_available": torch.cuda.is_available(),
         "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
         else None, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
         "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
         "float32_matmul_precision": torch.get_float32_matmul_precision(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
      p = torch.cuda.get_device_properties(0)
      t.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
               multiprocessors=p.multi_processor_count, memory_gb=p.total_memory / 2**30)
      t["bf16_matmul_tflops"] = _torch_matmul_rate(torch)
    out["torch"] = t
  except Exception as e:  # noqa: BLE001
    out["torch"] = {"error": f"{type(e).__name__}: {e}"}
  try:
    import jax
    devices = jax.devices()
    j = {"version": jax.__version__, "backend": jax.default_backend(), "devices": [str(d) for d in devices],
         "device_kind": devices[0].device_kind,
         "default_matmul_precision": str(getattr(jax.config, "jax_default_matmul_precision", "?")),
         "compilation_cache_dir": str(getattr(jax.config, "jax_compilation_cache_dir", "?"))}
    stats = devices[0].memory_stats() or {}
    if "bytes_limit" in stats:
      j["memory_limit_gb"] = stats["bytes_limit"] / 2**30
    out["jax"] = j
  except Exception as e:  # noqa: BLE001
    out["jax"] = {"error": f"{type(e).__name__}: {e}"}
  with open(args.json, "w") as f:
    json.dump(out, f, indent=2, default=str)


def _torch_matmul_rate(torch) -> float:
  """TFLOP/s of an 8192^3 bf16 product on random data (mean of 10 after 3 warm-ups), timed with CUDA events."""
  n = 8192
  a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
  b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
  for _ in range(3):
    a @ b
  start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
  start.record()
  for _ in range(10):
    a @ b
  end.record()
  torch.cuda.synchronize()
  return 2 * n ** 3 * 10 / (start.elapsed_time(end) / 1e3) / 1e12


# ------------------------------------------------------------------------------------------------ smoke


def cmd_smoke(args) -> None:
  """Imports what the parts use and runs 2 steps of ltr_jax's jitted step (the quickstart model, batch 8) on the
  default backend, as benchmarks/train_step.py's JaxRunner builds it, without PyTorch: gpu.sh installs the
  fallback flax / optax / orbax if this fails in them with the image's own."""
  import importlib
  for name in ("grain", "ml_collections", "tensorboardX", "ltr_jax.train", "ltr_jax.data.pipeline",
               "ltr_jax.data.sources", "ltr_jax.checkpoints", "ltr_jax.evaluate"):
    importlib.import_module(name)
  import jax
  import numpy as np
  from configs import quickstart
  from ltr_jax import losses, masks, models, parallel, train
  config = quickstart.get_config()
  mesh = parallel.data_mesh()
  model = models.from_config(config.model, 10)
  variables = train.initial_variables(model, config, (28, 28, 1), mesh)
  tx = train.make_optimizer(config.train, 100, masks.lr_groups(variables["params"], (), ()))
  state = train.new_state(variables, tx, mesh)
  step = train.make_train_step(model, tx, losses.cross_entropy, config.data, mesh)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, (8,), dtype=np.int32)}
  for _ in range(2):
    state, metrics = step(state, parallel.global_batch(batch, mesh))
  loss = float(jax.device_get(metrics["loss"]))
  assert np.isfinite(loss), loss
  print(f"smoke: ok ({jax.default_backend()}: {jax.devices()[0].device_kind}; loss {loss:.3f})")


# ------------------------------------------------------------------------------------------------ step part


def _step_data(size: int, channels: int, classes: int, batch: int) -> dict:
  import numpy as np
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8),
          "label": rng.integers(0, classes, (batch,), dtype=np.int32)}


def analytic_flops(name: str, size: int, channels: int, classes: int) -> dict:
  """Model FLOPs per training image from the PyTorch twin (see the module docstring)."""
  import torch
  from torch_models import build_torch_model
  model = build_torch_model(name, classes, in_channels=channels).eval()
  macs = {"conv": 0, "linear": 0, "stem": 0}

  def conv_hook(module, inputs, output):
    k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
    n = output.numel() * k
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
  return {"forward_flops_per_image": forward, "train_flops_per_image": 3 * forward - 2 * macs["stem"],
          "forward_gmacs": (macs["conv"] + macs["linear"]) / 1e9,
          "method": "analytic: 2 x multiply-adds of every conv and the linear head (hooks on the PyTorch twin, "
                    "batch 1) x 3 (forward, input and weight gradients) less the stem conv's input gradient"}


def _jax_job(job: dict) -> dict:
  import gc
  import jax
  import train_step as ts
  from ltr_jax import parallel
  data = _step_data(job["size"], job["channels"], job["classes"], job["batch"])
  t0 = time.perf_counter()
  runner = ts.JaxRunner(job["model"], job["size"], job["channels"], job["classes"], job["batch"], data,
                        dtype=job["dtype"])
  build = time.perf_counter() - t0
  first = runner.run(1)
  runner.run(ts.WARMUP - 1)
  windows = [runner.run(job["steps"]) for _ in range(job["windows"])]
  out = {"build_seconds": build, "first_call_seconds": first, "window_seconds": windows,
         "device": f"{jax.default_backend()}: {jax.devices()[0].device_kind}"}
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
  import gc
  import torch
  import train_step as ts
  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  torch.backends.cudnn.benchmark = True
  if not cuda:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  if job.get("flops_only"):
    return analytic_flops(job["model"], job["size"], job["channels"], job["classes"])
  data = _step_data(job["size"], job["channels"], job["classes"], job["batch"])
  config = ts.model_config(job["model"], job["size"], job["batch"])
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  t0 = time.perf_counter()
  runner = ts.TorchRunner(job["model"], job["channels"], job["classes"], tuple(config.data.mean),
                          tuple(config.data.std), data, channels_last=True, device=device,
                          autocast_dtype=torch.bfloat16 if job["dtype"] == "bfloat16" else None,
                          compile=job["framework"] == "torch_compile")
  build = time.perf_counter() - t0
  first = runner.run(1)
  runner.run(ts.WARMUP - 1)
  windows = [runner.run(job["steps"]) for _ in range(job["windows"])]
  out = {"build_seconds": build, "first_call_seconds": first, "window_seconds": windows,
         "device": f"cuda: {torch.cuda.get_device_name()}" if cuda else "cpu",
         "settings": {"channels_last": True, "cudnn_benchmark": True,
                      "autocast": "bfloat16" if job["dtype"] == "bfloat16" else None,
                      "compile": job["framework"] == "torch_compile",
                      "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                      "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}}
  if cuda:
    out["peak_device_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
  del runner
  gc.collect()
  if cuda:
    torch.cuda.empty_cache()
  return out


def _step_worker(conn, env: dict, new_session: bool) -> None:
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
      result = {"error": f"{type(e).__name__}: {e}", "traceback": _tail(traceback.format_exc(), 2000)}
    conn.send(result)


class StepWorker:
  def __init__(self, kind: str, env: dict):
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    self.kind = kind
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_step_worker, args=(child, env, kind == "torch_compile"), daemon=True)
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
        _kill_group(self.proc.pid)
      self.proc.kill()
      self.proc.join(5)


def part_step(args, res: Results, budget: float) -> None:
  deadline = time.monotonic() + budget
  if args.tiny:
    args.compile_budget = min(args.compile_budget, 60)
  models = TINY_MODELS if args.tiny else FULL_MODELS
  batch_of = (lambda b: {256: 16, 128: 8}[b]) if args.tiny else (lambda b: b)
  order = [(f, models[m], d, batch_of(b)) for f, m, d, b in STEP_ORDER]
  if args.step_jobs:  # framework:model:dtype:batch,...
    order = []
    for spec in args.step_jobs.split(","):
      f, m, d, b = spec.split(":")
      order.append((f, next(v for v in list(FULL_MODELS.values()) + list(TINY_MODELS.values()) if v[0] == m),
                    d, int(b)))
  section: dict = {"timing": f"{3} warm-up steps, then median of {args.windows} windows of {args.steps} steps; "
                             "each window ends with a device synchronisation",
                   "peak_flops_bf16": args.peak, "configs": [], "skipped": [], "flops": {}, "budget_seconds": budget}
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

  # Analytic FLOPs first (CPU, a second per model), in the PyTorch worker.
  for name, size, channels, classes in dict.fromkeys(m for _, m, _, _ in order):
    r = worker("torch").call({"framework": "torch", "flops_only": True, "model": name, "size": size,
                              "channels": channels, "classes": classes}, timeout=120)
    section["flops"][name] = r if r is not None else {"error": "timed out"}
  res.write()

  xla_flops_done: set[str] = set()
  try:
    for framework, (name, size, channels, classes), dtype, batch in order:
      left = deadline - time.monotonic()
      key = (framework, name, dtype, batch)
      if framework == "torch_compile":
        estimate = min(args.compile_budget, left)
        enough = left >= min(args.compile_budget, 60 if not args.tiny else 20)
      else:
        estimate = spent.get((framework, name)) or max([v for (f, _), v in spent.items() if f == framework],
                                                       default=FIRST_GUESS[framework] * (0.3 if args.tiny else 1))
        enough = left >= estimate
      if not enough:
        section["skipped"].append({"framework": framework, "model": name, "dtype": dtype, "batch": batch,
                                   "reason": f"time: about {estimate:.0f} s needed, {left:.0f} s of the part left"})
        res.write()
        log(f"step: skip {key} (about {estimate:.0f} s needed, {left:.0f} s left)")
        continue
      job = {"framework": framework, "model": name, "size": size, "channels": channels, "classes": classes,
             "dtype": dtype, "batch": batch, "steps": args.steps, "windows": args.windows,
             "xla_flops": framework == "jax" and name not in xla_flops_done}
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
      entry = {"framework": framework, "model": name, "dtype": dtype, "batch": batch,
               "image_shape": [size, size, channels], "classes": classes, "seconds": round(seconds, 1)}
      if result is None:
        entry["error"] = (f"torch.compile did not finish within {args.compile_budget:.0f} s (compile + "
                          f"warm-up + timing): skipped" if framework == "torch_compile" else
                          f"timed out after {seconds:.0f} s")
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
      log("step: " + _step_line(entry))
  finally:
    for w in workers.values():
      w.close()
  section["table"] = step_table(section)
  res.write()


def _step_line(e: dict) -> str:
  head = f"{e['framework']:13s} {e['model']:16s} {e['dtype']:8s} {e['batch']:4d}"
  if "images_per_second" not in e:
    return f"{head} {e.get('error', '?')[:150]}"
  frac = f" {100 * e['fraction_of_bf16_peak']:5.1f}% of peak" if "fraction_of_bf16_peak" in e else ""
  return (f"{head} {e['images_per_second']:9.1f} img/s {e['step_ms']:8.1f} ms/step{frac} "
          f"(first call {e['first_call_seconds']:.1f} s)")


def step_table(section: dict) -> list[str]:
  """Markdown rows: model, dtype, batch, JAX / torch eager / torch.compile img/s and % of peak, JAX/torch."""
  rows = ["| model | dtype | batch | JAX img/s (% peak) | PyTorch eager img/s (% peak) | torch.compile img/s "
          "(% peak) | JAX / eager | JAX compile s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
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


# ------------------------------------------------------------------------------------------------ e2e part


def _write_part(args_tuple):
  import pipeline as pipeline_bench
  folder, n, width, height, seed = args_tuple
  return pipeline_bench.write_jpegs(folder, n, 10, width, height, seed=seed)


def cmd_e2e_data(args) -> None:
  """Writes `--images` distinct JPEGs with `--procs` processes and the list files: train.txt of `--lines`
  lines (the JPEGs over and over, line j labelled j % classes) and test.txt (16 lines)."""
  import multiprocessing
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
  info = {"distinct_images": len(files), "lines": args.lines, "width": width, "height": height,
          "mean_kb": kb, "classes": args.classes, "write_seconds": time.perf_counter() - t0, "processes": procs}
  with open(os.path.join(args.dir, "data.json"), "w") as f:
    json.dump(info, f)
  print(json.dumps(info))


def cmd_e2e_run(args) -> None:
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
  config.data.update(dict(list_dir=args.dir, image_root=args.dir, train_list="train.txt", val_list="",
                          test_list="test.txt", num_classes=args.classes, image_size=args.image_size,
                          num_workers=args.workers, preflight=False))
  steps_per_epoch = args.lines // args.batch
  config.train.update(dict(batch_size=args.batch, epochs=1, warmup_epochs=0.0, log_every_steps=args.log_every,
                           eval_every_epochs=1, checkpoint_every_epochs=1))

  # The input pipeline alone (no JAX work): the loop's source, transform, batch and workers.
  source = sources.ListFileSource(os.path.join(args.dir, "train.txt"), args.dir, args.classes)
  transform = transforms.train_transform(config.data.train_transform, config.data.image_size, config.data.color_jitter)
  if args.pipeline_batches:
    ips, first, share = pipeline_bench.time_pipeline(source, transform, args.batch, args.pipeline_batches,
                                                     args.workers)
    out["pipeline_alone"] = {"images_per_second": ips, "first_batch_seconds": first,
                             "main_process_core_share": share, "timed_batches": args.pipeline_batches,
                             "transform": f"{type(transform).__name__} ({config.data.train_transform}, "
                                          f"{config.data.image_size}, jitter {config.data.color_jitter})"}
    save()
    print(f"pipeline alone, {args.workers} workers: {ips:.0f} img/s", flush=True)

  import jax
  from ltr_jax import train
  workdir = os.path.join(args.dir, f"run_w{args.workers}")
  shutil.rmtree(workdir, ignore_errors=True)
  out.update(model=args.model, dtype=args.dtype, batch=args.batch, steps=steps_per_epoch,
             image_size=args.image_size, log_every_steps=args.log_every,
             device=f"{jax.default_backend()}: {jax.devices()[0].device_kind}",
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
  out: dict = {"windows": [{"step": s, "images_per_second": ips, "seconds": t}
                           for (s, ips), t in zip(windows, seconds)], "skipped_windows": skip}
  if len(windows) > skip:
    out["images_per_second"] = sum(images[skip:]) / sum(seconds[skip:])
    out["first_windows_seconds"] = sum(seconds[:skip])
  return out


def part_e2e(args, res: Results, budget: float, log_file: str, step_section: dict | None) -> None:
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
  section: dict = {"model": model, "dtype": "bfloat16", "batch": batch, "steps": steps, "image_size": image_size,
                   "classes": classes, "runs": [], "skipped": [], "budget_seconds": budget}
  res.set("e2e", section)
  folder = tempfile.mkdtemp(prefix="ltr_gpu_e2e_")
  try:
    r = run_command(_python() + [os.path.abspath(__file__), "e2e-data", "--dir", folder, "--images", str(images),
                                 "--lines", str(batch * steps), "--classes", str(classes),
                                 "--procs", str(len(os.sched_getaffinity(0)))],
                    timeout=max(10, min(120, deadline - time.monotonic())), log_file=log_file)
    section["data"] = _read_json(os.path.join(folder, "data.json")) or {"error": r}
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
      env = dict(os.environ, TQDM_DISABLE="1")
      log(f"e2e: {w} workers ...")
      r = run_command(_python() + [os.path.abspath(__file__), "e2e-run", "--dir", folder, "--workers", str(w),
                                   "--model", model, "--dtype", "bfloat16", "--batch", str(batch),
                                   "--lines", str(batch * steps), "--classes", str(classes),
                                   "--image-size", str(image_size), "--log-every", str(log_every),
                                   "--pipeline-batches", str(4 if tiny else 30), "--json", out_json],
                      timeout=max(5, left), log_file=log_file, env=env)
      run = _read_json(out_json) or {"workers": w}
      run.update(process={k: v for k, v in r.items() if k != "output_tail"})
      if r["rc"] != 0:
        run["error"] = "timed out" if r["timed_out"] else f"exit {r['rc']}"
        run["output_tail"] = r["output_tail"][-1500:]
        if "images_per_second" not in run:  # what the loop logged before it was stopped
          run.update(loop_windows(os.path.join(folder, f"run_w{w}"), batch), partial=True)
      # Later counts reuse the compiled step (persistent cache): about the loop's own time plus start-up.
      estimate = r["seconds"] * (0.7 if estimate is None else 1.0)
      step = _step_for(step_section, model, "bfloat16", batch)
      if step and "images_per_second" in run:
        run["step_alone_images_per_second"] = step
        run["loop_over_step"] = run["images_per_second"] / step
      if "images_per_second" in run and "pipeline_alone" in run:
        run["loop_over_pipeline_alone"] = run["images_per_second"] / run["pipeline_alone"]["images_per_second"]
      section["runs"].append(run)
      res.write()
      log("e2e: " + _e2e_line(run))
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def _step_for(step_section: dict | None, model: str, dtype: str, batch: int) -> float | None:
  for e in (step_section or {}).get("configs", []):
    if (e["framework"], e["model"], e["dtype"], e["batch"]) == ("jax", model, dtype, batch) and \
        "images_per_second" in e:
      return e["images_per_second"]
  return None


def _e2e_line(run: dict) -> str:
  parts = [f"{run.get('workers')} workers:"]
  if "images_per_second" in run:
    parts.append(f"loop {run['images_per_second']:.0f} img/s")
  if "pipeline_alone" in run:
    parts.append(f"pipeline alone {run['pipeline_alone']['images_per_second']:.0f} img/s")
  if "step_alone_images_per_second" in run:
    parts.append(f"step alone {run['step_alone_images_per_second']:.0f} img/s (loop/step "
                 f"{run['loop_over_step']:.2f})")
  if "error" in run:
    parts.append(f"error: {run['error']}")
  return " ".join(parts)


# ------------------------------------------------------------------------------------------------ decouple part


def part_decouple(args, res: Results, budget: float, log_file: str, gpu: bool) -> None:
  deadline = time.monotonic() + budget
  scale = 0.01 if args.tiny else 1.0
  # iNaturalist-scale predictions first, then NCM (3.6 GB of features to make), cRT and LWS (ImageNet-LT
  # scale), and the one-call micro-benchmarks last.
  groups = ("tau_one,tau_sweep", "ncm", "crt,lws", "argmax,matmul")
  section: dict = {"scale": scale, "device": "gpu" if gpu else "cpu", "repeats": 1, "groups": {},
                   "budget_seconds": budget}
  res.set("decouple", section)
  folder = tempfile.mkdtemp(prefix="ltr_gpu_decouple_")
  try:
    for k, group in enumerate(groups):
      left = deadline - time.monotonic()
      if left < 10:
        section["groups"][group] = {"skipped": f"time: {left:.0f} s left"}
        res.write()
        continue
      # Each group may take what is left of the part: the earlier ones are the more valuable.
      out_json = os.path.join(folder, f"group{k}.json")
      log(f"decouple: {group} ...")
      r = run_command(_python() + [os.path.join(HERE, "decouple.py"), "--json", out_json, "--scale", str(scale),
                                   "--repeats", "1", "--only", group, "--device", "gpu" if gpu else "cpu"],
                      timeout=left, log_file=log_file, cwd=HERE)
      got = _read_json(out_json)
      entry = got if got is not None else {}
      entry["process"] = {k2: v for k2, v in r.items() if k2 != "output_tail"}
      if r["rc"] != 0:
        entry["error"] = "timed out" if r["timed_out"] else f"exit {r['rc']}"
        entry["output_tail"] = r["output_tail"][-1500:]
      section["groups"][group] = entry
      res.write()
      if got:
        s = got["seconds"]
        log("decouple: " + ", ".join(f"{c} jax {s['jax'][c]:.3f} s torch {s['torch'][c]:.3f} s"
                                     for c in group.split(",")))
      else:
        log(f"decouple: {group} {entry.get('error')}")
  finally:
    shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ tests part


def _one_epoch_overrides() -> list[str]:
  """--config flags setting train.epochs and every stage2.<...>.epochs of configs/quickstart.py to 1."""
  flags = ["--config.train.epochs=1"]
  try:
    import ml_collections
    from configs import quickstart

    def walk(node, prefix):
      for key, value in node.items():
        if isinstance(value, ml_collections.ConfigDict):
          walk(value, f"{prefix}{key}.")
        elif key == "epochs":
          flags.append(f"--config.{prefix}epochs=1")
    walk(quickstart.get_config().stage2, "stage2.")
  except Exception as e:  # noqa: BLE001
    log(f"tests: quickstart config not read ({e}): only train.epochs=1")
  return flags


def _junit_failures(path: str) -> tuple[dict, list]:
  import xml.etree.ElementTree as ET
  tree = ET.parse(path)
  counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
  failures = []
  for suite in tree.iter("testsuite"):
    for k in counts:
      counts[k] += int(suite.get(k, 0))
  for case in tree.iter("testcase"):
    for tag in ("failure", "error"):
      for el in case.findall(tag):
        lines = (el.text or "").strip().splitlines()
        message = (el.get("message") or "").strip() or (lines[-1] if lines else "")
        failures.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": tag,
                         "message": message[:600], "detail_tail": (el.text or "")[-1500:]})
  return counts, failures


def _pytest_summary(text: str) -> dict:
  lines = text.strip().splitlines()
  summary = next((l for l in reversed(lines) if re.search(r"\d+ (passed|failed|error)", l)), "")
  failed = [l for l in lines if l.startswith(("FAILED ", "ERROR "))]
  return {"summary_line": summary.strip("= "), "failed_lines": failed[:200]}


def part_tests(args, res: Results, budget: float, log_file: str) -> None:
  """The quickstart (in the background) and the test suite, side by side, sharing the GPU."""
  import importlib.util
  deadline = time.monotonic() + budget
  section: dict = {"budget_seconds": budget}
  res.set("tests", section)
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  env.pop("XLA_PYTHON_CLIENT_MEM_FRACTION", None)
  work = tempfile.mkdtemp(prefix="ltr_gpu_tests_")

  # The quickstart, in the background.
  qs_workdir = os.path.join(work, "quickstart")
  qs_cmd = _python() + ["-m", "ltr_jax.main", "--config=configs/quickstart.py", f"--workdir={qs_workdir}"]
  carried = os.path.join(HERE, "gpu_wheels", "data", "fashion-mnist")
  if os.path.exists(os.path.join(carried, "train-images-idx3-ubyte.gz")):
    qs_cmd.append(f"--config.data.data_dir={carried}")
  if args.tiny:
    qs_cmd += _one_epoch_overrides()
  qs_log = os.path.join(work, "quickstart.log")
  qs_result: dict = {}
  qs_env = dict(env, TQDM_DISABLE="1")
  qs_thread = threading.Thread(target=lambda: qs_result.update(run_command(
      qs_cmd, timeout=budget, log_file=qs_log, env=qs_env)), daemon=True)
  if not args.no_quickstart:
    log("tests: quickstart started in the background")
    qs_thread.start()

  # The test suite.
  pytest_log = os.path.join(os.path.dirname(os.path.abspath(log_file)), "pytest_log.txt")
  junit = os.path.join(work, "junit.xml")
  cmd = _python() + ["-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                     f"--junitxml={junit}", "--durations=25"]
  plugins = {"xdist": importlib.util.find_spec("xdist") is not None,
             "timeout": importlib.util.find_spec("pytest_timeout") is not None}
  if plugins["timeout"]:
    cmd.append(f"--timeout={args.test_timeout}")
  if plugins["xdist"] and args.test_workers > 1:
    cmd += ["-n", str(args.test_workers), "--dist", "loadfile"]
  cmd += (args.tests.split() if args.tests else (["tests/test_losses.py"] if args.tiny else []))
  section["pytest_command"] = " ".join(cmd[1:])
  section["plugins"] = plugins
  res.write()
  log(f"tests: {section['pytest_command']}")
  open(pytest_log, "w").close()
  r = run_command(cmd, timeout=max(5, deadline - time.monotonic() - 5), log_file=pytest_log, env=env,
                  interrupt_first=True)
  section["pytest"] = {k: v for k, v in r.items() if k != "output_tail"}
  with open(pytest_log, errors="replace") as f:
    text = f.read()
  section["pytest"].update(_pytest_summary(text))
  if os.path.exists(junit):
    try:
      counts, failures = _junit_failures(junit)
      section["pytest"].update(counts=counts, failures=failures)
    except Exception as e:  # noqa: BLE001
      section["pytest"]["junit_error"] = str(e)
  res.write()
  log(f"tests: {section['pytest'].get('summary_line') or r}")

  if not args.no_quickstart:
    qs_thread.join(max(1, deadline - time.monotonic()))
    if qs_thread.is_alive():  # run_command stops it at its own limit; wait for that
      qs_thread.join(40)
    q: dict = {k: v for k, v in qs_result.items() if k != "output_tail"}
    q["command"] = " ".join(qs_cmd[1:])
    results_md = os.path.join(qs_workdir, "results.md")
    if os.path.exists(results_md):
      with open(results_md) as f:
        q["results_md"] = f.read()
      if OUT:
        shutil.copy(results_md, os.path.join(OUT, "quickstart_results.md"))
    else:
      q["output_tail"] = qs_result.get("output_tail", "")[-2000:]
    windows = []
    metrics = os.path.join(qs_workdir, "metrics.jsonl")
    if os.path.exists(metrics):
      with open(metrics) as f:
        for line in f:
          m = json.loads(line)
          if "train/images_per_second" in m:
            windows.append(m["train/images_per_second"])
      q["stage1_images_per_second_windows"] = windows
    if os.path.exists(qs_log):
      with open(qs_log, errors="replace") as src, open(log_file, "a") as dst:
        dst.write(src.read())
    section["quickstart"] = q
    res.write()
    log(f"tests: quickstart rc {q.get('rc')} in {q.get('seconds')} s"
        f"{' (timed out)' if q.get('timed_out') else ''}")
  shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ all


# Planned seconds per part (full size, --budget 510 or so after gpu.sh's install and smoke test): a part gets its
# plan plus what the parts before it left unused; the tests part gets whatever is left at the end.
PLANNED = {"info": 25, "step": 195, "e2e": 110, "decouple": 85, "tests": 100}
TINY_PLANNED = {"info": 60, "step": 150, "e2e": 120, "decouple": 90, "tests": 150}


def cmd_all(args) -> None:
  start = time.monotonic()
  deadline = start + args.budget
  parts = ["info"] + [p for p in ("step", "e2e", "decouple", "tests") if p in args.parts.split(",")]
  planned = dict(TINY_PLANNED if args.tiny else PLANNED)
  for item in filter(None, (args.budgets or "").split(",")):
    k, v = item.split("=")
    planned[k] = float(v)
  log_file = args.log or (os.path.join(OUT, "gpu_log.txt") if OUT else
                          os.path.join(tempfile.gettempdir(), "ltr_gpu_log.txt"))
  json_path = args.json
  scratch = tempfile.mkdtemp(prefix="ltr_gpu_")
  info_json = os.path.join(scratch, "info.json")
  info: dict = {}
  r = run_command(_python() + [os.path.abspath(__file__), "info", "--json", info_json],
                  timeout=max(10, planned["info"] * 3), log_file=log_file)
  info = _read_json(info_json) or {"error": r}
  if not json_path:
    device = (info.get("torch") or {}).get("device") or (info.get("jax") or {}).get("device_kind") or "cpu"
    tag = next((t for t in ("h200", "h100", "a100", "l4") if t in device.lower()), re.sub(r"\W+", "_", device.lower()))
    folder = os.path.dirname(os.path.abspath(log_file)) if args.tiny else os.path.join(HERE, "results")
    json_path = os.path.join(folder, f"gpu_{'tiny_' if args.tiny else ''}{tag}.json")
  res = Results(json_path)
  gpu = bool((info.get("torch") or {}).get("cuda_available")) or _nvidia_gpu()
  res.data.update({
      "what": "benchmarks/gpu.py: ltr_jax against PyTorch on one GPU",
      "command": " ".join(sys.argv), "tiny": args.tiny, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
      "budget_seconds": args.budget, "parts": parts, "planned_seconds": planned, "peak_flops_bf16": args.peak,
      "setup": _read_json(args.setup_json) if args.setup_json else None, "info": info, "part_seconds": {}})
  res.write()
  log(f"writing {json_path}" + (f" and {os.path.join(OUT, os.path.basename(json_path))}" if OUT else ""))
  if info.get("torch", {}).get("bf16_matmul_tflops"):
    log(f"info: {info['torch'].get('device')}: bf16 matmul {info['torch']['bf16_matmul_tflops']:.0f} TFLOP/s")
  res.data["part_seconds"]["info"] = round(time.monotonic() - start, 1)

  later = [p for p in parts if p != "info"]
  for i, part in enumerate(later):
    now = time.monotonic()
    reserve = sum(planned[p] for p in later[i + 1:])
    budget = max(min(planned[part], 20.0), deadline - now - reserve)
    if part == "tests":
      budget = deadline - now
    if budget <= 5:
      res.data.setdefault("skipped_parts", []).append(part)
      res.write()
      log(f"{part}: skipped, no time left")
      continue
    log(f"{part}: {budget:.0f} s")
    t0 = time.monotonic()
    try:
      if part == "step":
        part_step(args, res, budget)
      elif part == "e2e":
        part_e2e(args, res, budget, log_file, res.data.get("step"))
      elif part == "decouple":
        part_decouple(args, res, budget, log_file, gpu)
      elif part == "tests":
        part_tests(args, res, budget, log_file)
    except Exception as e:  # noqa: BLE001  A part's failure leaves the others to run.
      res.data.setdefault("part_errors", {})[part] = _tail(traceback.format_exc(), 3000)
      log(f"{part}: failed: {type(e).__name__}: {e}")
    res.data["part_seconds"][part] = round(time.monotonic() - t0, 1)
    res.write()
  res.data["total_seconds"] = round(time.monotonic() - start, 1)
  if gpu and shutil.which("nvidia-smi"):
    try:
      res.data["nvidia_smi_query_after"] = subprocess.run(
          ["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active",
           "--format=csv"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
      pass
  res.write()
  shutil.rmtree(scratch, ignore_errors=True)
  print_summary(res.data)
  print(f"\nwrote {json_path}" + (f" (and $OUT/{os.path.basename(json_path)})" if OUT else ""), flush=True)


def _nvidia_gpu() -> bool:
  smi = shutil.which("nvidia-smi")
  if not smi:
    return False
  try:
    r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return r.returncode == 0 and "GPU" in r.stdout


def print_summary(data: dict) -> None:
  print("\n========== summary ==========")
  info = data.get("info") or {}
  t, j = info.get("torch") or {}, info.get("jax") or {}
  print(f"device: torch {t.get('version')} {t.get('device', 'cpu')}; jax {j.get('version')} {j.get('backend')} "
        f"{j.get('device_kind')}; bf16 matmul {t.get('bf16_matmul_tflops', float('nan')):.0f} TFLOP/s")
  print(f"versions: {json.dumps(info.get('versions', {}))}")
  print(f"part seconds: {data.get('part_seconds')}, total {data.get('total_seconds')}")
  step = data.get("step")
  if step:
    print("\nstep (images/s, % of bf16 peak):")
    for row in step.get("table") or step_table(step):
      print(row)
    for s in step.get("skipped", []):
      print(f"  skipped: {s['framework']} {s['model']} {s['dtype']} {s['batch']}: {s['reason']}")
    for e in step.get("configs", []):
      if "error" in e:
        print(f"  error: {e['framework']} {e['model']} {e['dtype']} {e['batch']}: {str(e['error'])[:200]}")
  e2e = data.get("e2e")
  if e2e:
    print(f"\ne2e ({e2e.get('model')} bf16 batch {e2e.get('batch')}, {e2e.get('steps')} steps):")
    for run in e2e.get("runs", []):
      print("  " + _e2e_line(run))
    for s in e2e.get("skipped", []):
      print(f"  skipped {s}")
  dec = data.get("decouple")
  if dec:
    print(f"\ndecouple (scale {dec.get('scale')}, {dec.get('device')}): seconds jax / torch")
    for group, g in dec.get("groups", {}).items():
      if "seconds" in g:
        for c in group.split(","):
          print(f"  {c:10s} {g['seconds']['jax'][c]:8.3f} {g['seconds']['torch'][c]:8.3f}")
      else:
        print(f"  {group}: {g.get('error') or g.get('skipped')}")
  tests = data.get("tests")
  if tests:
    p = tests.get("pytest", {})
    print(f"\ntests: {p.get('summary_line')} (rc {p.get('rc')}, {p.get('seconds')} s"
          f"{', timed out' if p.get('timed_out') else ''})")
    for f in p.get("failures", [])[:25]:
      print(f"  {f['kind']}: {f['test']}: {f['message'][:160]}")
    if len(p.get("failures", [])) > 25:
      print(f"  ... {len(p['failures']) - 25} more in the JSON")
    q = tests.get("quickstart")
    if q:
      print(f"quickstart: rc {q.get('rc')}, {q.get('seconds')} s{', timed out' if q.get('timed_out') else ''}")
  for part, err in (data.get("part_errors") or {}).items():
    print(f"\npart {part} failed:\n{err[-800:]}")


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__)
  sub = p.add_subparsers(dest="cmd", required=True)
  a = sub.add_parser("all", help="every part, in order, within --budget seconds")
  a.add_argument("--json", help="output JSON (default benchmarks/results/gpu_<gpu>.json, gpu_tiny_<...> with --tiny)")
  a.add_argument("--tiny", action="store_true", help="CPU sizes (a few minutes on 2 cores)")
  a.add_argument("--budget", type=float, default=540, help="seconds for all the parts together")
  a.add_argument("--parts", default="step,e2e,decouple,tests", help="of step,e2e,decouple,tests (info always runs)")
  a.add_argument("--budgets", help="planned seconds per part, e.g. step=195,e2e=110,decouple=85")
  a.add_argument("--log", help="log file (default $OUT/gpu_log.txt)")
  a.add_argument("--setup-json", help="gpu.sh's record of the install (merged into the JSON)")
  a.add_argument("--peak", type=float, default=PEAK_BF16, help="bf16 peak FLOP/s for the fractions")
  a.add_argument("--steps", type=int, help="steps per timing window (default 10; --tiny 2)")
  a.add_argument("--windows", type=int, help="timing windows, median reported (default 5; --tiny 2)")
  a.add_argument("--compile-budget", type=float, default=150, help="seconds for one torch.compile configuration")
  a.add_argument("--step-jobs", help="instead of the built-in order: framework:model:dtype:batch,... "
                                     "(framework jax, torch or torch_compile)")
  a.add_argument("--e2e-model", default="resnet50")
  a.add_argument("--e2e-steps", type=int, default=0)
  a.add_argument("--e2e-images", type=int, default=0, help="distinct JPEGs to write")
  a.add_argument("--e2e-workers", help="data.num_workers values, in order (default 15,8,4)")
  a.add_argument("--tests", help="pytest selection (default: the whole suite; --tiny: tests/test_losses.py)")
  a.add_argument("--test-workers", type=int, default=6, help="pytest-xdist processes, where installed")
  a.add_argument("--test-timeout", type=int, default=180, help="seconds per test, where pytest-timeout is installed")
  a.add_argument("--no-quickstart", action="store_true")
  a.set_defaults(func=cmd_all)

  i = sub.add_parser("info", help="machine, versions, devices (a JSON)")
  i.add_argument("--json", required=True)
  i.set_defaults(func=cmd_info)
  s = sub.add_parser("smoke", help="imports + 2 jitted steps on the default backend")
  s.set_defaults(func=cmd_smoke)
  d = sub.add_parser("e2e-data", help="write the JPEGs and list files")
  d.add_argument("--dir", required=True)
  d.add_argument("--images", type=int, default=512)
  d.add_argument("--lines", type=int, default=40960)
  d.add_argument("--classes", type=int, default=1000)
  d.add_argument("--size", default="500x375")
  d.add_argument("--procs", type=int, default=os.cpu_count())
  d.set_defaults(func=cmd_e2e_data)
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
  r.set_defaults(func=cmd_e2e_run)
  args = p.parse_args()
  if args.cmd == "all":
    args.steps = args.steps or (2 if args.tiny else 10)
    args.windows = args.windows or (2 if args.tiny else 5)
  args.func(args)


if __name__ == "__main__":
  main()
