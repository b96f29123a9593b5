"""ViT-B/16 at 224x224, ltr_jax (JAX) beside PyTorch (timm): feature extraction and LIFT's AdaptFormer training step.

Rows (`--rows`), each timed in both frameworks on the same random weights and the same batch:
- features_float32 / features_bfloat16: inference, the pooled features [B, 768] of timm's
  `vit_base_patch16_clip_224` (OpenAI CLIP's layout: ln_pre, no patch bias, class token, LayerNorm eps 1e-5).
  ltr_jax: `ltr_jax.models.vit.ViT` (dtype float32 / bfloat16, parameters float32) through jax.jit; PyTorch: the timm
  model, eval(), torch.inference_mode(), float32 or torch.autocast(bfloat16).
- adaptformer_float32 / adaptformer_bfloat16: one training step of LIFT's AdaptFormer fine-tuning (shijxcs/LIFT @
  661ead9, models/peft_modules.py:54-78, models/peft_vit.py:95, :450-453): the frozen ViT with an AdaptFormer in every
  block (LayerNorm -> Linear(D, r) -> ReLU -> Linear(r, D), zero-initialised, times a learned scalar, added beside the
  block's MLP on the block's input after attention), r = lift_bottleneck(1000, 12) = 32, LIFT's cosine classifier
  (scale 25, models/classifiers.py:33-41, utils/config.py:30) over 1000 classes, mean cross-entropy, SGD momentum 0.9,
  weight decay 5e-4, lr 0.01 (LIFT's configs/model/clip_vit_b16.yaml); gradients only for the adapters and the head.
  ltr_jax: LTRModel(ViT(adaptformer_dim=r), cosine ClassifierHead), a jitted step with jax.value_and_grad over the
  trainable params only (the frozen ones an argument), optax add_decayed_weights + sgd. PyTorch: timm's model with
  LIFT's AdaptFormer written here from LIFT's definition (each block a timm Block subclass), requires_grad only on
  the adapters and the head, torch.optim.SGD (its weight_decay: the same rule), model.train(); bfloat16:
  torch.autocast. Both: the parameters float32, the step computing in the row's dtype.
The weights: timm's random initialisation (torch.manual_seed(0)), LIFT's initialisation of the adapters and the head,
saved once and loaded by both frameworks (ltr_jax through `ltr_jax.import_vit.timm_vit_to_variables`). The batch:
random N(0, 1) images (already normalised: the same array, NHWC for JAX, NCHW for PyTorch) and labels, on the device
before the clock starts. The outputs are compared: the largest feature difference and the losses of the warm-up
steps (the two frameworks train the same parameters from the same start).

Each (framework, row) lives in its own process (multiprocessing, spawn), so that its peak memory is its own: once it
has built the model, the weights and the batch, its RSS is the baseline ('the inputs') and the kernel's peak-RSS
counter is reset (writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS); reset again after the warm-up,
the peak over the timed windows less the baseline is `peak_memory_gb` (what running the row holds: activations,
gradients, the compiled program, what the allocator keeps), and the peak over the warm-up too
`peak_memory_with_compile_gb` (JAX's compilation included). On a GPU the device's peak (JAX's peak_bytes_in_use,
torch's max_memory_allocated) is read beside it. `minor_page_faults_per_call`: the process's minor page faults
(getrusage) per timed call, the memory it takes fresh from the kernel (and the kernel zeroes) every call.

Timing: the processes are built and warmed up one at a time (`--warmup` calls; the first, compilation included, is
reported as first_call_seconds, and compile_seconds = first call - the median steady call), then `--windows` rounds,
each running one window of `--steps` calls of every (row, framework) in turn, so that a change of the machine's speed
hits every contender alike; images/s = batch x steps / median window. JAX windows end with block_until_ready, PyTorch
on CUDA with torch.cuda.synchronize(). ratio = JAX time / PyTorch time (> 1: JAX slower), of the medians, and per
round. On the CPU both use all the process's cores: torch.set_num_threads(usable cores), XLA:CPU's pool is sized to
them.

`--ops` (default on the CPU) then times, in two more fresh processes per dtype, the ops of one forward pass at the
row's shapes (tokens = batch x 197): the linear layers (q, k, v, out_proj, mlp c_fc and c_proj, the patch
embedding), the attention's two batched products, and the whole attention, float32 and bfloat16, the median of 5
calls after one: XLA's dot and ltr_jax's attention (ltr_jax.models.vit.attention) under jax.jit beside torch's
F.linear, matmul and
F.scaled_dot_product_attention (what timm calls). Summed per pass and set beside the measured forward pass, they show
where feature extraction spends its time in each framework.

By default the script first waits for an idle machine: until the 1-minute load average is below `--idle-load`
(polled every 30 s, at most `--max-wait` seconds, then it runs anyway and says so in the JSON).

  python benchmarks/vit.py --json benchmarks/results/vit_cpu.json

`--tiny` (benchmarks/gpu's CPU check): a 2-block ViT of width 128 on 32x32 images, 10 classes, batch 4.
`--device gpu` (benchmarks/gpu): PyTorch on CUDA, JAX on its default backend, no idle wait.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import load_average, machine, reset_peak, status_kb, write_json  # noqa: E402

ROWS = ("features_float32", "features_bfloat16", "adaptformer_float32", "adaptformer_bfloat16")
CPU_ROWS = ("features_float32", "features_bfloat16", "adaptformer_float32")
FRAMEWORKS = ("jax", "torch")
TIMM_NAME = "vit_base_patch16_clip_224"
# --tiny: the same architecture family at CPU-check size (timm.create_model keyword overrides).
TINY_ARCH = dict(img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2)
HEAD_SCALE = 25.0  # LIFT's cosine classifier scale (utils/config.py:30)
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4  # LIFT's configs/model/clip_vit_b16.yaml
HEAD_KEY = "lift_head.weight"  # the cosine classifier's weight [C, D] in the saved weights
OP_REPEATS = 5


def wait_for_idle(threshold: float, max_wait: float, poll: float = 30.0) -> dict:
  """Polls the 1-minute load average until it is below `threshold` or `max_wait` seconds have passed."""
  start = time.monotonic()
  first = load_average()
  while os.getloadavg()[0] >= threshold and time.monotonic() - start < max_wait:
    print(
        f"waiting for an idle machine: 1-minute load {os.getloadavg()[0]:.2f} >= {threshold} "
        f"({time.monotonic() - start:.0f} s of at most {max_wait:.0f} s)", flush=True)
    time.sleep(poll)
  idle = os.getloadavg()[0] < threshold
  return {
      "threshold_1min": threshold, "load_average_at_first_check": first,
      "waited_seconds": round(time.monotonic() - start), "idle": idle,
      "note": "idle: the 1-minute load fell below the threshold"
              if idle else f"ran without an idle machine: the load stayed at or above {threshold} for {max_wait:.0f} s"
  }


def bottleneck_of(cfg: dict) -> int:
  from ltr_jax.models import vit
  return vit.lift_bottleneck(cfg["classes"], cfg["depth"])


# ---------------------------------------------------------------------------------------------------------------------
# PyTorch: timm's ViT and LIFT's AdaptFormer, written from LIFT's definition.


def torch_model(cfg: dict, adaptformer: bool):
  """timm's ViT (no classifier: pooled features out); with `adaptformer`, every block carries LIFT's AdaptFormer."""
  import timm
  from timm.models.vision_transformer import Block
  from torch_models import AdaptFormer

  class AdaptFormerBlock(Block):
    """timm's Block with the adapter beside the MLP, on the block's input after attention (LIFT
    models/peft_vit.py:413, :450-453): x = x + attn(norm1 x); x + mlp(norm2 x) + adapter(x)."""

    def __init__(self, dim: int, *args, **kwargs):
      super().__init__(dim, *args, **kwargs)
      self.adapter = AdaptFormer(dim, bottleneck_of(cfg))

    def forward(self, x, *args, **kwargs):
      x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), *args, **kwargs)))
      return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x)))) + self.adapter(x)

  extra = {"block_fn": AdaptFormerBlock} if adaptformer else {}
  return timm.create_model(TIMM_NAME, pretrained=False, num_classes=0, **cfg["arch"], **extra)


def make_weights(path: str, cfg: dict) -> None:
  """The adapted model's random weights (timm's and LIFT's initialisations, seed 0) and LIFT's cosine-classifier
  weight (uniform, rows renormalised: models/classifiers.py:9-10), as float32 numpy in an .npz."""
  import torch
  torch.manual_seed(0)
  model = torch_model(cfg, adaptformer=True)
  state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
  head = torch.empty(cfg["classes"], model.num_features).uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5)
  state[HEAD_KEY] = head.numpy()
  np.savez(path, **state)


def _backbone_state(state: dict) -> dict:
  return {k: v for k, v in state.items() if ".adapter." not in k and k != HEAD_KEY}


class TorchRunner:
  """One row in PyTorch: `call()` runs a batch (features, or one training step) and returns its output."""

  def __init__(self, row: str, cfg: dict):
    import torch
    self.torch = torch
    self.device = torch.device("cuda" if cfg["device"] == "gpu" else "cpu")
    if self.device.type == "cpu":
      torch.set_num_threads(len(os.sched_getaffinity(0)))
    else:
      torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for float32 matmuls, as JAX's default precision on a GPU
    self.kind, dtype = row.rsplit("_", 1)
    self.autocast = torch.bfloat16 if dtype == "bfloat16" else None
    state = dict(np.load(cfg["weights"]))
    adapt = self.kind == "adaptformer"
    self.model = torch_model(cfg, adaptformer=adapt)
    own = {k: torch.from_numpy(v) for k, v in (state if adapt else _backbone_state(state)).items() if k != HEAD_KEY}
    self.model.load_state_dict(own, strict=True)
    self.model.to(self.device)
    images, labels = batch_data(cfg)
    self.x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(self.device)
    self.y = torch.from_numpy(labels).long().to(self.device)
    if adapt:
      self.model.requires_grad_(False)
      adapters = [p for name, p in self.model.named_parameters() if ".adapter." in name]
      for p in adapters:
        p.requires_grad_(True)
      self.head = torch.nn.Parameter(torch.from_numpy(state[HEAD_KEY]).to(self.device))
      self.model.train()
      self.opt = torch.optim.SGD(adapters + [self.head], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
      self.num_trainable = sum(p.numel() for p in adapters) + self.head.numel()
    else:
      self.model.eval()
    del state

  def _autocast(self):
    import contextlib
    if self.autocast is None:
      return contextlib.nullcontext()
    return self.torch.autocast(self.device.type, dtype=self.autocast)

  def call(self):
    F = self.torch.nn.functional
    if self.kind == "features":
      with self.torch.inference_mode(), self._autocast():
        return self.model(self.x)
    with self._autocast():
      # LIFT's CosineClassifier: s * normalize(z) . normalize(w_j) (models/classifiers.py:33-41).
      logits = F.linear(F.normalize(self.model(self.x), dim=-1), F.normalize(self.head, dim=-1)) * HEAD_SCALE
      loss = F.cross_entropy(logits.float(), self.y)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss.detach()

  def sync(self, out) -> None:
    if self.device.type == "cuda":
      self.torch.cuda.synchronize()

  def value(self, out):
    return out.float().cpu().numpy()

  def reset_device_peak(self) -> None:
    if self.device.type == "cuda":
      self.torch.cuda.reset_peak_memory_stats()

  def device_peak_gb(self) -> float | None:
    return self.torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else None

  def settings(self) -> dict:
    t = self.torch
    out = {"torch": t.__version__, "device": str(self.device), "autocast": str(self.autocast)}
    if self.device.type == "cpu":
      out.update(threads=t.get_num_threads(), mkldnn=t.backends.mkldnn.is_available(),
                 cpu_capability=t.backends.cpu.get_cpu_capability())
    else:
      out.update(gpu=t.cuda.get_device_name(), matmul_allow_tf32=t.backends.cuda.matmul.allow_tf32,
                 cudnn_allow_tf32=t.backends.cudnn.allow_tf32)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# ltr_jax.


def jax_params(state: dict, adaptformer: bool) -> tuple[dict, dict]:
  """(ViT params, ViT fields) of the saved weights: the backbone through import_vit, LIFT's adapters by name."""
  from ltr_jax import import_vit
  params, arch = import_vit.timm_vit_to_variables(_backbone_state(state))
  visual = params["visual"]
  if adaptformer:
    for name, block in visual["transformer"].items():
      p = f"blocks.{int(name.split('_')[1])}.adapter."
      block["adapter"] = {
          "ln": {"scale": state[p + "ln.weight"], "bias": state[p + "ln.bias"]},
          "down": {"kernel": state[p + "down_proj.weight"].T, "bias": state[p + "down_proj.bias"]},
          "up": {"kernel": state[p + "up_proj.weight"].T, "bias": state[p + "up_proj.bias"]},
          "scale": state[p + "scale"],
      }
  return visual, arch["visual"]


