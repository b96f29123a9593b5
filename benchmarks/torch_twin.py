"""The quickstart recipe in plain PyTorch: evidence that ltr_jax's stage 1 and stage 2 are the standard ones.

Every hyper-parameter is read from the config (`--config`, default configs/quickstart.py), and the data are
ltr_jax's own split (`ltr_jax.data.datasets.build_splits(config.data)`: the same long-tailed Fashion-MNIST
training subset, validation and test records); loading is not what is compared. Per seed:

Stage 1 (as a torchvision-style training script): instance-balanced sampling as a shuffled pass per epoch with
drop_last (a fresh torch.randperm, N // batch steps), pad 4 + random crop + horizontal flip on the pixels, then
(x / 255 - data.mean) / data.std; the twin model of benchmarks/torch_models.py (BatchNorm momentum 0.1, torch's
default); cross-entropy; torch.optim.SGD(momentum, weight_decay, nesterov from config.train); per step: linear
warm-up for train.warmup_epochs from peak / warmup_steps to peak = base_lr * batch / 256, then cosine to 0 over
the remaining steps (the formula of ltr_jax.schedules.learning_rate_schedule).

Stage 2, each method from a copy of that stage-1 model with the hyper-parameters of its config subtree
config.stage2.<name>: SGD momentum 0.9, the lr per step cosine to 0 (ltr_jax's schedule; the sources step a
per-epoch cosine before each epoch, a deviation ltr_jax's README names), N // batch steps per epoch.
- Joint: the stage-1 head.
- cRT, as facebookresearch/classifier-balancing's run_networks.py runs it (f162ade): the backbone's parameters
  set requires_grad=False (`fix: true`, lines 115-120), `model.train()` on every network each epoch (lines
  247-249: the frozen backbone's BatchNorm normalises with batch statistics and re-estimates its running ones),
  a new nn.Linear head (lines 678-684), the reference's ClassAwareSampler (data/ClassAwareSampler.py: classes in
  random cycles, 4 consecutive images of each visited class, its iterators carried across epochs), the stage-1
  augmentation; the test features in eval() with the re-estimated statistics.
- LWS, the same way (cls_lws.yaml's models/TauNormClassifier.py): the stage-1 head frozen, per-class scales s
  (init 1) on its logits, s_j (z w_j + b_j), with weight decay on s.
- WB, as ShadeAlsha/LTR-weight-balancing runs its stage 2 (e89f292, demo2_second-stage-training.py and
  utils/trainval.py): only the stage-1 head trains (fc weight and bias, lines 324-329), `model.train()` every
  epoch, a shuffled pass over the long-tailed set, the stage-1 augmentation, Cui et al.'s class-balanced weights
  on the loss the config names (cb_softmax_bce: the binary cross-entropy of the softmax, utils/class_balanced_
  loss.py; cb_ce: softmax cross-entropy), weight decay, and MaxNorm: each class vector projected onto the ball
  of radius min + t (max - min) of the stage-1 class norms (utils/regularizers.py) after every step or every
  epoch, as config.stage2.wb.project_every says.
- On the cached features (eval mode, no augmentation): cRT and LWS with i.i.d. class-balanced draws, WB with
  shuffled passes: ltr_jax's "cached features" variants.
- tau-norm: w_j / ||w_j||^tau, bias dropped, tau over config.stage2.tau_norm.taus chosen by All on validation.
Test All / Many / Medium / Few: mean per-class accuracy of each group (ltr_jax.metrics, groups of
ltr_jax.data.longtail.group_of_classes). The table gives mean ± sample standard deviation over --seeds;
--ltr_jax_workdirs (run directories holding ltr_jax's results.json) adds ltr_jax's rows and whether each All
mean lies within 2 standard deviations of the twin's.

  python benchmarks/torch_twin.py --seeds 0,1,2 --json /tmp/torch_twin.json \
      --ltr_jax_workdirs /tmp/qs0,/tmp/qs1,/tmp/qs2
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import random
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import base  # noqa: E402
from ltr_jax import metrics  # noqa: E402
from ltr_jax.data import datasets  # noqa: E402
from common import machine, write_json  # noqa: E402
from torch_models import build_torch_model  # noqa: E402

METHODS = ("joint", "crt", "crt_cached", "tau_norm", "lws", "lws_cached", "wb", "wb_cached")
METHOD_LABELS = {m: base.get_config().stage2[m].label for m in METHODS}
COLUMNS = ("all", "many", "medium", "few")


def load_config(path: str):
  """get_config() of an experiment file such as configs/quickstart.py."""
  spec = importlib.util.spec_from_file_location("twin_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def cosine_lr(peak: float, step: int, steps: int) -> float:
  """optax.cosine_decay_schedule(peak, steps) at `step`: peak at 0, 0 from `steps` on."""
  return peak * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def stage1_lr(train, steps_per_epoch: int, step: int) -> float:
  """The lr of update `step` (0-based) of ltr_jax.schedules.learning_rate_schedule."""
  peak = train.base_lr * train.batch_size / 256
  total = train.epochs * steps_per_epoch
  warmup = int(round(train.warmup_epochs * steps_per_epoch))
  if step < warmup:
    return peak / warmup + (peak - peak / warmup) * step / warmup
  return cosine_lr(peak, step - warmup, max(1, total - warmup))


def as_tensor(source) -> tuple[torch.Tensor, torch.Tensor]:
  """Images uint8 NCHW and labels int64 of every record of a split."""
  images = np.stack([source[i] for i in range(len(source))])
  return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.asarray(source.labels))


def normalize(images: torch.Tensor, data) -> torch.Tensor:
  """uint8 (or float pixel values) -> (x / 255 - mean) / std, per channel."""
  mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
  std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
  return (images.float() / 255 - mean) / std


def pad_crop_flip(images: torch.Tensor, size: int, pad: int, gen: torch.Generator) -> torch.Tensor:
  """torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip() on a batch, each image its own draw."""
  b, c, h, w = images.shape
  padded = F.pad(images, (pad, pad, pad, pad))
  ys = torch.randint(0, h + 2 * pad - size + 1, (b,), generator=gen)
  xs = torch.randint(0, w + 2 * pad - size + 1, (b,), generator=gen)
  rows = ys[:, None] + torch.arange(size)
  cols = xs[:, None] + torch.arange(size)
  cols = torch.where(torch.rand(b, generator=gen)[:, None] < 0.5, cols.flip(1), cols)
  return padded[torch.arange(b)[:, None, None, None],
                torch.arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def train_stage1(config, images: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int):
  """The stage-1 model after config.train.epochs of instance-balanced SGD."""
  train, data = config.train, config.data
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed)
  model = build_torch_model(config.model.name, num_classes, in_channels=images.shape[1])
  opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=train.momentum, weight_decay=train.weight_decay,
                        nesterov=train.nesterov)
  steps_per_epoch = max(1, len(labels) // train.batch_size)
  model.train()
  step = 0
  for epoch in range(train.epochs):
    order = torch.randperm(len(labels), generator=gen)
    for k in range(steps_per_epoch):
      batch = order[k * train.batch_size:(k + 1) * train.batch_size]
      x = normalize(pad_crop_flip(images[batch].float(), data.image_size, 4, gen), data)
      for group in opt.param_groups:
        group["lr"] = stage1_lr(train, steps_per_epoch, step)
      loss = F.cross_entropy(model(x), labels[batch])
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      step += 1
    if not torch.isfinite(loss):
      raise SystemExit(f"stage 1 diverged: loss {loss.item()} in epoch {epoch}")
  return model.eval()


@torch.no_grad()
def features(model, images: torch.Tensor, data, batch: int) -> torch.Tensor:
  return torch.cat([model.features(normalize(images[i:i + batch], data)) for i in range(0, len(images), batch)])


def iid_class_balanced(labels: torch.Tensor, num_classes: int, gen: torch.Generator):
  """Endless i.i.d. indices: a class uniformly, then one of its records uniformly (ltr_jax's class-balanced
  draws, as its cached-feature variants use them)."""
  order = torch.argsort(labels, stable=True)
  counts = torch.bincount(labels, minlength=num_classes)
  starts = torch.cumsum(counts, 0) - counts
  while True:
    classes = torch.randint(0, num_classes, (4096,), generator=gen)
    offsets = (torch.rand(4096, generator=gen, dtype=torch.float64) * counts[classes]).long()
    yield from order[starts[classes] + offsets].tolist()


def class_aware_sampler(labels: torch.Tensor, num_classes: int, seed: int, num_samples_cls: int = 4):
  """The reference's ClassAwareSampler as an endless stream of indices: a class from a RandomCycleIter over the
  classes (each pass a fresh shuffle), then num_samples_cls consecutive images from that class's own
  RandomCycleIter (which reshuffles when it wraps, also inside a tuple); the iterators persist across epochs, as
  the sampler object does in the reference."""
  rng = random.Random(seed)

  def cycle(items):
    items = list(items)
    while True:
      rng.shuffle(items)
      yield from items

  per_class = [cycle(torch.nonzero(labels == c).flatten().tolist()) for c in range(num_classes)]
  classes = cycle(range(num_classes))
  while True:
    images = per_class[next(classes)]
    yield from [next(images) for _ in range(num_samples_cls)]


def shuffled_passes(n: int, gen: torch.Generator):
  """A fresh torch.randperm(n) per pass (DataLoader(shuffle=True)), endless."""
  while True:
    yield from torch.randperm(n, generator=gen).tolist()


def class_balanced_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
  """Cui et al.: (1 - beta) / (1 - beta^n_j), normalised to sum to C (utils/class_balanced_loss.py lines 73-75)."""
  w = (1.0 - beta) / (1.0 - beta**counts.double())
  return (w / w.sum() * len(counts)).float()


def wb_loss(hyper, counts: torch.Tensor):
  """WB's class-balanced loss of (logits, labels): 'cb_softmax_bce' is its CB_loss(..., 'softmax'):
  F.binary_cross_entropy(softmax, one_hot, weight=w_y) averaged over B x C; 'cb_ce' the weighted softmax CE."""
  weights = class_balanced_weights(counts, hyper.cb_beta)

  def loss(logits, y):
    w = weights[y]
    if hyper.loss == "cb_softmax_bce":
      one_hot = F.one_hot(y, logits.shape[1]).float()
      return F.binary_cross_entropy(logits.softmax(1), one_hot, weight=w[:, None].expand_as(one_hot))
    return (w * F.cross_entropy(logits, y, reduction="none")).mean()

  return loss


def maxnorm(weight: torch.Tensor, thresh: float):
  """MaxNorm_via_PGD (utils/regularizers.py): the radius min + thresh (max - min) of the norms of the rows (class
  vectors) of `weight` [C, d] now; a function that projects the rows above it back onto the ball, in place."""
  norms = weight.detach().norm(dim=1)
  radius = norms.min() + thresh * (norms.max() - norms.min())

  @torch.no_grad()
  def project():
    norms = weight.norm(dim=1, keepdim=True)
    weight.mul_(torch.where(norms > radius, radius / norms, torch.ones_like(norms)))

  return project


def fit(params: list[torch.Tensor], forward, indices, labels: torch.Tensor, hyper, loss_fn=F.cross_entropy,
        project=None, project_every: str = "step", on_epoch=None) -> None:
  """SGD (momentum 0.9, hyper.weight_decay, lr hyper.lr cosine to 0 per step) of `params` for hyper.epochs of
  N // hyper.batch_size steps, batches drawn from the index stream `indices`; forward(batch) gives the logits;
  `project` after every step or every epoch; on_epoch() at each epoch's start."""
  steps_per_epoch = max(1, len(labels) // hyper.batch_size)
  steps = hyper.epochs * steps_per_epoch
  opt = torch.optim.SGD(params, lr=hyper.lr, momentum=0.9, weight_decay=hyper.weight_decay)
  for epoch in range(hyper.epochs):
    if on_epoch is not None:
      on_epoch()
    for k in range(steps_per_epoch):
      for group in opt.param_groups:
        group["lr"] = cosine_lr(hyper.lr, epoch * steps_per_epoch + k, steps)
      batch = torch.tensor([next(indices) for _ in range(hyper.batch_size)])
      loss = loss_fn(forward(batch), labels[batch])
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      if project is not None and project_every == "step":
        project()
    if project is not None and project_every == "epoch":
      project()


def through_backbone(stage1, head, params: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor, data, hyper,
                     indices, gen: torch.Generator, loss_fn=F.cross_entropy, project=None, project_every: str = "step"):
  """A copy of `stage1` with every parameter frozen (requires_grad=False), put in train() mode each epoch
  (BatchNorm on batch statistics, its running statistics re-estimated), on augmented images through `head` (a
  function of the features); only `params` train. Returns the model in eval() mode."""
  model = copy.deepcopy(stage1)
  for p in model.parameters():
    p.requires_grad_(False)

  def forward(batch):
    return head(model.features(normalize(pad_crop_flip(images[batch].float(), data.image_size, 4, gen), data)))

  fit(params, forward, indices, labels, hyper, loss_fn, project, project_every, on_epoch=model.train)
  return model.eval()


def groups(predictions: torch.Tensor, labels: torch.Tensor, splits) -> dict[str, float]:
  return metrics.groups_of(predictions.numpy(), labels.numpy(), splits)


def run_seed(config, splits, tensors: dict, seed: int) -> dict:
  """{method: test groups (+ tau)}, and the seconds of each stage, for one seed."""
  s2, data = config.stage2, config.data
  start = time.perf_counter()
  images, labels = tensors["train"]
  stage1 = train_stage1(config, images, labels, splits.num_classes, seed)
  stage1_seconds = time.perf_counter() - start
  start = time.perf_counter()
  C = splits.num_classes
  z = {split: features(stage1, tensors[split][0], data, s2.batch_size) for split in tensors}
  y = {split: tensors[split][1] for split in tensors}
  W, b = stage1.fc.weight.detach(), stage1.fc.bias.detach()  # [C, d], [C]
  gen = torch.Generator().manual_seed(seed)
  counts = torch.bincount(labels, minlength=C)

  @torch.no_grad()
  def test_groups(head, model=None):
    """Test groups of `head` on the test features of `model` (default: stage 1's, cached)."""
    test = z["test"] if model is None else features(model, tensors["test"][0], data, s2.batch_size)
    return groups(head(test).argmax(1), y["test"], splits)

  results = {"joint": test_groups(lambda x: x @ W.T + b)}

  torch.manual_seed(seed)
  head = torch.nn.Linear(W.shape[1], C)
  model = through_backbone(stage1, head, list(head.parameters()), images, labels, data, s2.crt,
                           class_aware_sampler(labels, C, seed), gen)
  results["crt"] = test_groups(head, model)
  torch.manual_seed(seed)
  head = torch.nn.Linear(W.shape[1], C)
  fit(list(head.parameters()), lambda batch: head(z["train"][batch]), iid_class_balanced(labels, C, gen), labels,
      s2.crt_cached)
  results["crt_cached"] = test_groups(head)

  norms = W.norm(dim=1)
  taus = s2.tau_norm.taus
  val_all = [groups((z["val"] @ (W / norms[:, None]**tau).T).argmax(1), y["val"], splits)["all"] for tau in taus]
  tau = float(taus[int(np.argmax(val_all))])
  results["tau_norm"] = {**test_groups(lambda x: x @ (W / norms[:, None]**tau).T), "tau": tau}

  scales = torch.ones(C, requires_grad=True)
  model = through_backbone(stage1, lambda x: scales * (x @ W.T + b), [scales], images, labels, data, s2.lws,
                           class_aware_sampler(labels, C, seed), gen)
  results["lws"] = test_groups(lambda x: scales * (x @ W.T + b), model)
  cached = torch.ones(C, requires_grad=True)
  fit([cached], lambda batch: cached * (z["train"][batch] @ W.T + b), iid_class_balanced(labels, C, gen), labels,
      s2.lws_cached)
  results["lws_cached"] = test_groups(lambda x: cached * (x @ W.T + b))

  head = copy.deepcopy(stage1.fc)
  model = through_backbone(stage1, head, list(head.parameters()), images, labels, data, s2.wb,
                           shuffled_passes(len(labels), gen), gen, wb_loss(s2.wb, counts),
                           maxnorm(head.weight, s2.wb.max_norm), s2.wb.project_every)
  results["wb"] = test_groups(head, model)
  head = copy.deepcopy(stage1.fc)
  fit(list(head.parameters()), lambda batch: head(z["train"][batch]), shuffled_passes(len(labels),
                                                                                      gen), labels, s2.wb_cached,
      wb_loss(s2.wb_cached, counts), maxnorm(head.weight, s2.wb_cached.max_norm), s2.wb_cached.project_every)
  results["wb_cached"] = test_groups(head)
  return {"methods": results, "stage1_seconds": stage1_seconds, "stage2_seconds": time.perf_counter() - start}


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (nan for one value)."""
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def summary(per_seed: list[dict]) -> dict:
  """{method: {column: [mean, std]}} over seeds."""
  return {m: {c: list(mean_std([r[m][c] for r in per_seed])) for c in COLUMNS} for m in METHODS}


def read_ltr_jax(workdirs: list[str]) -> list[dict]:
  """ltr_jax's test groups per method, one dict per run directory's results.json."""
  runs = []
  for workdir in workdirs:
    path = os.path.join(workdir, "results.json")
    with open(path) as f:
      methods = json.load(f)["methods"]
    missing = [m for m in METHODS if m not in methods]
    if missing:
      raise SystemExit(f"{path}: no results for {missing} (config key stage2.methods)")
    runs.append(methods)
  return runs


def welch_t(a: list[float], b: list[float]) -> float:
  """Welch's t statistic of two samples' means (nan with fewer than two values in either)."""
  if len(a) < 2 or len(b) < 2:
    return float("nan")
  spread = statistics.variance(a) / len(a) + statistics.variance(b) / len(b)
  return (statistics.mean(a) - statistics.mean(b)) / math.sqrt(spread) if spread else float("nan")


def table(twin_runs: list[dict], ltr_runs: list[dict] | None) -> tuple[list[str], dict[str, bool | None]]:
  """Markdown rows of All and Few per method (mean ± sample sd over seeds); with ltr_jax's runs, whether ltr_jax's
  All mean lies within 2 sd of the twin's and Welch's t of the two sets of All."""
  twin, ltr = summary(twin_runs), summary(ltr_runs) if ltr_runs else None

  def cell(stats: list[float]) -> str:
    return f"{stats[0]:.2f}" if math.isnan(stats[1]) else f"{stats[0]:.2f} ± {stats[1]:.2f}"

  header = "| method | PyTorch All | PyTorch Few |"
  if ltr:
    header += " ltr_jax All | ltr_jax Few | ltr_jax's All within 2 sd of PyTorch's | Welch's t (All) |"
  lines = [header, "|---|" + "---:|" * (header.count("|") - 2)]
  within = {}
  for m in METHODS:
    row = f"| {METHOD_LABELS[m]} | {cell(twin[m]['all'])} | {cell(twin[m]['few'])} |"
    if ltr:
      mean, sd = twin[m]["all"]
      within[m] = None if math.isnan(sd) else bool(abs(ltr[m]["all"][0] - mean) <= 2 * sd)
      verdict = "n/a (one twin seed)" if within[m] is None else "yes" if within[m] else "NO"
      t = welch_t([r[m]["all"] for r in ltr_runs], [r[m]["all"] for r in twin_runs])
      row += f" {cell(ltr[m]['all'])} | {cell(ltr[m]['few'])} | {verdict} | {t:.2f} |"
    lines.append(row)
  return lines, within


def check_config(config) -> None:
  """The twin implements the quickstart's kind of recipe; anything else would be compared unfairly."""
  wanted = {
      "train.sampling": ("instance",), "train.loss": ("ce",), "data.train_transform": ("pad_crop_flip",),
      "data.eval_transform": ("identity",), "stage2.crt.sampling": ("class",), "stage2.lws.sampling": ("class",),
      "stage2.crt.frozen": ((base.BACKBONE_PARAMS,),), "stage2.lws.frozen": (
          (base.BACKBONE_PARAMS, "head/(kernel|bias)"),), "stage2.wb.frozen": ((base.BACKBONE_PARAMS,),
                                                                              ), "stage2.wb.sampling": ("instance",),
      "stage2.wb.loss": ("cb_softmax_bce", "cb_ce"), "stage2.wb_cached.loss": ("cb_softmax_bce", "cb_ce")
  }
  for key, values in wanted.items():
    node = config
    for part in key.split("."):
      node = node[part]
    if node not in values:
      raise SystemExit(f"config key {key} is {node!r}; the twin implements only {' or '.join(map(repr, values))}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument("--config", default=os.path.join(root, "configs", "quickstart.py"))
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (config.seed for each run)")
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--ltr_jax_workdirs", default="", help="comma-separated ltr_jax run directories")
  parser.add_argument("--json", help="write the results as JSON to this path")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  config = load_config(args.config)
  check_config(config)
  seeds = [int(s) for s in args.seeds.split(",")]
  load_before = os.getloadavg()[0]

  splits = datasets.build_splits(config.data)
  tensors = {split: as_tensor(getattr(splits, split)) for split in ("train", "val", "test")}
  print(
      f"{splits.name}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test, "
      f"class counts {splits.class_counts.tolist()}", flush=True)
  per_seed, seconds = [], []
  for seed in seeds:
    out = run_seed(config, splits, tensors, seed)
    per_seed.append(out["methods"])
    seconds.append({"stage1": out["stage1_seconds"], "stage2": out["stage2_seconds"]})
    print(
        f"seed {seed}: " +
        ", ".join(f"{m} {out['methods'][m]['all']:.2f}/{out['methods'][m]['few']:.2f}" for m in METHODS) +
        f" (All/Few; stage 1 {out['stage1_seconds']:.0f} s, stage 2 {out['stage2_seconds']:.0f} s)", flush=True)
  twin = summary(per_seed)
  ltr_runs = read_ltr_jax(args.ltr_jax_workdirs.split(",")) if args.ltr_jax_workdirs else None
  ltr = summary(ltr_runs) if ltr_runs else None

  print(f"\ntest accuracy (%), mean ± sample std over seeds {seeds}; {config.model.name}, {config.train.epochs} "
        f"epochs; torch {torch.__version__}, {args.threads} threads; 1-min load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after")
  lines, within = table(per_seed, ltr_runs)
  print("\n".join(lines))
  taus = [r["tau_norm"]["tau"] for r in per_seed]
  print(f"tau-norm: tau chosen on validation per seed {taus}")

  result = {
      "config": os.path.relpath(args.config,
                                root), "seeds": seeds, "twin": twin, "per_seed": per_seed, "seconds": seconds,
      "threads": args.threads, "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
      "machine": machine(f"torch {torch.__version__}", f"numpy {np.__version__}")
  }
  if ltr:
    result.update(ltr_jax=ltr, ltr_jax_workdirs=args.ltr_jax_workdirs.split(","), ltr_jax_within_2sd=within,
                  ltr_jax_per_seed=[{m: {c: r[m][c] for c in COLUMNS} for m in METHODS} for r in ltr_runs])
  if args.json:
    write_json(args.json, result)


if __name__ == "__main__":
  main()
