"""Stage-2 classifiers at full dataset scale, ltr_jax (JAX) beside the same algorithms in PyTorch (CPU).

iNaturalist 2018 scale (synthetic float32 features, d = 2048): NCM (class means of 437,513 training features,
then predictions on 24,426 validation features, 8,142 classes), one tau (tau = 1) evaluated directly, and the
21-value tau sweep linspace(0, 2, 21). ImageNet-LT scale (115,846 x 2048, 1,000 classes): cRT 10 epochs and
LWS 5 epochs, batch 512, lr 0.2 cosine. Training profiles are long-tailed (1000 -> 2 and 1280 -> 5 per class).
Every JAX prediction takes ltr_jax.ops.top1. Two rows time one step of those alone, at every scale,
as the median of 7 calls after a warm-up (the other rows include compilation): 'argmax', the top-1 of 6,000 x
8,142 float32 scores (ltr_jax's top1 beside torch.argmax, and jnp.argmax for reference), and 'matmul', the
product of 6,000 x 2,048 features and a 2,048 x 8,142 head, the floating-point work of every prediction:
XLA's dot as ltr_jax's chunk functions call it (chunks of ops.PREDICT_CHUNK rows, the head
classes-major; and for reference in one call) beside torch's matmul in one call.

Each (framework, computation) runs in a fresh child process (`--one jax:ncm`), which builds its inputs with
numpy, then resets the kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs resets VmHWM to the
current RSS), runs the computation once (compilation included, as a stage-2 run pays it) and reports
seconds and peak memory = VmHWM - VmRSS at the reset: the memory the computation adds on top of its inputs.
It also reports the process's CPU seconds (all threads); the load average at the start and end of the run
is recorded beside them. The whole set runs `--repeats` times (default 3), each repeat running every
(computation, framework) in turn, so that a slow spell of this shared machine (its speed drifts by 20-30%
over minutes) hits both frameworks alike; the table shows the median of each, and the JSON also keeps every
repeat and the median of the per-repeat JAX / PyTorch ratios.

  python benchmarks/decouple.py --json benchmarks/results/decouple_cpu.json [--scale 0.1] [--repeats 3]

`--cache float32,bfloat16,float16` runs instead a JAX-only case, one fresh child per dtype and repeat: cRT on cached
features at iNaturalist scale with d = 768 (a ViT-B/16's; 437,513 x 768, 8,142 classes, times --scale), the cache
written and memory-mapped back as stage 2 does (ltr_jax.stage2.features, config key stage2.feature_dtype), then cRT
(batch 512, lr 0.2) for 1 and for 3 epochs after a 1-epoch warm-up, each compiled afresh: the steady steps/s is 2
epochs' steps over the difference of their seconds (compilation, the features' move to the device and first reads
cancel out). It reports the cache's bytes in memory and on disk, both runs' seconds and the peak memory the runs add.

  python benchmarks/decouple.py --cache float32,bfloat16,float16 --scale 0.1 --repeats 1

`--device gpu` (benchmarks/gpu): PyTorch on CUDA (each input moved to the GPU before the clock starts, cRT / LWS
with the training features on the GPU and each batch gathered there), JAX on its default backend as always; both
frameworks' runtimes are started (a first tiny op) before the clock starts, each timed call ends with a device
synchronisation, and each child also reports its GPU's peak memory (`peak_device_memory_gb`). The default,
`--device cpu`, is the CPU benchmark above, unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial

import numpy as np

from common import machine, reset_peak, status_kb, write_json

COMPUTATIONS = ("argmax", "matmul", "ncm", "tau_one", "tau_sweep", "crt", "lws")
STEADY = ("argmax", "matmul")  # timed as the median of repeated calls after a warm-up
FRAMEWORKS = ("jax", "torch")
D = 2048
TAUS = np.linspace(0.0, 2.0, 21)
CHUNK = 512  # Rows per chunk of the tau sweep, both frameworks.
ARGMAX_SHAPE = (6000, 8142)
ARGMAX_REPEATS = 7
CRT = dict(epochs=10, batch_size=512, lr=0.2, weight_decay=5e-4)
LWS = dict(epochs=5, batch_size=512, lr=0.2, weight_decay=0.0)
CACHE_D = 768  # --cache: feature dimension
CACHE_EPOCHS = (1, 3)  # --cache: cRT runs whose difference gives the steady steps/s
DEVICE = "cpu"  # --device: 'cpu' (the CPU benchmark) or 'gpu' (PyTorch on cuda; see the module docstring)


def _on_gpu() -> bool:
  return DEVICE == "gpu"


def _to(t):
  """A torch tensor on the benchmark's PyTorch device (the tensor itself on the CPU)."""
  return t.to("cuda") if _on_gpu() else t