class JaxRunner:
  """One row in ltr_jax: `call()` runs a batch (features, or one training step) asynchronously."""

  def __init__(self, row: str, cfg: dict):
    import jax
    import jax.numpy as jnp
    import optax
    from flax import traverse_util

    from ltr_jax.models import heads, vit
    from ltr_jax.models.model import LTRModel
    self.jax = jax
    self.kind, dtype_name = row.rsplit("_", 1)
    dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
    state = dict(np.load(cfg["weights"]))
    adapt = self.kind == "adaptformer"
    visual, arch = jax_params(state, adapt)
    images, labels = batch_data(cfg)
    self.x, self.y = jax.device_put(images), jax.device_put(labels)
    if not adapt:
      model = vit.ViT(**arch, dtype=dtype)
      self.params = jax.device_put(visual)
      self.fn = jax.jit(lambda params, x: model.apply({"params": params}, x, train=False))
      del state, visual
      return
    backbone = vit.ViT(**arch, adaptformer_dim=bottleneck_of(cfg), dtype=dtype)
    model = LTRModel(backbone=backbone, num_classes=cfg["classes"], dtype=dtype,
                     head_spec=heads.HeadSpec(kind="cosine", scale=HEAD_SCALE, bias=False))
    flat = traverse_util.flatten_dict({"backbone": visual, "head": {"kernel": state[HEAD_KEY].T}}, sep="/")
    del state, visual
    is_trainable = lambda path: "/adapter/" in path or path.startswith("head/")  # noqa: E731
    self.trainable = jax.device_put({k: v for k, v in flat.items() if is_trainable(k)})
    self.frozen = jax.device_put({k: v for k, v in flat.items() if not is_trainable(k)})
    tx = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(LR, momentum=MOMENTUM))
    self.opt_state = jax.jit(tx.init)(self.trainable)
    self.num_trainable = sum(v.size for v in self.trainable.values())

    def loss_fn(trainable, frozen, x, y):
      params = traverse_util.unflatten_dict({**frozen, **trainable}, sep="/")
      logits, _ = model.apply({"params": params}, x, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(trainable, opt_state, frozen, x, y):
      loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, x, y)  # gradients of the trainable params only
      updates, opt_state = tx.update(grads, opt_state, trainable)
      return optax.apply_updates(trainable, updates), opt_state, loss

    self.step = jax.jit(step, donate_argnums=(0, 1))

  def call(self):
    if self.kind == "features":
      return self.fn(self.params, self.x)
    self.trainable, self.opt_state, loss = self.step(self.trainable, self.opt_state, self.frozen, self.x, self.y)
    return loss

  def sync(self, out) -> None:
    self.jax.block_until_ready(out)

  def value(self, out):
    return np.asarray(out, np.float32)

  def reset_device_peak(self) -> None:
    pass  # JAX's allocator has no reset: its peak since the start is read

  def device_peak_gb(self) -> float | None:
    if self.jax.default_backend() == "cpu":
      return None
    stats = self.jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None

  def settings(self) -> dict:
    d = self.jax.devices()[0]
    return {
        "jax": self.jax.__version__, "backend": self.jax.default_backend(), "device_kind": d.device_kind,
        "default_matmul_precision": str(self.jax.config.jax_default_matmul_precision),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
    }


