"""Stage 1: learn the representation and the joint classifier with a sampling strategy.

A jitted data-parallel step (batch sharded, state replicated and donated), SGD with momentum and a
cosine schedule, periodic evaluation with Many/Medium/Few, and Orbax checkpoints that a rerun of the
same command resumes from, bit-for-bit on the same machine.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tensorboardX import SummaryWriter
from tqdm.auto import tqdm

from ltr_jax import checkpoints, losses, metrics, parallel
from ltr_jax.data import datasets, pipeline, sampling, transforms
from ltr_jax.errors import CheckpointError, ConfigError, TrainingError
from ltr_jax.models.resnet import LTRModel, create_model, last_stage_name


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> LTRModel:
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if config.model.dtype not in dtypes:
    raise ConfigError(f"config key model.dtype: {config.model.dtype!r} is not one of {sorted(dtypes)}")
  return create_model(config.model.name, num_classes, dtype=dtypes[config.model.dtype])


def learning_rate_schedule(train: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up to base_lr * batch / 256, then cosine to 0.

  The cosine spans the remaining steps exactly, so it starts at the peak lr and reaches 0 when the
  last step ends (the last update runs at a small positive lr, not at 0 for a whole epoch as in the
  reference code).
  """
  peak = train.base_lr * train.batch_size / 256
  total = train.epochs * steps_per_epoch
  warmup = int(round(train.warmup_epochs * steps_per_epoch))
  cosine = optax.cosine_decay_schedule(peak, max(1, total - warmup))
  if not warmup:
    return cosine
  return optax.join_schedules([optax.linear_schedule(peak / warmup, peak, warmup), cosine], [warmup])


def make_optimizer(train: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD with momentum; weight decay on every parameter, as torch.optim.SGD in the reference."""
  return optax.chain(optax.add_decayed_weights(train.weight_decay),
                     optax.sgd(learning_rate_schedule(train, steps_per_epoch), train.momentum,
                               nesterov=train.nesterov))


def normalize(images: jax.Array, mean, std, dtype) -> jax.Array:
  """uint8 NHWC -> (x / 255 - mean) / std in the compute dtype (done on the device)."""
  mean = jnp.asarray(mean, jnp.float32) * 255
  std = jnp.asarray(std, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def create_train_state(model: LTRModel, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
                       seed: int) -> TrainState:
  variables = jax.jit(lambda rng: model.init(rng, jnp.zeros((1, *image_shape), model.dtype), train=False))(
      jax.random.key(seed))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def make_train_step(model: LTRModel, tx: optax.GradientTransformation, loss_fn: losses.Loss,
                    data: ml_collections.ConfigDict, mesh, stats_mask: Any = True
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The jitted step: state replicated and donated, batch sharded on the data axis.

  stats_mask: True (stage 1: BatchNorm in training mode, every running statistic updated), False
  (frozen backbone: BatchNorm in inference mode), or a pytree of bools over batch_stats (fine-tuning
  part of the backbone: training mode, and only the masked running statistics change).
  """
  bn_train = stats_mask is not False

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    images = normalize(batch["image"], data.mean, data.std, model.dtype)

    def loss_of(params):
      variables = {"params": params, "batch_stats": state.batch_stats}
      if bn_train:
        (logits, _), updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
        stats = updates["batch_stats"] if stats_mask is True else jax.tree.map(
            lambda keep_new, new, old: jnp.where(keep_new, new, old), stats_mask, updates["batch_stats"],
            state.batch_stats)
      else:
        logits, _ = model.apply(variables, images, train=False)
        stats = state.batch_stats
      return loss_fn(logits, batch["label"], state.step), (logits, stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              batch_stats=batch_stats, opt_state=opt_state)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return new_state, {"loss": loss, "accuracy": accuracy}

  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(step, in_shardings=(rep, shard), out_shardings=(rep, rep), donate_argnums=0)


def make_predict(model: LTRModel, data: ml_collections.ConfigDict, mesh) -> Callable:
  """Jitted inference: (params, batch_stats, uint8 images) -> (logits, features), BatchNorm frozen."""

  def predict(params, batch_stats, images):
    x = normalize(images, data.mean, data.std, model.dtype)
    return model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)

  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(predict, in_shardings=(rep, rep, shard), out_shardings=(shard, shard))