def _sync():
  if _on_gpu():
    import torch
    torch.cuda.synchronize()


def _long_tail_counts(num_classes: int, total: int, n_max: int, n_min: int) -> np.ndarray:
  """n(x) = n_max (n_max / n_min)^(-x^g), x = rank / (C - 1), with g chosen by bisection so sum n = total."""
  x = np.linspace(0.0, 1.0, num_classes)
  lo, hi = 0.01, 100.0
  for _ in range(100):
    g = np.sqrt(lo * hi)
    counts = np.round(n_max * (n_max / n_min)**(-(x**g))).astype(np.int64)
    lo, hi = (lo, g) if counts.sum() > total else (g, hi)  # The sum grows with g.
  counts[0] += total - counts.sum()  # Rounding remainder on the head class.
  return counts


def _features(rng: np.random.Generator, rows: int, d: int = D) -> np.ndarray:
  """|N(0, 1)| features held as stage 2 holds them: in 64-byte aligned host memory (ops.host_array,
  what inference and the feature cache give), filled in place."""
  from ltr_jax import ops
  out = ops.host_array((rows, d))
  rng.standard_normal(dtype=np.float32, out=out)
  return np.abs(out, out=out)


def _inputs(computation: str, scale: float) -> dict:
  """Synthetic non-negative (post-ReLU-like) features, long-tailed labels and a head with spread norms."""
  rng = np.random.default_rng(0)
  if computation == "argmax":
    return {"scores": rng.standard_normal(ARGMAX_SHAPE, dtype=np.float32)}
  if computation == "matmul":
    return {"z": _features(rng, ARGMAX_SHAPE[0]), "W": rng.standard_normal((D, ARGMAX_SHAPE[1]), dtype=np.float32)}
  inat = computation in ("ncm", "tau_one", "tau_sweep")
  classes = max(2, round((8142 if inat else 1000) * scale))
  n_train = round((437_513 if inat else 115_846) * scale)
  W = (rng.standard_normal((D, classes), dtype=np.float32) * rng.uniform(0.01, 0.05, classes).astype(np.float32))
  b = rng.standard_normal(classes, dtype=np.float32) * 0.1
  out = {"W": W, "b": b, "classes": classes}
  if computation != "tau_one" and computation != "tau_sweep":
    counts = _long_tail_counts(classes, n_train, *((1000, 2) if inat else (1280, 5)))
    out["labels"] = rng.permutation(np.repeat(np.arange(classes), counts))
    out["train"] = _features(rng, n_train)
  if inat:
    out["val"] = _features(rng, round(24_426 * scale))
  return out


def _run_jax(computation: str, x: dict):
  import jax
  import jax.numpy as jnp

  from ltr_jax import ops
  from ltr_jax.stage2 import classifiers, rebalance
  if computation == "ncm":
    centroids, mean = classifiers.ncm_centroids(x["train"], x["labels"], x["classes"])
    return classifiers.ncm_predictions(x["val"], centroids, mean).block_until_ready()
  if computation == "tau_one":
    W = classifiers.tau_normalize(jnp.asarray(x["W"]), 1.0)
    return ops.linear_predictions(x["val"], W, chunk_size=CHUNK).block_until_ready()
  if computation == "tau_sweep":
    return classifiers.tau_sweep_predictions(x["val"], x["W"], TAUS, chunk_size=CHUNK).block_until_ready()
  if computation == "crt":
    return jax.block_until_ready(
        rebalance.train_crt(x["train"], x["labels"], x["classes"], seed=0, progress=False, **CRT))
  return rebalance.train_lws(x["train"], x["labels"], jnp.asarray(x["W"]), jnp.asarray(x["b"]), x["classes"], seed=0,
                             progress=False, **LWS).block_until_ready()