def batch_data(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
  """Fixed N(0, 1) NHWC float32 images (stand-ins for normalised ones) and labels."""
  rng = np.random.default_rng(1)
  size = cfg["size"]
  return (rng.standard_normal((cfg["batch"], size, size, 3),
                              dtype=np.float32), rng.integers(0, cfg["classes"], cfg["batch"]).astype(np.int32))


# ---------------------------------------------------------------------------------------------------------------------
# The worker processes.


def _worker(conn, framework: str, row: str, cfg: dict) -> None:
  """Serves one (framework, row): 'setup' (build, warm up), ('window', n), 'finish', None (exit)."""
  if cfg["device"] == "gpu" and framework == "jax":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # beside the other processes on the GPU
  runner = None
  base = hwm_warmup = timed_calls = timed_faults = 0
  while True:
    msg = conn.recv()
    if msg is None:
      return
    try:
      if msg == "setup":
        t0 = time.perf_counter()
        if framework == "jax":
          import jax  # noqa: F401
        else:
          import torch  # noqa: F401
        imports = time.perf_counter() - t0
        t0 = time.perf_counter()
        runner = (JaxRunner if framework == "jax" else TorchRunner)(row, cfg)
        build = time.perf_counter() - t0
        import gc
        gc.collect()
        rss_built = status_kb("VmRSS")
        base = reset_peak()
        runner.reset_device_peak()
        calls, outputs = [], []
        for _ in range(cfg["warmup"]):
          t0 = time.perf_counter()
          out = runner.call()
          runner.sync(out)
          calls.append(time.perf_counter() - t0)
          outputs.append(runner.value(out))
        hwm_warmup = status_kb("VmHWM")
        reset_peak()
        conn.send({
            "import_seconds": imports, "build_seconds": build, "warmup_call_seconds": calls,
            "rss_after_build_gb": rss_built / 2**20,
            "outputs": [o.tolist() for o in outputs] if row.startswith("adaptformer") else outputs[0].tolist(),
            "trainable_params": getattr(runner, "num_trainable", None), "settings": runner.settings()
        })
      elif msg[0] == "window":
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        out = None
        for _ in range(msg[1]):
          out = runner.call()
        runner.sync(out)
        conn.send(time.perf_counter() - t0)
        timed_calls += msg[1]
        timed_faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
      elif msg == "finish":
        hwm = status_kb("VmHWM")
        conn.send({
            "peak_memory_gb": (hwm - base) / 2**20,
            "peak_memory_with_compile_gb": (max(hwm, hwm_warmup) - base) / 2**20,
            "peak_device_memory_gb": runner.device_peak_gb(), "minor_page_faults_per_call": timed_faults / timed_calls
        })
      elif msg[0] == "ops":
        conn.send(op_seconds(framework, msg[1], cfg))
    except BaseException as e:  # noqa: BLE001  The parent reports it.
      conn.send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})


