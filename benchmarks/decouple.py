"""Stage-2 classifiers at full dataset scale, ltr_jax (JAX) beside the same algorithms in PyTorch (CPU).

iNaturalist 2018 scale (synthetic float32 features, d = 2048): NCM (class means of 437,513 training features,
then predictions on 24,426 validation features, 8,142 classes), one tau (tau = 1) evaluated directly, and the
21-value tau sweep linspace(0, 2, 21). ImageNet-LT scale (115,846 x 2048, 1,000 classes): cRT 10 epochs and
LWS 5 epochs, batch 512, lr 0.2 cosine. Training profiles are long-tailed (1000 -> 2 and 1280 -> 5 per class).
Every JAX prediction takes ltr_jax.classifiers.top1. The row 'argmax' times the top-1 alone on 6,000 x 8,142
float32 scores at every scale: ltr_jax's top1 beside torch.argmax, and jnp.argmax for reference; it is the
median of 7 calls after a warm-up, as it takes milliseconds, where the other rows include compilation.

Each (framework, computation) runs in a fresh child process (`--one jax:ncm`), which builds its inputs with
numpy, then resets the kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs resets VmHWM to the
current RSS), runs the computation once (compilation included, as a stage-2 run pays it) and reports
seconds and peak memory = VmHWM - VmRSS at the reset: the memory the computation adds on top of its inputs.
It also reports the process's CPU seconds (all threads), a steadier comparison while other jobs share
the machine; the load average at the start and end of the run is recorded beside them.

  python benchmarks/decouple.py --json benchmarks/results/decouple_cpu.json [--scale 0.1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

COMPUTATIONS = ("argmax", "ncm", "tau_one", "tau_sweep", "crt", "lws")
FRAMEWORKS = ("jax", "torch")
D = 2048
TAUS = np.linspace(0.0, 2.0, 21)
CHUNK = 512  # Rows per chunk of the tau sweep, both frameworks.
ARGMAX_SHAPE = (6000, 8142)
ARGMAX_REPEATS = 7
CRT = dict(epochs=10, batch_size=512, lr=0.2, weight_decay=5e-4)
LWS = dict(epochs=5, batch_size=512, lr=0.2, weight_decay=0.0)


def _status_kb(field: str) -> int:
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _long_tail_counts(num_classes: int, total: int, n_max: int, n_min: int) -> np.ndarray:
  """n(x) = n_max (n_max / n_min)^(-x^g), x = rank / (C - 1), with g chosen by bisection so sum n = total."""
  x = np.linspace(0.0, 1.0, num_classes)
  lo, hi = 0.01, 100.0
  for _ in range(100):
    g = np.sqrt(lo * hi)
    counts = np.round(n_max * (n_max / n_min) ** (-(x ** g))).astype(np.int64)
    lo, hi = (lo, g) if counts.sum() > total else (g, hi)  # The sum grows with g.
  counts[0] += total - counts.sum()  # Rounding remainder on the head class.
  return counts


def _inputs(computation: str, scale: float) -> dict:
  """Synthetic non-negative (post-ReLU-like) features, long-tailed labels and a head with spread norms."""
  rng = np.random.default_rng(0)
  if computation == "argmax":
    return {"scores": rng.standard_normal(ARGMAX_SHAPE, dtype=np.float32)}
  inat = computation in ("ncm", "tau_one", "tau_sweep")
  classes = max(2, round((8142 if inat else 1000) * scale))
  n_train = round((437_513 if inat else 115_846) * scale)
  W = (rng.standard_normal((D, classes), dtype=np.float32) * rng.uniform(0.01, 0.05, classes).astype(np.float32))
  b = rng.standard_normal(classes, dtype=np.float32) * 0.1
  out = {"W": W, "b": b, "classes": classes}
  if computation != "tau_one" and computation != "tau_sweep":
    counts = _long_tail_counts(classes, n_train, *((1000, 2) if inat else (1280, 5)))
    out["labels"] = rng.permutation(np.repeat(np.arange(classes), counts))
    out["train"] = np.abs(rng.standard_normal((n_train, D), dtype=np.float32))
  if inat:
    out["val"] = np.abs(rng.standard_normal((round(24_426 * scale), D), dtype=np.float32))
  return out


def _run_jax(computation: str, x: dict):
  import jax
  import jax.numpy as jnp

  from ltr_jax import classifiers, rebalance
  if computation == "ncm":
    centroids, mean = classifiers.ncm_centroids(x["train"], x["labels"], x["classes"])
    return classifiers.ncm_predictions(x["val"], centroids, mean).block_until_ready()
  if computation == "tau_one":
    W = classifiers.tau_normalize(jnp.asarray(x["W"]), 1.0)
    return classifiers.linear_predictions(x["val"], W, chunk_size=CHUNK).block_until_ready()
  if computation == "tau_sweep":
    return classifiers.tau_sweep_predictions(x["val"], x["W"], TAUS, chunk_size=CHUNK).block_until_ready()
  if computation == "crt":
    return jax.block_until_ready(rebalance.train_crt(x["train"], x["labels"], x["classes"], seed=0,
                                                     progress=False, **CRT))
  return rebalance.train_lws(x["train"], x["labels"], jnp.asarray(x["W"]), jnp.asarray(x["b"]), x["classes"],
                             seed=0, progress=False, **LWS).block_until_ready()


def _run_torch(computation: str, x: dict):
  """The same algorithms, written as one would in PyTorch."""
  import torch
  import torch.nn.functional as F

  from ltr_jax.data.sampling import IndexSampler
  W = torch.from_numpy(x["W"])
  if computation == "ncm":
    train, labels = torch.from_numpy(x["train"]), torch.from_numpy(x["labels"])
    mean = train.mean(0)
    sums = torch.zeros(x["classes"], D)
    for start in range(0, len(train), 8192):
      sums.index_add_(0, labels[start:start + 8192], F.normalize(train[start:start + 8192] - mean, dim=1))
    centroids = sums / torch.bincount(labels, minlength=x["classes"])[:, None]
    z = F.normalize(torch.from_numpy(x["val"]) - mean, dim=1)
    logits = 2 * z @ centroids.T - (z * z).sum(1, keepdim=True) - (centroids * centroids).sum(1)
    return logits.argmax(1)
  if computation == "tau_one":
    return (torch.from_numpy(x["val"]) @ (W / W.norm(dim=0))).argmax(1)
  if computation == "tau_sweep":
    scales = W.norm(dim=0)[None, :] ** -torch.from_numpy(TAUS.astype(np.float32))[:, None]
    val = torch.from_numpy(x["val"])
    parts = []
    for start in range(0, len(val), CHUNK):
      scores = val[start:start + CHUNK] @ W
      parts.append(torch.stack([(scores * s).argmax(1) for s in scales]))
    return torch.cat(parts, 1)
  config = CRT if computation == "crt" else LWS
  torch.manual_seed(0)
  if computation == "crt":
    head = torch.nn.Linear(D, x["classes"])
    params = list(head.parameters())
  else:
    frozen = torch.nn.Linear(D, x["classes"]).requires_grad_(False)
    frozen.weight.copy_(W.T)
    frozen.bias.copy_(torch.from_numpy(x["b"]))
    scales = torch.nn.Parameter(torch.ones(x["classes"]))
    params = [scales]
    def head(z):
      return scales * frozen(z)
  sampler = IndexSampler(x["labels"], x["classes"], "class", seed=0, num_epochs=config["epochs"])
  steps = len(x["labels"]) // config["batch_size"]
  optimizer = torch.optim.SGD(params, lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
  schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"] * steps)
  labels = torch.from_numpy(x["labels"])
  for epoch in range(config["epochs"]):
    indices = torch.from_numpy(sampler.epoch_indices(epoch))
    for k in range(steps):
      batch = indices[k * config["batch_size"]:(k + 1) * config["batch_size"]]
      loss = F.cross_entropy(head(torch.from_numpy(x["train"][batch.numpy()])), labels[batch])
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      schedule.step()
  return params


def _argmax_variants(framework: str, scores: np.ndarray) -> dict:
  """name -> a call computing the top-1 of every row of `scores` to completion; the first is the framework's."""
  if framework == "torch":
    import torch
    t = torch.from_numpy(scores)
    return {"torch.argmax": lambda: t.argmax(1)}
  import jax
  import jax.numpy as jnp

  from ltr_jax import classifiers
  s = jnp.asarray(scores)
  top1, argmax = jax.jit(classifiers.top1), jax.jit(lambda s: jnp.argmax(s, axis=-1))
  return {"top1": lambda: top1(s).block_until_ready(), "jnp.argmax": lambda: argmax(s).block_until_ready()}