def run_inference(predict: Callable, params, batch_stats, source, config: ml_collections.ConfigDict,
                  mesh, batch_size: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
  """(logits [N, C], features [N, d]) of every sample of `source`, in order, on every host."""
  transform = transforms.eval_transform(config.data.eval_transform, config.data.image_size,
                                        config.data.resize)
  batches = pipeline.eval_batches(source, transform, global_batch=batch_size,
                                  process_index=jax.process_index(), process_count=jax.process_count(),
                                  num_workers=config.data.num_workers)
  logits, features = [], []
  total = -(-len(source) // batch_size)
  for batch in tqdm(batches, total=total, desc=desc, leave=False, disable=jax.process_index() != 0):
    out = predict(params, batch_stats, parallel.global_batch({"image": batch["image"]}, mesh)["image"])
    lg, ft = parallel.to_host(out)
    logits.append(np.asarray(lg, np.float32))
    features.append(np.asarray(ft, np.float32))
  return np.concatenate(logits)[:len(source)], np.concatenate(features)[:len(source)]


class MetricWriter:
  """Metrics as JSON lines (metrics.jsonl) and TensorBoard events in the workdir; process 0 only."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, values: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
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


def evaluate_split(model: LTRModel, state: TrainState, source, splits: datasets.Splits,
                   config: ml_collections.ConfigDict, mesh, predict: Callable | None = None,
                   desc: str = "eval") -> dict[str, float | None]:
  """Top-1 All / Many / Medium / Few (percent) of the model's joint classifier on `source`."""
  predict = predict or make_predict(model, config.data, mesh)
  logits, _ = run_inference(predict, state.params, state.batch_stats, source, config, mesh,
                            config.stage2.batch_size, desc)
  per_class = metrics.per_class_accuracy(logits.argmax(-1), source.labels, splits.num_classes)
  return metrics.group_accuracy(per_class, splits.groups)


# Table 1 of the paper: class-balanced fine-tuning on top of stage 1 (config key stage2.finetune.variants).
# variant: (trainable part of the backbone: 'none' | 'last' | 'all', re-initialise the head, lr multiplier)
FINETUNE_VARIANTS = {
    "crt_augmented": ("none", True, 1.0),  # the reference cRT recipe: images + stage-1 augmentation
    "classifier": ("none", False, 1.0),  # "C" only: cRT without re-initialisation
    "last_block_classifier": ("last", False, 1.0),
    "backbone_classifier": ("all", False, 1.0),
    "backbone_classifier_0.1lr": ("all", False, 0.1),
}


def restore_stage1(config: ml_collections.ConfigDict, directory: str, num_classes: int,
                   image_shape: tuple[int, ...]) -> tuple[LTRModel, TrainState]:
  """(model, state) of the latest stage-1 checkpoint in `directory`, checked against the config."""
  model = build_model(config, num_classes)
  manager = checkpoints.Manager(directory, read_only=True) if os.path.isdir(directory) else None
  if manager is None or manager.latest_step() is None:
    raise CheckpointError(f"no stage-1 checkpoint in {directory}: run --mode=train (or --mode=all) "
                          "with this --workdir first")
  template = create_train_state(model, make_optimizer(config.train, 1), image_shape, config.seed)
  tx, _ = _restrict(make_optimizer(config.train, 1), template.params, template.batch_stats,
                    _trainable_part(config), model)
  template = jax.device_put(template.replace(opt_state=tx.init(template.params)),
                            parallel.replicated(parallel.data_mesh()))
  return model, manager.restore(template, expected_meta=checkpoints.model_meta(config, num_classes))


def _finetune_config(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """config.train for a Table-1 fine-tuning: class-balanced sampling, stage2.finetune's schedule."""
  if variant not in FINETUNE_VARIANTS:
    raise ConfigError(f"config key stage2.finetune.variants: unknown variant {variant!r} "
                      f"(expected some of {sorted(FINETUNE_VARIANTS)})")
  ft = config.stage2.finetune
  train_config = config.train.copy_and_resolve_references()
  train_config.update(dict(sampling="class", epochs=ft.epochs, batch_size=ft.batch_size,
                           base_lr=ft.base_lr * FINETUNE_VARIANTS[variant][2], weight_decay=ft.weight_decay,
                           warmup_epochs=0.0, loss="ce"))
  return train_config


_TRAINABLE = {"all": "all", "last_block": "last"}  # config key train.trainable -> part of the backbone


def _trainable_masks(params: Any, batch_stats: Any, part: str, model: LTRModel) -> tuple[Any, Any]:
  """(trainable params, updated BN statistics) as bool pytrees; the head is always trainable."""
  def backbone_mask(tree):
    if part == "last":
      last = last_stage_name(model)
      return {k: jax.tree.map(lambda _: k == last, v) for k, v in tree.items()}
    return jax.tree.map(lambda _: part == "all", tree)
  trainable = {**params, "backbone": backbone_mask(params["backbone"]),
               "head": jax.tree.map(lambda _: True, params["head"])}
  stats = False if part == "none" else {"backbone": backbone_mask(batch_stats["backbone"])}
  return trainable, stats


def _trainable_part(config: ml_collections.ConfigDict) -> str:
  if config.train.trainable not in _TRAINABLE:
    raise ConfigError(f"config key train.trainable: {config.train.trainable!r} is not one of {sorted(_TRAINABLE)}")
  return _TRAINABLE[config.train.trainable]


def _restrict(tx: optax.GradientTransformation, params: Any, batch_stats: Any, part: str,
              model: LTRModel) -> tuple[optax.GradientTransformation, Any]:
  """(tx updating only the trainable part, stats_mask for make_train_step)."""
  if part == "all":
    return tx, True
  trainable, stats_mask = _trainable_masks(params, batch_stats, part, model)
  return optax.multi_transform({True: tx, False: optax.set_to_zero()}, trainable), stats_mask


def load_backbone(config: ml_collections.ConfigDict, directory: str, image_shape: tuple[int, ...]):
  """(backbone params, BN statistics) of the checkpoint in `directory` (config key train.init_from).

  E.g. ImageNet-pretrained weights imported with ltr_jax.import_torch, for Places-LT. The head is not
  loaded: the checkpoint may have another class count.
  """
  if not os.path.isdir(directory):
    raise CheckpointError(f"config key train.init_from: {directory} is not a directory")
  manager = checkpoints.Manager(directory, read_only=True)
  meta = manager.read_meta()
  if meta["model"] != config.model.name:
    raise CheckpointError(f"config key train.init_from: {directory} holds model {meta['model']!r}, but "
                          f"config key model.name is {config.model.name!r}")
  model = build_model(config, meta["num_classes"])
  template = create_train_state(model, make_optimizer(config.train, 1), image_shape, config.seed)
  state = manager.restore(jax.device_put(template, parallel.replicated(parallel.data_mesh())))
  return state.params["backbone"], state.batch_stats


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, finetune: str = "") -> TrainState:
  """Runs (or resumes) stage 1 in `workdir` and returns the final state.

  With `finetune` (a FINETUNE_VARIANTS name), instead fine-tunes the workdir's stage-1 model with
  class-balanced sampling in workdir/finetune/<variant>, training only the variant's parameters.
  """
  splits = datasets.build_splits(config.data)
  train_config = _finetune_config(config, finetune) if finetune else config.train
  run_dir = os.path.join(workdir, "finetune", finetune) if finetune else workdir
  os.makedirs(run_dir, exist_ok=True)
  mesh = parallel.data_mesh()
  parallel.check_batch_size(train_config.batch_size, "stage2.finetune.batch_size" if finetune
                            else "train.batch_size")
  model = build_model(config, splits.num_classes)
  sampler = sampling.IndexSampler(splits.train.labels, splits.num_classes, train_config.sampling,
                                  config.seed, train_config.epochs)
  steps_per_epoch = pipeline.steps_per_epoch(len(sampler), train_config.batch_size)
  num_steps = train_config.epochs * steps_per_epoch
  tx = make_optimizer(train_config, steps_per_epoch)
  image_shape = (config.data.image_size, config.data.image_size, splits.train[0].shape[-1])
  fresh = create_train_state(model, tx, image_shape, config.seed)
  params, batch_stats = fresh.params, fresh.batch_stats
  part = _trainable_part(config)
  if finetune:
    part, reinit_head, _ = FINETUNE_VARIANTS[finetune]
    _, stage1 = restore_stage1(config, os.path.join(workdir, "checkpoints"), splits.num_classes, image_shape)
    params = {**stage1.params, "head": fresh.params["head"] if reinit_head else stage1.params["head"]}
    batch_stats = stage1.batch_stats
  elif config.train.init_from:
    backbone, batch_stats = load_backbone(config, config.train.init_from, image_shape)
    params = {**params, "backbone": backbone}
  tx, stats_mask = _restrict(tx, params, batch_stats, part, model)
  fresh = TrainState(step=fresh.step, params=params, batch_stats=batch_stats, opt_state=tx.init(params))

  manager = checkpoints.Manager(os.path.join(run_dir, "checkpoints"), train_config.max_checkpoints)
  meta = checkpoints.model_meta(config, splits.num_classes, f"finetune/{finetune}" if finetune else "stage1")
  state = jax.device_put(fresh, parallel.replicated(mesh))
  state = manager.restore_latest(state, meta) or state
  start_step = int(state.step)

  loss_fn = losses.get_loss(train_config.loss, splits.class_counts, steps_per_epoch,
                            **{f.name: train_config[f.name] for f in dataclasses.fields(losses.LossHyper)})
  train_step = make_train_step(model, tx, loss_fn, config.data, mesh, stats_mask)
  predict = make_predict(model, config.data, mesh)
  batches = pipeline.train_batches(
      splits.train, sampler, transforms.train_transform(config.data.train_transform, config.data.image_size,
                                                        config.data.color_jitter),
      global_batch=train_config.batch_size, start_step=start_step, num_steps=num_steps, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=config.data.num_workers)
  writer = MetricWriter(run_dir)
  eval_every = train_config.eval_every_epochs * steps_per_epoch
  ckpt_every = train_config.checkpoint_every_epochs * steps_per_epoch
  pending: list[tuple[int, dict]] = []
  bar = tqdm(total=num_steps, initial=start_step, unit="step",
             desc=f"fine-tune {finetune}" if finetune else "stage 1",
             disable=jax.process_index() != 0)
  tick, tick_step = time.perf_counter(), start_step
  try:
    for step in range(start_step + 1, num_steps + 1):
      state, step_metrics = train_step(state, parallel.global_batch(next(batches), mesh))
      pending.append((step, step_metrics))
      last = step == num_steps
      if step % train_config.log_every_steps == 0 or step % ckpt_every == 0 or last:
        summary = _check_finite(pending)
        pending = []
        now = time.perf_counter()
        ips = (step - tick_step) * train_config.batch_size / (now - tick)
        tick, tick_step = now, step
        summary.update(epoch=step / steps_per_epoch, images_per_second=ips,
                       lr=float(learning_rate_schedule(train_config, steps_per_epoch)(step - 1)))
        writer.write(step, {f"train/{k}": v for k, v in summary.items()})
        bar.set_postfix(loss=f"{summary['loss']:.3f}", img_s=f"{ips:.0f}")
      if (step % eval_every == 0 or last) and splits.val is not None:
        result = evaluate_split(model, state, splits.val, splits, config, mesh, predict, "validation")
        writer.write(step, {f"val/{k}": v for k, v in result.items()})
      if step % ckpt_every == 0 or last:
        manager.save(step, state, meta)
      bar.update(1)
  finally:
    bar.close()
    writer.close()
    manager.wait()
  return state