class Worker:
  """A spawned process serving one (framework, row)."""

  def __init__(self, framework: str, row: str, cfg: dict):
    ctx = multiprocessing.get_context("spawn")
    self.name = f"{framework}:{row}"
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_worker, args=(child, framework, row, cfg), daemon=True)
    self.proc.start()

  def ask(self, msg):
    self.conn.send(msg)
    out = self.conn.recv()
    if isinstance(out, dict) and "error" in out:
      raise RuntimeError(f"{self.name}: {out['error']}\n{out['traceback']}")
    return out

  def close(self) -> None:
    try:
      self.conn.send(None)
    except (OSError, BrokenPipeError):
      pass
    self.proc.join(30)
    if self.proc.is_alive():
      self.proc.kill()
      self.proc.join(5)


# ---------------------------------------------------------------------------------------------------------------------
# The matrix products of one forward pass.


def forward_ops(cfg: dict) -> dict[str, tuple]:
  """name -> (kind, shapes, calls per forward pass) of the ViT's products (kind 'linear': x [rows, in] times a
  weight [in, out], as each framework's linear layer holds it; 'bmm': a batched product, one of the attention's two)
  and of its whole attention (kind 'attention', shapes: q = k = v [batch, tokens, heads, head_dim])."""
  width, depth, heads = cfg["width"], cfg["depth"], cfg["heads"]
  tokens = (cfg["size"] // cfg["patch"])**2 + 1
  rows, head_dim = cfg["batch"] * tokens, width // heads
  bh = cfg["batch"] * heads
  return {
      "patch_embed": ("linear", ((cfg["batch"] * (tokens - 1), 3 * cfg["patch"]**2), (3 * cfg["patch"]**2, width)), 1),
      "q, k or v": ("linear", ((rows, width), (width, width)), 3 * depth),
      "out_proj": ("linear", ((rows, width), (width, width)), depth),
      "mlp c_fc": ("linear", ((rows, width), (width, 4 * width)), depth),
      "mlp c_proj": ("linear", ((rows, 4 * width), (4 * width, width)), depth),
      "attention q k^T": ("bmm", ((bh, tokens, head_dim), (bh, head_dim, tokens)), depth),
      "attention p v": ("bmm", ((bh, tokens, tokens), (bh, tokens, head_dim)), depth),
      "attention, whole": ("attention", ((cfg["batch"], tokens, heads, head_dim),), depth),
  }


def _median_call(call, sync) -> float:
  sync(call())
  times = []
  for _ in range(OP_REPEATS):
    t0 = time.perf_counter()
    sync(call())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def op_seconds(framework: str, dtype_name: str, cfg: dict) -> dict[str, float]:
  """Median seconds of each op of `forward_ops` (5 calls after one) in one framework and dtype: XLA's dot and
  the model's attention (ltr_jax.models.vit.attention) under jax.jit; torch's F.linear (weight [out, in], as timm's layers), torch.matmul and
  F.scaled_dot_product_attention (timm's fused attention)."""
  rng = np.random.default_rng(0)
  normal = lambda shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
  out = {}
  if framework == "jax":
    import jax
    import jax.numpy as jnp
    dtype = jnp.bfloat16 if dtype_name == "bfloat16" else jnp.float32
    from ltr_jax.models import vit
    dot, attention = jax.jit(lambda a, b: a @ b), jax.jit(lambda q: vit.attention(q, q, q))
    for name, (kind, shapes, _) in forward_ops(cfg).items():
      args = [jax.device_put(normal(shape)).astype(dtype) for shape in shapes]
      fn = attention if kind == "attention" else dot
      out[name] = _median_call(lambda fn=fn, args=args: fn(*args), jax.block_until_ready)
    return out
  import torch
  import torch.nn.functional as F
  cuda = cfg["device"] == "gpu"
  if not cuda:
    torch.set_num_threads(len(os.sched_getaffinity(0)))
  torch.backends.cuda.matmul.allow_tf32 = True  # as in TorchRunner
  dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
  sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)
  for name, (kind, shapes, _) in forward_ops(cfg).items():
    if kind == "linear":
      args = [normal(shapes[0]), normal(shapes[1][::-1])]  # the weight [out, in]
    elif kind == "attention":
      b, t, h, d = shapes[0]
      args = [normal((b, h, t, d))]
    else:
      args = [normal(shape) for shape in shapes]
    args = [torch.from_numpy(a).to("cuda" if cuda else "cpu", dtype) for a in args]
    fn = {"linear": F.linear, "bmm": torch.matmul, "attention": lambda q: F.scaled_dot_product_attention(q, q, q)}[kind]
    with torch.inference_mode():
      out[name] = _median_call(lambda fn=fn, args=args: fn(*args), sync)
  return out


