"""Training images/s of our jitted step (`ltr_jax.train.make_train_step`) beside PyTorch eager.

Models (same architecture on both sides: `benchmarks/torch_models.py` are exact twins):
- resnet32: CIFAR ResNet-32, 32x32x3, batch 128, 100 classes (JSON keys *_resnet32).
- resnet_mini: the quickstart model (`configs/quickstart.py`), 28x28x1, batch 128, 10 classes
  (JSON keys *_quickstart).
- resnet50: 224x224x3, batch 64, 1000 classes (for an accelerator run: JAX on its default backend,
  torch on cuda when available; `--image_size` / `--batch` override every selected model).
- resnext50_32x4d: as resnet50 (ImageNet-LT's model; benchmarks/gpu times it on a GPU).
`JaxRunner(dtype='bfloat16')` (config key model.dtype) and `TorchRunner(autocast_dtype=torch.bfloat16,
compile=True)` (AMP, torch.compile) are benchmarks/gpu's; this script runs float32 and eager.

Both sides do the same work per step: a uint8 NHWC batch (fixed random images and labels) is moved
host -> device, normalised on the device, forward in training mode (BatchNorm statistics updated),
mean softmax cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4 on every parameter; torch:
`torch.optim.SGD(weight_decay=5e-4)`, ours: `make_optimizer`, the same rule), top-1 accuracy.
JAX: the real `make_train_step` (state replicated and donated, batch sharded over `data_mesh()`).
PyTorch: eager, `model.train()`, float32, both memory formats (contiguous NCHW and channels_last)
measured, the faster reported as `torch_*` (both in `torch_settings`).

Timing: 3 warm-up steps per contender, then `--windows` windows of `--steps` steps, interleaved
(window w of JAX, then of each torch setting, ...) so that a change of background load hits every
contender alike; images/s = batch * steps / median window time. JAX windows end with
`block_until_ready`; torch on CPU is synchronous (cuda: `torch.cuda.synchronize()`).
compile_seconds = time of the first JAX call (tracing + compilation + one step) minus the median
steady-state step time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import torch  # noqa: E402

from configs import base, quickstart  # noqa: E402
from ltr_jax import losses, masks, models, parallel, train  # noqa: E402
from torch_models import build_torch_model  # noqa: E402
from common import load_average, machine  # noqa: E402


def machine_info() -> str:
  return machine(
      f"jax {jax.__version__} ({jax.default_backend()}: {len(jax.devices())} x "
      f"{jax.devices()[0].device_kind})", f"torch {torch.__version__}")


# model -> (JSON key, image size, channels, classes, batch, mean, std)
MODELS = {
    "resnet32": ("resnet32", 32, 3, 100, 128, (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
    "resnet_mini": ("quickstart", 28, 1, 10, 128, None, None),  # mean/std from configs/quickstart.py
    "resnet50": ("resnet50", 224, 3, 1000, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "resnext50_32x4d": ("resnext50_32x4d", 224, 3, 1000, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
MOMENTUM, WEIGHT_DECAY, LR = 0.9, 5e-4, 0.1
WARMUP = 3


def model_config(name: str, size: int, batch: int, dtype: str = "float32") -> ml_collections.ConfigDict:
  """quickstart's config for resnet_mini, else base with the model, size, mean/std replaced; dtype: model.dtype."""
  _, _, _, _, _, mean, std = MODELS[name]
  c = quickstart.get_config() if name == "resnet_mini" else base.get_config()
  c.model.name = name
  c.model.dtype = dtype
  c.data.image_size = size
  if mean is not None:
    c.data.mean, c.data.std = mean, std
  # A constant-shape schedule: the step traces it either way; lr values do not change the cost.
  c.train.update(
      dict(batch_size=batch, base_lr=LR * 256 / batch, momentum=MOMENTUM, nesterov=False, weight_decay=WEIGHT_DECAY,
           warmup_epochs=0.0, epochs=1))
  return c


class JaxRunner:
  """Our jitted data-parallel train step on fixed host data (moved to the device every step)."""

  def __init__(self, name: str, size: int, channels: int, classes: int, batch: int, data: dict, dtype: str = "float32"):
    self.config = model_config(name, size, batch, dtype)
    self.mesh = parallel.data_mesh()
    model = models.from_config(self.config.model, classes)
    variables = train.initial_variables(model, self.config, (size, size, channels), self.mesh)
    tx = train.make_optimizer(train.Recipe.of_train(self.config.train), 10_000,
                              masks.lr_groups(variables["params"], (), ()))
    self.state = train.new_state(variables, tx, self.mesh)
    self.step_fn = train.make_train_step(model, tx, losses.cross_entropy, self.config.data, self.mesh)
    self.data = data

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.state, metrics = self.step_fn(self.state, parallel.global_batch(self.data, self.mesh))
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start