def _run_torch(computation: str, x: dict):
  """The same algorithms, written as one would in PyTorch."""
  import torch
  import torch.nn.functional as F

  from ltr_jax.data.sampling import IndexSampler
  W = _to(torch.from_numpy(x["W"]))
  if computation == "ncm":
    train, labels = _to(torch.from_numpy(x["train"])), _to(torch.from_numpy(x["labels"]))
    mean = train.mean(0)
    sums = torch.zeros(x["classes"], D, device=train.device)
    for start in range(0, len(train), 8192):
      sums.index_add_(0, labels[start:start + 8192], F.normalize(train[start:start + 8192] - mean, dim=1))
    centroids = sums / torch.bincount(labels, minlength=x["classes"])[:, None]
    z = F.normalize(_to(torch.from_numpy(x["val"])) - mean, dim=1)
    logits = 2 * z @ centroids.T - (z * z).sum(1, keepdim=True) - (centroids * centroids).sum(1)
    return logits.argmax(1)
  if computation == "tau_one":
    return (_to(torch.from_numpy(x["val"])) @ (W / W.norm(dim=0))).argmax(1)
  if computation == "tau_sweep":
    scales = W.norm(dim=0)[None, :]**-_to(torch.from_numpy(TAUS.astype(np.float32)))[:, None]
    val = _to(torch.from_numpy(x["val"]))
    parts = []
    for start in range(0, len(val), CHUNK):
      scores = val[start:start + CHUNK] @ W
      parts.append(torch.stack([(scores * s).argmax(1) for s in scales]))
    return torch.cat(parts, 1)
  config = CRT if computation == "crt" else LWS
  torch.manual_seed(0)
  if computation == "crt":
    head = _to(torch.nn.Linear(D, x["classes"]))
    params = list(head.parameters())
  else:
    frozen = _to(torch.nn.Linear(D, x["classes"])).requires_grad_(False)
    frozen.weight.copy_(W.T)
    frozen.bias.copy_(_to(torch.from_numpy(x["b"])))
    scales = torch.nn.Parameter(_to(torch.ones(x["classes"])))
    params = [scales]

    def head(z):
      return scales * frozen(z)

  sampler = IndexSampler(x["labels"], x["classes"], "class", seed=0, num_epochs=config["epochs"])
  steps = len(x["labels"]) // config["batch_size"]
  optimizer = torch.optim.SGD(params, lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
  schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"] * steps)
  labels = _to(torch.from_numpy(x["labels"]))
  train = _to(torch.from_numpy(x["train"])) if _on_gpu() else None  # on the GPU: features there, batches gathered there
  for epoch in range(config["epochs"]):
    indices = _to(torch.from_numpy(sampler.epoch_indices(epoch)))
    for k in range(steps):
      batch = indices[k * config["batch_size"]:(k + 1) * config["batch_size"]]
      features = train[batch] if _on_gpu() else torch.from_numpy(x["train"][batch.numpy()])
      loss = F.cross_entropy(head(features), labels[batch])
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      schedule.step()
  return params


def _steady_variants(framework: str, computation: str, x: dict) -> dict:
  """name -> a call running one of the STEADY computations to completion; the first is the framework's."""
  if framework == "torch":
    import torch
    if computation == "matmul":
      z, W = _to(torch.from_numpy(x["z"])), _to(torch.from_numpy(x["W"]))
      if _on_gpu():
        return {"torch matmul": lambda: (z @ W, _sync())}
      return {"torch matmul": lambda: z @ W}
    t = _to(torch.from_numpy(x["scores"]))
    if _on_gpu():
      return {"torch.argmax": lambda: (t.argmax(1), _sync())}
    return {"torch.argmax": lambda: t.argmax(1)}
  import jax
  import jax.numpy as jnp

  from ltr_jax import ops
  if computation == "matmul":
    z = jax.device_put(x["z"])
    chunks = [chunk for chunk, _ in ops.row_chunks(x["z"], ops.PREDICT_CHUNK)]
    kernel_t, _ = ops.classes_major(x["W"], None)
    dot = jax.jit(lambda z, k: z @ k.T)
    return {
        "XLA dot, chunks of PREDICT_CHUNK rows": lambda: jax.block_until_ready([dot(c, kernel_t) for c in chunks]),
        "XLA dot, one call": lambda: dot(z, kernel_t).block_until_ready()
    }
  s = jnp.asarray(x["scores"])
  top1, argmax = jax.jit(ops.top1), jax.jit(lambda s: jnp.argmax(s, axis=-1))
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
    if _on_gpu():  # the runtime started (backend, its memory pool) before the clock starts
      jax.block_until_ready(jax.numpy.zeros(8) + 1)
  else:
    import torch  # noqa: F401
    run = _run_torch
    if _on_gpu():
      torch.zeros(8, device="cuda").add_(1)
      torch.cuda.synchronize()
  x = _inputs(computation, scale)
  base_kb = reset_peak()
  variants = {}
  if computation in STEADY:
    variants = {name: _median_timed(call) for name, call in _steady_variants(framework, computation, x).items()}
    seconds, cpu_seconds = next(iter(variants.values()))
  else:
    seconds, cpu_seconds = _timed(lambda: (run(computation, x), _sync()))
  out = {
      "seconds": seconds, "cpu_seconds": cpu_seconds, "variants": variants,
      "peak_memory_gb": (status_kb("VmHWM") - base_kb) / 2**20
  }
  if _on_gpu():
    out["peak_device_memory_gb"] = _peak_device_memory(framework) / 2**30
    out["device"] = _device_name(framework)
  return out


def run_cache(dtype: str, scale: float) -> dict:
  """The --cache case for one feature dtype in this process (see the module docstring)."""
  import tempfile

  import jax

  from ltr_jax.stage2 import features as features_lib
  from ltr_jax.stage2 import rebalance
  rng = np.random.default_rng(0)
  classes = max(2, round(8142 * scale))
  counts = _long_tail_counts(classes, round(437_513 * scale), 1000, 2)
  labels = rng.permutation(np.repeat(np.arange(classes), counts))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "train.npy")
    features_lib.save(path, features_lib.as_dtype(_features(rng, len(labels), CACHE_D), dtype))
    cached = features_lib.load(path, dtype)
    base_kb = reset_peak()

    def crt(epochs: int):
      return jax.block_until_ready(
          rebalance.train_crt(cached, labels, classes, seed=0, progress=False, **{**CRT, "epochs": epochs}))

    seconds = [_timed(partial(crt, epochs))[0] for epochs in (CACHE_EPOCHS[0], *CACHE_EPOCHS)][1:]  # after a warm-up
    steps = len(labels) // CRT["batch_size"]
    steady = (CACHE_EPOCHS[1] - CACHE_EPOCHS[0]) * steps / (seconds[1] - seconds[0])
    peak_gb = (status_kb("VmHWM") - base_kb) / 2**20
    return {
        "rows": len(labels), "classes": classes, "steps_per_epoch": steps, "cache_bytes": cached.nbytes,
        "itemsize": cached.itemsize, "file_bytes": os.path.getsize(path),
        "seconds": dict(zip(map(str, CACHE_EPOCHS), seconds)), "steps_per_second": steady, "peak_memory_gb": peak_gb
    }