def forward_macs(cfg: dict) -> float:
  """Multiply-adds of one image's forward pass through the ViT: its products (`forward_ops`, the attention's two
  batched ones counted, not the whole attention)."""
  products = [(shapes, calls) for kind, shapes, calls in forward_ops(cfg).values() if kind != "attention"]
  return sum(math.prod(sa) * sb[-1] * calls for (sa, sb), calls in products) / cfg["batch"]


# ---------------------------------------------------------------------------------------------------------------------


def model_config(args, weights: str) -> dict:
  """What every worker needs: sizes, the weights file, the timing settings."""
  arch = TINY_ARCH if args.tiny else {}
  sizes = dict(size=arch.get("img_size", 224), patch=arch.get("patch_size", 16), width=arch.get("embed_dim", 768),
               depth=arch.get("depth", 12), heads=arch.get("num_heads", 12))
  return dict(arch=arch, device=args.device, weights=weights, batch=args.batch or (4 if args.tiny else 8),
              classes=10 if args.tiny else 1000, warmup=args.warmup, **sizes)


def run(args) -> dict:
  """Makes the weights (unless --weights names a file), then times every row; see the module docstring."""
  if args.weights:
    return _run(args, args.weights)
  with tempfile.TemporaryDirectory(prefix="ltr_vit_") as folder:
    return _run(args, os.path.join(folder, "weights.npz"))


