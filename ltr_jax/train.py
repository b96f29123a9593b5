"""Stage 1: learn the representation and the joint classifier with a sampling strategy.

`train` is the loop: it takes a model, its initial variables, a `Recipe` (sampling, schedule, loss, frozen patterns,
learning-rate multipliers, logging and checkpoint periods), optionally a projection of the parameters after each
update, and a run directory, and trains with a jitted
data-parallel step (batch sharded, state replicated and donated), SGD with momentum and a cosine schedule,
periodic validation with Many/Medium/Few, and Orbax checkpoints that a rerun of the same command resumes from,
bit-for-bit on the same machine. On SIGTERM (a preemption notice) it saves a checkpoint at the next step that every
process agrees on and stops (errors.Preempted); the rerun resumes from it. `train_and_evaluate` is stage 1: the loop
on the recipe of config.train. Anything else that trains through the backbone (ltr_jax.stage2.backbone) calls the
loop with a recipe it builds from the keys it names.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from ltr_jax import (checkpoints, inference, losses, masks, mixing, models, ops, parallel, paths, progress, schedules)
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets, pipeline, sampling, transforms
from ltr_jax.errors import ConfigError, Preempted, TrainingError
from ltr_jax.models import LTRModel


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Everything the loop reads besides the model and the data: config.train's keys for stage 1 (`of_train`)."""
  sampling: str
  epochs: int
  batch_size: int  # global
  base_lr: float  # per 256 images
  weight_decay: float
  loss: str
  loss_hyper: losses.LossHyper = losses.LossHyper()
  momentum: float = 0.9
  nesterov: bool = False
  warmup_epochs: float = 0.0
  schedule: str = "cosine"
  lr_steps: tuple[tuple[float, float], ...] = ()
  drs_epoch: int = -1
  mixup_alpha: float = 0.0
  accumulate_steps: int = 1  # micro-batches per step (gradient accumulation)
  frozen: tuple[str, ...] = ()
  lr_mults: tuple[tuple[str, float], ...] = ()
  eval_every_epochs: int = 1
  checkpoint_every_epochs: int = 1
  max_checkpoints: int = 2
  log_every_steps: int = 50

  @classmethod
  def of_train(cls, train: ml_collections.ConfigDict) -> Recipe:
    """Stage 1's recipe: every field from config key train (its loss hyper-parameters included)."""
    fields = {f.name for f in dataclasses.fields(cls)} - {"loss_hyper"}
    return cls(**{name: as_tuples(train[name]) for name in fields}, loss_hyper=losses.LossHyper.of(train))