def _timed(call) -> tuple[float, float]:
  """(wall seconds, CPU seconds of this process) of call()."""
  wall, cpu = time.perf_counter(), time.process_time()
  call()
  return time.perf_counter() - wall, time.process_time() - cpu


def _median_timed(call) -> tuple[float, float]:
  call()  # Compilation and first touch of the memory.
  return tuple(np.median([_timed(call) for _ in range(ARGMAX_REPEATS)], axis=0).tolist())


def run_one(spec: str, scale: float) -> dict:
  """Time and peak memory of one `framework:computation` in this process (see the module docstring)."""
  framework, computation = spec.split(":")
  if framework == "jax":
    import jax  # noqa: F401  Imports before the measurement, in both frameworks.
    run = _run_jax
  else:
    import torch  # noqa: F401
    run = _run_torch
  x = _inputs(computation, scale)
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  base_kb = _status_kb("VmRSS")
  variants = {}
  if computation == "argmax":
    variants = {name: _median_timed(call) for name, call in _argmax_variants(framework, x["scores"]).items()}
    seconds, cpu_seconds = next(iter(variants.values()))
  else:
    seconds, cpu_seconds = _timed(lambda: run(computation, x))
  return {"seconds": seconds, "cpu_seconds": cpu_seconds, "variants": variants,
          "peak_memory_gb": (_status_kb("VmHWM") - base_kb) / 2**20}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--json", help="write the results here")
  parser.add_argument("--scale", type=float, default=1.0, help="multiply every row and class count (quick runs)")
  parser.add_argument("--one", help="internal: run one framework:computation and print its JSON")
  parser.add_argument("--only", default=",".join(COMPUTATIONS), help="comma-separated computations to run")
  args = parser.parse_args()
  if args.one:
    print(json.dumps(run_one(args.one, args.scale)))
    return

  results = {"seconds": {f: {} for f in FRAMEWORKS}, "cpu_seconds": {f: {} for f in FRAMEWORKS},
             "peak_memory_gb": {f: {} for f in FRAMEWORKS},
             "scale": args.scale, "features_gb": {  # float32 x 2048: iNat validation (the tau sweep's input)
                 name: round(rows * args.scale) * D * 4 / 2**30 for name, rows in
                 (("inat", 24_426), ("inat_train", 437_513), ("imagenet_lt", 115_846))},
             "argmax_seconds": {}, "load_average_1min": {"start": os.getloadavg()[0]}}
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(here), os.environ.get("PYTHONPATH")])))
  for computation in args.only.split(","):
    for framework in FRAMEWORKS:
      spec = f"{framework}:{computation}"
      out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", spec, "--scale", str(args.scale)],
                           capture_output=True, text=True, env=env)
      if out.returncode:
        sys.exit(f"{spec} failed:\n{out.stderr[-3000:]}")
      one = json.loads(out.stdout.strip().splitlines()[-1])
      for key in ("seconds", "cpu_seconds", "peak_memory_gb"):
        results[key][framework][computation] = one[key]
      results["argmax_seconds"].update({name: wall for name, (wall, _) in one["variants"].items()})
      print(f"{spec:16s} {one['seconds']:8.3f} s  {one['cpu_seconds']:8.3f} CPU s  {one['peak_memory_gb']:6.3f} GB",
            flush=True)
  results["load_average_1min"]["end"] = os.getloadavg()[0]

  print(f"\nscale {args.scale}; features: " + ", ".join(f"{k} {v:.3f} GB" for k, v in results["features_gb"].items()))
  print(f"{'computation':12s} {'jax s':>9s} {'torch s':>9s} {'jax/torch':>9s} {'CPU s ratio':>11s} "
        f"{'jax GB':>8s} {'torch GB':>9s}")
  for c in args.only.split(","):
    s, cpu, m = results["seconds"], results["cpu_seconds"], results["peak_memory_gb"]
    print(f"{c:12s} {s['jax'][c]:9.3f} {s['torch'][c]:9.3f} {s['jax'][c] / s['torch'][c]:9.2f} "
          f"{cpu['jax'][c] / cpu['torch'][c]:11.2f} {m['jax'][c]:8.3f} {m['torch'][c]:9.3f}")
  if results["argmax_seconds"]:
    print(f"argmax over {ARGMAX_SHAPE[0]} x {ARGMAX_SHAPE[1]}: "
          + ", ".join(f"{name} {t:.4f} s" for name, t in results["argmax_seconds"].items()))
  print(f"load average (1 min) at start {results['load_average_1min']['start']:.2f}, "
        f"at end {results['load_average_1min']['end']:.2f}")
  s = results["seconds"]
  if "tau_one" in s["jax"] and "tau_sweep" in s["jax"]:
    for f in FRAMEWORKS:
      print(f"{f}: tau sweep / one tau = {s[f]['tau_sweep'] / s[f]['tau_one']:.2f}x time; sweep peak memory = "
            f"{results['peak_memory_gb'][f]['tau_sweep'] / results['features_gb']['inat']:.2f}x the val features")
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