def _run(args, weights: str) -> dict:
  rows = [r for r in args.rows.split(",") if r]
  cfg = model_config(args, weights)
  ctx = multiprocessing.get_context("spawn")
  if not os.path.exists(weights):
    t0 = time.perf_counter()
    p = ctx.Process(target=make_weights, args=(weights, cfg))
    p.start()
    p.join()
    if p.exitcode:
      sys.exit(f"making the weights failed (exit {p.exitcode})")
    print(f"weights: {weights} ({os.path.getsize(weights) / 2**20:.0f} MiB, {time.perf_counter() - t0:.1f} s)",
          flush=True)
  batch, steps = cfg["batch"], args.steps
  workers: dict[tuple[str, str], Worker] = {}
  setup: dict[tuple[str, str], dict] = {}
  try:
    for row in rows:
      for fw in FRAMEWORKS:
        w = workers[(fw, row)] = Worker(fw, row, cfg)
        setup[(fw, row)] = w.ask("setup")
        s = setup[(fw, row)]
        print(
            f"{w.name:28s} built in {s['build_seconds']:.1f} s, warm-up calls " +
            ", ".join(f"{t:.2f}" for t in s["warmup_call_seconds"]) + " s", flush=True)
    windows: dict[tuple[str, str], list[float]] = {k: [] for k in workers}
    for r in range(args.windows):
      for row in rows:
        for fw in FRAMEWORKS:
          windows[(fw, row)].append(workers[(fw, row)].ask(("window", steps)))
      print(
          f"round {r + 1}/{args.windows}: " +
          ", ".join(f"{fw}:{row} {batch * steps / t[-1]:.2f} img/s" for (fw, row), t in windows.items()), flush=True)
    memory = {k: w.ask("finish") for k, w in workers.items()}
  finally:
    for w in workers.values():
      w.close()

  results = {}
  for row in rows:
    j, t = (statistics.median(windows[(fw, row)]) for fw in FRAMEWORKS)
    entry = {
        "images_per_second": {fw: batch * steps / statistics.median(windows[(fw, row)]) for fw in FRAMEWORKS},
        "ratio_jax_over_torch": j / t,
        "ratio_per_round": [a / b for a, b in zip(windows[("jax", row)], windows[("torch", row)])],
        "window_seconds": {fw: windows[(fw, row)] for fw in FRAMEWORKS},
    }
    for fw in FRAMEWORKS:
      s, call = setup[(fw, row)], statistics.median(windows[(fw, row)]) / steps
      entry.setdefault("first_call_seconds", {})[fw] = s["warmup_call_seconds"][0]
      entry.setdefault("compile_seconds", {})[fw] = s["warmup_call_seconds"][0] - call
      entry.setdefault("warmup_call_seconds", {})[fw] = s["warmup_call_seconds"]
      entry.setdefault("build_seconds", {})[fw] = s["build_seconds"]
      entry.setdefault("rss_after_build_gb", {})[fw] = s["rss_after_build_gb"]
      entry.setdefault("settings", {})[fw] = s["settings"]
      for key in ("peak_memory_gb", "peak_memory_with_compile_gb", "peak_device_memory_gb",
                  "minor_page_faults_per_call"):
        entry.setdefault(key, {})[fw] = memory[(fw, row)][key]
    out_j, out_t = setup[("jax", row)]["outputs"], setup[("torch", row)]["outputs"]
    if row.startswith("features"):
      a, b = np.asarray(out_j, np.float64), np.asarray(out_t, np.float64)
      entry["max_abs_feature_difference"] = float(np.max(np.abs(a - b)))
      entry["max_abs_feature"] = float(np.max(np.abs(b)))
    else:
      entry["warmup_losses"] = {"jax": out_j, "torch": out_t}
      entry["trainable_params"] = {fw: setup[(fw, row)]["trainable_params"] for fw in FRAMEWORKS}
    results[row] = entry

  ops = {}
  if args.ops:
    for dtype in sorted({r.rsplit("_", 1)[1] for r in rows}, reverse=True):
      for fw in FRAMEWORKS:
        w = Worker(fw, "ops", cfg)
        try:
          ops.setdefault(dtype, {})[fw] = w.ask(("ops", dtype))
        finally:
          w.close()
  return {"rows": results, "ops": ops, "config": cfg}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--json", help="write the results here")
  p.add_argument(
      "--rows", help=f"comma-separated, of {','.join(ROWS)} (default on the CPU: {','.join(CPU_ROWS)}; "
      "on a GPU: all)")
  p.add_argument("--batch", type=int, default=0, help="images per batch (default 8; --tiny 4)")
  p.add_argument("--steps", type=int, default=2, help="calls per timing window")
  p.add_argument("--windows", type=int, default=7, help="timing rounds (median reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed calls first (the first compiles)")
  p.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="gpu: PyTorch on CUDA (JAX: its default)")
  p.add_argument("--tiny", action="store_true", help="a 2-block ViT of width 128 on 32x32 images (quick checks)")
  p.add_argument("--ops", action=argparse.BooleanOptionalAction, default=None,
                 help="time the forward pass's products and attention in both frameworks (default: on the CPU)")
  p.add_argument("--weights", help="an .npz of weights to reuse (made there first if missing)")
  p.add_argument("--idle-load", type=float, default=1.0, help="wait until the 1-minute load average is below this")
  p.add_argument("--max-wait", type=float, default=2400, help="seconds to wait for that at most (0: do not wait)")
  args = p.parse_args()
  args.rows = args.rows or ",".join(ROWS if args.device == "gpu" else CPU_ROWS)
  unknown = [r for r in args.rows.split(",") if r not in ROWS]
  if unknown:
    p.error(f"unknown rows {unknown}; choose from {','.join(ROWS)}")
  if args.ops is None:
    args.ops = args.device == "cpu"

  idle = wait_for_idle(args.idle_load, args.max_wait) if args.max_wait > 0 else {"note": "no wait (--max-wait 0)"}
  load_before = load_average()
  print(f"load average before: {load_before}", flush=True)
  start = time.monotonic()
  out = run(args)
  load_after = load_average()
  cfg, rows = out["config"], out["rows"]
  macs = forward_macs(cfg)
  result = {
      "what": "ViT pooled features and LIFT's AdaptFormer step: ltr_jax (jax.jit) beside PyTorch (timm)",
      "model": TIMM_NAME + (f" at tiny size {TINY_ARCH}" if args.tiny else ""),
      "image_size": cfg["size"],
      "batch": cfg["batch"],
      "classes": cfg["classes"],
      "adaptformer_bottleneck": bottleneck_of(cfg),
      "forward_gmacs_per_image": macs / 1e9,
      "images_per_second": {row: e["images_per_second"] for row, e in rows.items()},
      "ratio_jax_over_torch": {row: e["ratio_jax_over_torch"] for row, e in rows.items()},
      "peak_memory_gb": {row: e["peak_memory_gb"] for row, e in rows.items()},
      "peak_memory_with_compile_gb": {row: e["peak_memory_with_compile_gb"] for row, e in rows.items()},
      "compile_seconds": {row: e["compile_seconds"] for row, e in rows.items()},
      "rows": rows,
      "config": {k: v for k, v in cfg.items() if k != "weights"},
      "op_seconds": op_summary(out["ops"], cfg, rows),
      "timing": (f"{args.warmup} warm-up calls per process (the first compiles), then the median of {args.windows} "
                 f"interleaved rounds of {args.steps} calls per (row, framework)"),
      "memory": ("per process, peak RSS (VmHWM) above the RSS once the model, weights and batch are built: "
                 "peak_memory_gb over the timed windows, peak_memory_with_compile_gb over the warm-up (compilation) "
                 "too"),
      "machine": machine(*_versions()),
      "device": args.device,
      "idle_wait": idle,
      "load_average": {"before": load_before, "after": load_after, "note": "1/5/15-minute load averages"},
      "seconds": round(time.monotonic() - start, 1),
  }
  print_table(result)
  if args.json:
    write_json(args.json, result)