def cache_main(dtypes: list[str], scale: float, repeats: int, json_path: str | None) -> None:
  """The --cache case: every dtype in a fresh child, `repeats` times in turn; medians printed and written."""
  load_before = os.getloadavg()[0]
  runs = {dtype: [] for dtype in dtypes}
  for repeat in range(repeats):
    for dtype in dtypes:
      one = _child(f"cache:{dtype}", scale, _child_env())
      runs[dtype].append(one)
      print(
          f"repeat {repeat + 1}/{repeats} {dtype:9s} {one['steps_per_second']:8.1f} steps/s  "
          f"{one['cache_bytes'] / 2**20:8.1f} MiB cache  {one['peak_memory_gb']:6.3f} GB peak", flush=True)

  def median(dtype: str, key: str, sub: str | None = None) -> float:
    return float(np.median([one[key] if sub is None else one[key][sub] for one in runs[dtype]]))

  first = runs[dtypes[0]][0]
  epochs = list(first["seconds"])
  results = {
      "case": f"cRT on cached features, {first['rows']} x {CACHE_D}, {first['classes']} classes, batch "
              f"{CRT['batch_size']}, {first['steps_per_epoch']} steps per epoch",
      "dtypes": {
          dtype: {
              "cache_bytes": runs[dtype][0]["cache_bytes"],
              "file_bytes": runs[dtype][0]["file_bytes"],
              "full_scale_cache_gb": 437_513 * CACHE_D * runs[dtype][0]["itemsize"] / 2**30,
              "steps_per_second": median(dtype, "steps_per_second"),
              "seconds": {e: median(dtype, "seconds", e) for e in epochs},
              "peak_memory_gb": median(dtype, "peak_memory_gb"),
          } for dtype in dtypes
      },
      "runs": runs,
      "repeats": repeats,
      "statistic": "median over repeats",
      "scale": scale,
      "machine": machine(f"numpy {np.__version__}"),
      "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
  }
  print(f"\n{results['case']}; median of {repeats} repeats")
  print(f"{'dtype':9s} {'cache MiB':>10s} {'file MiB':>9s} {'full GB':>8s} {'steps/s':>8s} " +
        " ".join(f"{e + ' ep s':>8s}" for e in epochs) + f" {'peak GB':>8s}")
  for dtype, r in results["dtypes"].items():
    print(f"{dtype:9s} {r['cache_bytes'] / 2**20:10.1f} {r['file_bytes'] / 2**20:9.1f} {r['full_scale_cache_gb']:8.3f} "
          f"{r['steps_per_second']:8.1f} " + " ".join(f"{t:8.2f}" for t in r["seconds"].values()) +
          f" {r['peak_memory_gb']:8.3f}")
  print(f"load average (1 min) before {load_before:.2f}, after {results['load_average_1min']['after']:.2f}")
  if json_path:
    write_json(json_path, results)