class TorchRunner:
  """PyTorch eager twin: same architecture, normalisation on the device, SGD + wd, CE, model.train().

  autocast_dtype (e.g. torch.bfloat16): forward and loss under torch.autocast (AMP; parameters, gradients and
  SGD stay float32); compile: the model through torch.compile (compiled at the first step).
  """

  def __init__(self, name: str, channels: int, classes: int, mean, std, data: dict, channels_last: bool,
               device: torch.device, autocast_dtype: torch.dtype | None = None, compile: bool = False):
    torch.manual_seed(0)
    self.device, self.channels_last = device, channels_last
    self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    self.model = build_torch_model(name, classes, in_channels=channels).to(device)
    self.model = self.model.to(memory_format=self.memory_format)
    self.model.train()
    self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    self.autocast_dtype = autocast_dtype
    self.forward = torch.compile(self.model) if compile else self.model
    self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255
    self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255
    self.data = data

  def step(self):
    images = torch.from_numpy(self.data["image"]).to(self.device, non_blocking=True)
    labels = torch.from_numpy(self.data["label"]).to(self.device, non_blocking=True).long()
    x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std  # NHWC memory = channels_last
    x = x.contiguous(memory_format=self.memory_format)
    if self.autocast_dtype is None:
      logits = self.forward(x)
      loss = torch.nn.functional.cross_entropy(logits, labels)
    else:
      with torch.autocast(self.device.type, dtype=self.autocast_dtype):
        logits = self.forward(x)
        loss = torch.nn.functional.cross_entropy(logits, labels)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss, (logits.argmax(-1) == labels).float().mean()

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.step()
    if self.device.type == "cuda":
      torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_model(name: str, args) -> dict:
  """Compile time, then interleaved timing windows for JAX and both torch memory formats."""
  key, size, channels, classes, batch, mean, std = MODELS[name]
  size, batch = args.image_size or size, args.batch or batch
  cfg = model_config(name, size, batch)
  mean, std = tuple(cfg.data.mean), tuple(cfg.data.std)
  rng = np.random.default_rng(0)
  data = {
      "image": rng.integers(0, 256, (batch, size, size, channels), dtype=np.uint8),
      "label": rng.integers(0, classes, (batch,), dtype=np.int32)
  }
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  print(f"[{name}] {size}x{size}x{channels}, batch {batch}, {classes} classes; building ...", flush=True)

  jx = JaxRunner(name, size, channels, classes, batch, data)
  first = jx.run(1)  # tracing + compilation + one step
  jx.run(WARMUP - 1)
  runners = {"jax": jx}
  for cl in (False, True):
    tr = TorchRunner(name, channels, classes, mean, std, data, cl, device)
    tr.run(WARMUP)
    runners["torch_channels_last" if cl else "torch_nchw"] = tr

  times = {k: [] for k in runners}
  for w in range(args.windows):
    for k, r in runners.items():
      times[k].append(r.run(args.steps))
    print(
        f"[{name}] window {w + 1}/{args.windows}: " +
        ", ".join(f"{k} {batch * args.steps / t[-1]:.1f} img/s" for k, t in times.items()), flush=True)

  ips = {k: batch * args.steps / statistics.median(t) for k, t in times.items()}
  best = max(("torch_nchw", "torch_channels_last"), key=ips.get)
  step_time = statistics.median(times["jax"]) / args.steps
  return dict(key=key, image_shape=[size, size, channels], batch=batch, classes=classes, jax=ips["jax"],
              torch=ips[best], torch_setting=best.removeprefix("torch_"),
              torch_settings={k.removeprefix("torch_"): ips[k] for k in ips if k != "jax"},
              compile_seconds=first - step_time, first_call_seconds=first,
              window_seconds={k: [round(x, 4) for x in t] for k, t in times.items()}, torch_device=str(device))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--json", required=True, help="output JSON path")
  p.add_argument("--models", default="resnet32,resnet_mini", help=f"comma-separated, of {sorted(MODELS)}")
  p.add_argument("--steps", type=int, default=10, help="steps per timing window")
  p.add_argument("--windows", type=int, default=5, help="timing windows (median reported)")
  p.add_argument("--batch", type=int, default=0, help="global batch (0: per-model default)")
  p.add_argument("--image_size", type=int, default=0, help="image side (0: per-model default)")
  args = p.parse_args()
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = [m for m in models if m not in MODELS]
  if unknown:
    p.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")

  torch.set_num_threads(os.cpu_count())
  threads = {
      "torch_intra_op_threads": torch.get_num_threads(),
      "xla": (f"{jax.default_backend()} backend, {len(jax.devices())} device(s); XLA:CPU runs each op on "
              f"its intra-op Eigen pool, sized to the cores the process may use "
              f"({len(os.sched_getaffinity(0))}); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"),
  }
  load_before = load_average()
  print(f"machine: {machine_info()}\nthreads: {threads}\nload average before: {load_before}", flush=True)

  results = [bench_model(m, args) for m in models]
  load_after = load_average()

  out = {
      "images_per_second": {},
      "compile_seconds": {r["key"]: r["compile_seconds"] for r in results},
      "machine": machine_info(),
      "load_average": {
          "before": load_before, "after": load_after, "note": "1/5/15-min load averages; other jobs may share the CPUs"
      },
      "threads": threads,
      "timing": f"{WARMUP} warm-up steps, then median of {args.windows} interleaved windows of {args.steps} steps",
      "details": {},
  }
  for r in results:
    out["images_per_second"][f"jax_{r['key']}"] = r["jax"]
    out["images_per_second"][f"torch_{r['key']}"] = r["torch"]
    out["details"][r["key"]] = {k: v for k, v in r.items() if k not in ("key", "jax", "torch")}

  print("\n| model | input | batch | JAX img/s | torch img/s (setting) | jax/torch | JAX compile s |")
  print("|---|---|---|---|---|---|---|")
  for r in results:
    shape = "x".join(map(str, r["image_shape"]))
    print(f"| {r['key']} | {shape} | {r['batch']} | {r['jax']:.1f} | {r['torch']:.1f} ({r['torch_setting']}) "
          f"| {r['jax'] / r['torch']:.2f} | {r['compile_seconds']:.2f} |")
  print(f"\nload average before {load_before}, after {load_after}")

  os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
  with open(args.json, "w") as f:
    json.dump(out, f, indent=2)
  print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