def op_summary(ops: dict, cfg: dict, rows: dict) -> dict:
  """Per dtype: each op's shapes, calls per forward pass and seconds per call in both frameworks; per pass, the
  linear layers' seconds and rate, the whole attention's seconds, their sum, and the forward pass measured (the
  features row) beside it: the rest is LayerNorm, GELU, the residual adds and the like."""
  out = {}
  spec = forward_ops(cfg)
  linear = [(shapes, calls) for kind, shapes, calls in spec.values() if kind == "linear"]
  linear_flops = 2 * sum(math.prod(sa) * sb[-1] * calls for (sa, sb), calls in linear)
  for dtype, fws in ops.items():
    entry = {
        "ops": {
            name: {
                "kind": kind, "shapes": [list(x)
                                         for x in shapes], "calls_per_pass": calls,
                "seconds": {fw: fws[fw][name]
                            for fw in fws}, "ratio_jax_over_torch": fws["jax"][name] / fws["torch"][name]
            } for name, (kind, shapes, calls) in spec.items()
        }
    }
    per_pass = {
        kind: {fw: sum(fws[fw][n] * calls for n, (k, _, calls) in spec.items() if k == kind) for fw in fws}
        for kind in ("linear", "attention")
    }
    entry["seconds_per_pass"] = {
        "linear layers": per_pass["linear"], "attention": per_pass["attention"],
        "linear + attention": {fw: per_pass["linear"][fw] + per_pass["attention"][fw] for fw in fws}
    }
    row = rows.get(f"features_{dtype}")
    if row:
      entry["seconds_per_pass"]["forward pass measured"] = {
          fw: cfg["batch"] / row["images_per_second"][fw] for fw in fws
      }
    entry["linear_gflops_per_second"] = {fw: linear_flops / t / 1e9 for fw, t in per_pass["linear"].items()}
    out[dtype] = entry
  return out