def as_tuples(value: Any) -> Any:
  """Lists (as overrides may give them) as tuples, nested: a Recipe is hashable and compares by value."""
  return tuple(as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> Variables:
    return {"params": self.params, "batch_stats": self.batch_stats}


def make_optimizer(recipe: Recipe, steps_per_epoch: int, groups: Any) -> optax.GradientTransformation:
  """SGD with momentum and weight decay per learning-rate group; frozen parameters are left untouched.

  `groups`: the labels of ltr_jax.masks.lr_groups. A group with multiplier m runs SGD at m times the schedule,
  which is torch.optim.SGD with a parameter group of lr m * lr (weight decay is added to the gradient before
  momentum in both). Frozen parameters get no update and no weight decay.
  """
  schedule = schedules.learning_rate_schedule(recipe, steps_per_epoch)

  def sgd(m: float) -> optax.GradientTransformation:
    lr = schedule if m == 1.0 else (lambda step: m * schedule(step))
    return optax.chain(optax.add_decayed_weights(recipe.weight_decay),
                       optax.sgd(lr, recipe.momentum, nesterov=recipe.nesterov))

  labels = set(jax.tree.leaves(groups))
  return optax.multi_transform({g: optax.set_to_zero() if g == masks.FROZEN else sgd(g) for g in labels}, groups)


@dataclasses.dataclass(frozen=True)
class Constraint:
  """Projected gradient descent: `project` maps the parameters back onto a constraint set after the update of
  every step, or (every_epoch) after the last step of every epoch only."""
  project: Callable[[Any], Any]
  every_epoch: bool = False


def make_train_step(model: LTRModel, tx: optax.GradientTransformation, loss_fn: losses.Loss,
                    data: ml_collections.ConfigDict, mesh: Mesh, mixup_alpha: float = 0.0, seed: int = 0,
                    constraint: Constraint | None = None, steps_per_epoch: int = 1,
                    accumulate_steps: int = 1) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The jitted step: state replicated and donated, batch sharded on the data axis.

  BatchNorm runs in training mode except in the layers the model's frozen patterns freeze (ltr_jax.masks).
  With mixup_alpha > 0 the global batch is mixed (ltr_jax.mixing) with a key of (seed, step): the same
  mixing on any number of devices, and on a resumed run. A `constraint` projects the updated parameters (its
  every_epoch steps come from steps_per_epoch). With accumulate_steps k > 1 the batch goes through the model in k
  micro-batches of B / k images one after the other (the memory of one), their mean gradient makes the one update
  (BatchNorm then normalises each micro-batch by its own statistics).
  """

  def loss_and_grads(params, batch_stats, images, labels, step):
    """(loss, logits, new batch_stats), gradients of the mean loss over `images`."""
    loss_on = lambda logits: loss_fn(logits, labels, step)  # noqa: E731
    if mixup_alpha > 0:
      key = jax.random.fold_in(jax.random.key(seed), step)
      images, labels_a, labels_b, lam = mixing.mixup(key, images, labels, mixup_alpha)
      loss_on = lambda logits: mixing.mixup_loss(loss_fn, logits, labels_a, labels_b, lam, step)  # noqa: E731

    def loss_of(params):
      (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                         mutable=["batch_stats"])
      return loss_on(logits), (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    return (loss, logits, batch_stats), grads

  def accumulated(params, batch_stats, images, labels, step):
    """loss_and_grads over accumulate_steps micro-batches, one after the other: the mean loss and gradient.

    Micro-batch j holds rows j, j + k, j + 2k, ... of the batch, so that each device keeps its own rows (the scanned
    axis is not the sharded one: nothing moves between devices)."""
    k = accumulate_steps
    micro = lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)  # noqa: E731

    def one(carry, batch):
      batch_stats, grads = carry
      (loss, logits, batch_stats), more = loss_and_grads(params, batch_stats, *batch, step)
      return (batch_stats, jax.tree.map(jnp.add, grads, more)), (loss, logits)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (batch_stats, grads), (loss, logits) = jax.lax.scan(one, (batch_stats, zeros), (micro(images), micro(labels)))
    mean = lambda x: x / accumulate_steps  # noqa: E731
    logits = jnp.swapaxes(logits, 0, 1).reshape(-1, logits.shape[-1])  # back in the batch's row order
    return (jnp.mean(loss), logits, batch_stats), jax.tree.map(mean, grads)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    images = models.normalize(batch["image"], data.mean, data.std, model.dtype)
    compute = loss_and_grads if accumulate_steps == 1 else accumulated
    (loss, logits, batch_stats), grads = compute(state.params, state.batch_stats, images, batch["label"], state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if constraint is not None and constraint.every_epoch:
      params = jax.lax.cond((state.step + 1) % steps_per_epoch == 0, constraint.project, lambda p: p, params)
    elif constraint is not None:
      params = constraint.project(params)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    accuracy = jnp.mean(ops.top1(logits) == batch["label"])
    return new_state, {"loss": loss, "accuracy": accuracy}

  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(step, in_shardings=(rep, shard), out_shardings=(rep, rep), donate_argnums=0)


class MetricWriter:
  """Metrics as JSON lines (metrics.jsonl) and TensorBoard events in the run directory; process 0 only."""

  def __init__(self, run_dir: str):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      self._jsonl = paths.JsonLines(paths.join(run_dir, "metrics.jsonl"))
      self._tb = paths.tensorboard_writer(paths.join(run_dir, "tensorboard"))

  def write(self, step: int, values: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write({"step": step, **values})
    self._jsonl.flush()
    for k, v in values.items():
      if v is not None:
        self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def _check_finite(pending: list[tuple[int, dict]]) -> dict[str, float]:
  """Fetches the metrics of the steps since the last check; stops at the first non-finite loss."""
  values = jax.device_get([m for _, m in pending])
  for (step, _), m in zip(pending, values):
    if not np.isfinite(m["loss"]):
      raise TrainingError(f"the loss is {m['loss']} at step {step}: training diverged; the last "
                          "checkpoint before it is kept (lower config key train.base_lr?)")
  return {k: float(np.mean([m[k] for m in values])) for k in values[-1]}


def new_state(variables: Variables, tx: optax.GradientTransformation, mesh: Mesh, step: int = 0,
              opt_state: Any = None) -> TrainState:
  """A TrainState of a copy of `variables`, replicated over `mesh`, with a fresh optimizer state unless given.

  The step donates its state: the state owns its arrays, and the caller's `variables` stay valid.
  """
  replicated = parallel.replicated(mesh)
  variables = jax.tree.map(jnp.copy, jax.device_put(variables, replicated))
  if opt_state is None:
    opt_state = jax.jit(tx.init, out_shardings=replicated)(variables["params"])
  return TrainState(step=jax.device_put(jnp.asarray(step, jnp.int32), replicated), params=variables["params"],
                    batch_stats=variables["batch_stats"], opt_state=opt_state)


def _initial_state(abstract: Variables, init: Callable[[], Variables], tx: optax.GradientTransformation,
                   manager: checkpoints.Manager, meta: dict, mesh: Mesh) -> TrainState:
  """The latest checkpoint of the run (resume), else `init()` with a fresh optimizer state.

  abstract: the model's variables as shapes (the restore target). A checkpoint without optimizer state
  (imported weights) starts with a fresh one at its step.
  """
  abstract_opt = checkpoints.replicated_like(jax.eval_shape(tx.init, abstract["params"]), mesh)
  restored = manager.restore_training(abstract, abstract_opt, meta)
  if restored is None:
    return new_state(init(), tx, mesh)
  variables, opt_state, found = restored
  return new_state(variables, tx, mesh, found["step"], opt_state)


def train(model: LTRModel, init: Callable[[], Variables], recipe: Recipe, splits: datasets.Splits,
          config: ml_collections.ConfigDict, run_dir: str, mesh: Mesh, stage: str = "stage1",
          constraint: Constraint | None = None, settings: dict[str, Any] | None = None,
          resume_changed: bool = False) -> TrainState:
  """Runs (or resumes) the loop in `run_dir` and returns the final state.

  model: built with `recipe.frozen` (the BatchNorm modes); init: the initial variables (called only when
  run_dir has no checkpoint); config: the experiment (data, seed, model.head_scale, stage2.batch_size for
  validation); stage: the checkpoints' meta stage; settings: {key: value} of what shapes this run, recorded in its
  checkpoints: resuming one made under other settings raises checkpoints.SettingsChanged, unless resume_changed;
  constraint: a projection of the parameters after their updates.
  """
  paths.makedirs(run_dir)
  sampler = sampling.IndexSampler(splits.train.labels, splits.num_classes, recipe.sampling, config.seed, recipe.epochs,
                                  recipe.drs_epoch)
  steps_per_epoch = pipeline.steps_per_epoch(len(sampler), recipe.batch_size)
  num_steps = recipe.epochs * steps_per_epoch
  abstract = checkpoints.abstract_variables(model, splits.image_shape, mesh)
  frozen = masks.resolve(recipe.frozen, models.last_stage_name(config.model.name))
  tx = make_optimizer(recipe, steps_per_epoch, masks.lr_groups(abstract["params"], frozen, recipe.lr_mults))

  manager = checkpoints.Manager(paths.join(run_dir, "checkpoints"), recipe.max_checkpoints)
  meta = checkpoints.model_meta(config, splits.num_classes, stage, model.head_spec, settings, splits.names,
                                splits.image_shape, model.peft)
  expected = {k: v for k, v in meta.items() if k != "settings"} if resume_changed else meta
  state = _initial_state(abstract, init, tx, manager, expected, mesh)
  start_step = int(state.step)

  loss_fn = losses.get_loss(recipe.loss, splits.class_counts, steps_per_epoch, recipe.loss_hyper,
                            config.model.head_scale)
  train_step = make_train_step(model, tx, loss_fn, config.data, mesh, recipe.mixup_alpha, config.seed, constraint,
                               steps_per_epoch, recipe.accumulate_steps)
  predict = inference.make_predict(model, config.data, mesh)
  batches = pipeline.train_batches(splits.train, sampler, transforms.train_transform_of(config.data),
                                   global_batch=recipe.batch_size, start_step=start_step, num_steps=num_steps,
                                   seed=config.seed, process_index=jax.process_index(),
                                   process_count=jax.process_count(), num_workers=config.data.num_workers)
  writer = MetricWriter(run_dir)
  schedule = schedules.learning_rate_schedule(recipe, steps_per_epoch)
  eval_every = recipe.eval_every_epochs * steps_per_epoch
  ckpt_every = recipe.checkpoint_every_epochs * steps_per_epoch
  pending: list[tuple[int, dict]] = []
  label = stage.replace("stage1", "stage 1")
  bar = progress.bar(num_steps, label, initial=start_step, disable=jax.process_index() != 0)
  preemption = parallel.Preemption()
  tick, tick_step = time.perf_counter(), start_step
  try:
    for step in range(start_step + 1, num_steps + 1):
      state, step_metrics = train_step(state, parallel.global_batch(next(batches), mesh))
      pending.append((step, step_metrics))
      last = step == num_steps
      preempted = not last and preemption.reached(step)
      if step % recipe.log_every_steps == 0 or step % ckpt_every == 0 or last or preempted:
        summary = _check_finite(pending)
        pending = []
        now = time.perf_counter()
        ips = (step - tick_step) * recipe.batch_size / (now - tick)
        tick, tick_step = now, step
        summary.update(epoch=step / steps_per_epoch, images_per_second=ips, lr=float(schedule(step - 1)))
        writer.write(step, {f"train/{k}": v for k, v in summary.items()})
        bar.set_postfix(loss=f"{summary['loss']:.3f}", img_s=f"{ips:.0f}")
      if (step % eval_every == 0 or last) and splits.val is not None:
        result = inference.evaluate_split(predict, state.variables, splits.val, splits, config, mesh, "validation")
        writer.write(step, {f"val/{k}": v for k, v in result.items()})
      if step % ckpt_every == 0 or last or preempted:
        manager.save(step, state.variables, meta, state.opt_state)
      bar.update(1)
      if preempted:
        manager.wait()
        raise Preempted(f"{label} got SIGTERM and saved its checkpoint at step {step} of {num_steps} in "
                        f"{manager.directory}; run the same command again to resume")
  finally:
    preemption.close()
    bar.close()
    writer.close()
    manager.wait()
  return state


def initial_variables(model: LTRModel, config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
                      mesh: Mesh) -> Variables:
  """Stage 1's starting point: a fresh initialisation (seed config.seed), with the backbone of
  config key train.init_from if set (e.g. ImageNet weights for Places-LT; the head stays new)."""
  fresh = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, *image_shape), model.dtype), train=False),
                  out_shardings=parallel.replicated(mesh))(jax.random.key(config.seed))
  variables = {"params": fresh["params"], "batch_stats": fresh.get("batch_stats", {})}
  if not config.train.init_from:
    return variables
  loaded = checkpoints.load_backbone(config, config.train.init_from, image_shape, mesh)
  return {"params": {**variables["params"], **loaded["params"]}, "batch_stats": loaded["batch_stats"]}


# Keys that do not change what stage 1 trains: where data are read from, how, and what is checked first; how images
# are evaluated (stage 2's five-crop resize too); how often it logs, validates and checkpoints. Every other key of
# data, model and train, and the seed, shapes the model: a rerun in a workdir with a stage-1 checkpoint made under
# other values stops (config key train.resume_changed continues).
RERUN_FREE = ("data.name", "data.data_dir", "data.list_dir", "data.image_root", "data.download", "data.num_workers",
              "data.preflight", "data.preflight_decode", "data.many_threshold", "data.few_threshold",
              "data.eval_transform", "data.resize", "data.five_crop_resize", "train.eval_every_epochs",
              "train.checkpoint_every_epochs", "train.max_checkpoints", "train.log_every_steps", "train.resume_changed")


def stage1_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{key: value} of every key that shapes what stage 1 trains (the seed, data, model and train, but RERUN_FREE)."""
  settings = {"seed": config.seed}
  for section in ("data", "model", "train"):
    settings.update(
        {f"{section}.{k}": v for k, v in config[section].to_dict().items() if f"{section}.{k}" not in RERUN_FREE})
  return settings


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh | None = None,
                       splits: datasets.Splits | None = None) -> TrainState:
  """Stage 1 in `workdir` (resumed if it has a checkpoint); returns the final state.

  mesh and splits default to every device and `datasets.build_splits(config.data)`. A checkpoint there made under
  other stage1_settings stops the run (ConfigError naming the keys that differ), unless config.train.resume_changed.
  """
  mesh = mesh or parallel.data_mesh()
  splits = splits or datasets.build_splits(config.data)
  model = models.from_config(config.model, splits.num_classes, config.train.frozen)
  try:
    return train(model, lambda: initial_variables(model, config, splits.image_shape, mesh),
                 Recipe.of_train(config.train), splits, config, workdir, mesh, settings=stage1_settings(config),
                 resume_changed=config.train.resume_changed)
  except checkpoints.SettingsChanged as e:
    keys = ", ".join(key for key, _, _ in e.changes)
    raise ConfigError(f"config key {keys}: {e}; stage 1 would resume mid-run under values it never had: use "
                      f"another --workdir, or --config.train.resume_changed=True to continue from step {e.step} with "
                      "the new values") from e