def _peak_device_memory(framework: str) -> float:
  """Bytes at the GPU's peak in this process (JAX: its allocator's peak; torch: max_memory_allocated)."""
  if framework == "jax":
    import jax
    return float((jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", float("nan")))
  import torch
  return float(torch.cuda.max_memory_allocated())


def _device_name(framework: str) -> str:
  if framework == "jax":
    import jax
    return f"{jax.default_backend()}: {jax.devices()[0].device_kind}"
  import torch
  return f"cuda: {torch.cuda.get_device_name()}"


def _child_env() -> dict:
  """The environment of a child: this one, with the repository on PYTHONPATH."""
  here = os.path.dirname(os.path.abspath(__file__))
  return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(
      None, [os.path.dirname(here), os.environ.get("PYTHONPATH")])))


def _child(spec: str, scale: float, env: dict) -> dict:
  """run_one(spec) in a fresh process."""
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", spec, "--scale",
                        str(scale)] + (["--device", DEVICE] if _on_gpu() else []), capture_output=True, text=True,
                       env=env)
  if out.returncode:
    sys.exit(f"{spec} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--json", help="write the results here")
  parser.add_argument("--scale", type=float, default=1.0, help="multiply every row and class count (quick runs)")
  parser.add_argument("--repeats", type=int, default=3, help="runs of every (computation, framework)")
  parser.add_argument("--one", help="internal: run one framework:computation and print its JSON")
  parser.add_argument("--only", default=",".join(COMPUTATIONS), help="comma-separated computations to run")
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                      help="gpu: PyTorch on cuda, runtimes started before the clock, device peak memory")
  parser.add_argument("--cache", help="comma-separated feature dtypes: run the cRT-on-a-feature-cache case instead")
  args = parser.parse_args()
  global DEVICE
  DEVICE = args.device
  if args.one:
    framework, name = args.one.split(":")
    print(json.dumps(run_cache(name, args.scale) if framework == "cache" else run_one(args.one, args.scale)))
    return
  if args.cache:
    cache_main(args.cache.split(","), args.scale, args.repeats, args.json)
    return

  computations = args.only.split(",")
  runs = {f: {c: [] for c in computations} for f in FRAMEWORKS}  # every repeat's run_one result
  load_before = os.getloadavg()[0]
  env = _child_env()
  for repeat in range(args.repeats):
    for computation in computations:
      for framework in FRAMEWORKS:
        one = _child(f"{framework}:{computation}", args.scale, env)
        runs[framework][computation].append(one)
        print(
            f"repeat {repeat + 1}/{args.repeats} {framework + ':' + computation:16s} {one['seconds']:8.3f} s  "
            f"{one['cpu_seconds']:8.3f} CPU s  {one['peak_memory_gb']:6.3f} GB", flush=True)

  def median(framework: str, computation: str, key: str) -> float:
    return float(np.median([one[key] for one in runs[framework][computation]]))

  results = {
      key: {f: {c: median(f, c, key) for c in computations} for f in FRAMEWORKS}
      for key in ("seconds", "cpu_seconds", "peak_memory_gb") + (("peak_device_memory_gb",) if _on_gpu() else ())
  }
  results.update({
      "repeats": args.repeats,
      "statistic": "median over repeats",
      "ratio_jax_over_torch": {
          c: float(np.median([j["seconds"] / t["seconds"] for j, t in zip(runs["jax"][c], runs["torch"][c])]))
          for c in computations
      },
      "per_repeat_seconds": {f: {c: [one["seconds"] for one in runs[f][c]] for c in computations} for f in FRAMEWORKS},
      "scale": args.scale,
      "features_gb": {  # float32 x 2048: iNat validation (the tau sweep's input)
          name: round(rows * args.scale) * D * 4 / 2**30
          for name, rows in (("inat", 24_426), ("inat_train", 437_513), ("imagenet_lt", 115_846))
      },
      "machine": machine(
          f"numpy {np.__version__}",
          *([f"device {runs[f][computations[0]][0]['device']}" for f in FRAMEWORKS] if _on_gpu() else [])),
      "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}
  })
  results["variant_seconds"] = {  # STEADY computations: every variant, median over repeats
      c: {
          name: float(np.median([one["variants"][name][0]
                                 for one in runs[f][c]]))
          for f in FRAMEWORKS
          for name in runs[f][c][0]["variants"]
      } for c in computations if c in STEADY
  }
  if "matmul" in computations:
    flops = 2 * ARGMAX_SHAPE[0] * D * ARGMAX_SHAPE[1]
    results["matmul_gflops_per_second"] = {f: flops / results["seconds"][f]["matmul"] / 1e9 for f in FRAMEWORKS}

  print(f"\nscale {args.scale}; features: " + ", ".join(f"{k} {v:.3f} GB" for k, v in results["features_gb"].items()))
  print(f"median of {args.repeats} repeats")
  print(f"{'computation':12s} {'jax s':>9s} {'torch s':>9s} {'jax/torch':>9s} {'ratio per repeat':>22s} "
        f"{'jax GB':>8s} {'torch GB':>9s}")
  for c in computations:
    s, m = results["seconds"], results["peak_memory_gb"]
    ratios = " ".join(f"{j / t:.2f}" for j, t in zip(*(results["per_repeat_seconds"][f][c] for f in FRAMEWORKS)))
    print(f"{c:12s} {s['jax'][c]:9.3f} {s['torch'][c]:9.3f} {results['ratio_jax_over_torch'][c]:9.2f} "
          f"{ratios:>22s} {m['jax'][c]:8.3f} {m['torch'][c]:9.3f}")
  for c, variants in results["variant_seconds"].items():
    print(f"{c} ({ARGMAX_SHAPE[0]} x {ARGMAX_SHAPE[1]}{' x ' + str(D) if c == 'matmul' else ''}): " +
          ", ".join(f"{name} {t:.4f} s" for name, t in variants.items()))
  if "matmul_gflops_per_second" in results:
    print("matmul GFLOP/s: " + ", ".join(f"{f} {v:.0f}" for f, v in results["matmul_gflops_per_second"].items()))
  print(f"load average (1 min) before {results['load_average_1min']['before']:.2f}, "
        f"after {results['load_average_1min']['after']:.2f}")
  s = results["seconds"]
  if "tau_one" in s["jax"] and "tau_sweep" in s["jax"]:
    for f in FRAMEWORKS:
      print(f"{f}: tau sweep / one tau = {s[f]['tau_sweep'] / s[f]['tau_one']:.2f}x time; sweep peak memory = "
            f"{results['peak_memory_gb'][f]['tau_sweep'] / results['features_gb']['inat']:.2f}x the val features")
  if args.json:
    write_json(args.json, results)


if __name__ == "__main__":
  main()