def _versions() -> list[str]:
  import importlib.metadata as md
  out = []
  for name in ("jax", "jaxlib", "flax", "optax", "torch", "timm"):
    try:
      out.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
      pass
  return out


def print_table(result: dict) -> None:
  rows = result["rows"]
  print(f"\n{result['model']}, {result['image_size']}x{result['image_size']}, batch {result['batch']}; "
        f"{result['timing']}")
  print("| row | ltr_jax img/s | PyTorch img/s | ltr_jax / PyTorch time | ratio per round | peak GB jax / torch "
        "(with compilation) | first call s jax / torch |")
  print("|---|---:|---:|---:|---|---|---|")
  for row, e in rows.items():
    ips, pk, sp = e["images_per_second"], e["peak_memory_gb"], e["peak_memory_with_compile_gb"]
    fc = e["first_call_seconds"]
    print(f"| {row} | {ips['jax']:.2f} | {ips['torch']:.2f} | {e['ratio_jax_over_torch']:.2f} | "
          f"{' '.join(f'{x:.2f}' for x in e['ratio_per_round'])} | {pk['jax']:.2f} / {pk['torch']:.2f} "
          f"({sp['jax']:.2f} / {sp['torch']:.2f}) | {fc['jax']:.1f} / {fc['torch']:.1f} |")
  for row, e in rows.items():
    if "max_abs_feature_difference" in e:
      print(f"{row}: largest feature difference {e['max_abs_feature_difference']:.2e} (features up to "
            f"{e['max_abs_feature']:.2f})")
    else:
      print(f"{row}: warm-up losses jax {[round(x, 5) for x in e['warmup_losses']['jax']]}, torch "
            f"{[round(x, 5) for x in e['warmup_losses']['torch']]}; trainable params {e['trainable_params']}")
  for dtype, m in result["op_seconds"].items():
    print(f"\nthe ops of one forward pass, {dtype}: ms per call (calls per pass), jax / torch (ratio)")
    for name, e in m["ops"].items():
      shapes = " @ ".join(str(tuple(x)) for x in e["shapes"])
      sec = e["seconds"]
      print(
          f"  {name:17s} {shapes:>32s} x{e['calls_per_pass']:<3d} {1e3 * sec['jax']:8.2f} / {1e3 * sec['torch']:8.2f} "
          f"({e['ratio_jax_over_torch']:.2f})")
    for name, t in m["seconds_per_pass"].items():
      print(f"  per pass, {name}: jax {t['jax']:.3f} s, torch {t['torch']:.3f} s ({t['jax'] / t['torch']:.2f})")
    g = m["linear_gflops_per_second"]
    print(f"  linear layers: jax {g['jax']:.0f} GFLOP/s, torch {g['torch']:.0f} GFLOP/s")
  la = result["load_average"]
  print(f"\nload average before {la['before']}, after {la['after']}; {result['idle_wait'].get('note')}")


if __name__ == "__main__":
  main()
