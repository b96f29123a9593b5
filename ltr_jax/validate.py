"""The whole config checked before any work: every value in its domain, then the rules between keys.

`validate(config)` raises ConfigError with one line naming the config key at fault. First every leaf against its
declared domain (ltr_jax.schema: the key, the value and the domain), then the rules where one value constrains
another, each naming the key that is wrong: a validation split for a method that chooses on one, batch sizes
against the devices, epochs against the schedule, thresholds against each other, the data paths of the kind, the
freezing patterns against the model's parameters. Entry points (main, study, import_torch) call it first, so a typo
fails in seconds, not after hours of stage 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ltr_jax import losses, masks, models, paths, schema
from ltr_jax.data import kinds, transforms
from ltr_jax.errors import ConfigError
from ltr_jax.stage2 import registry


def _check_patterns(config: ml_collections.ConfigDict) -> None:
  """Frozen and lr-multiplier patterns each match some parameter or statistic of the model."""
  model = models.from_config(config.model, 1)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, config.data.image_size, config.data.image_size, 3), jnp.float32))
  last = models.last_stage_name(config.model.name)
  trees = (shapes["params"], shapes.get("batch_stats", {}))
  owners = [("train", config.train)] + [(f"stage2.{name}", registry.hyper_of(config, name))
                                        for name in config.stage2.methods
                                        if registry.method_of(config, name).runs_on == registry.THROUGH_BACKBONE]
  for key, owner in owners:
    masks.check_patterns(masks.resolve(owner.frozen, last), trees, f"{key}.frozen")
    masks.check_patterns(masks.resolve([p for p, _ in owner.lr_mults], last), trees, f"{key}.lr_mults")


def _check_loss(config: ml_collections.ConfigDict, loss: str, key: str) -> None:
  if losses.LOSSES[loss].cosine_only and config.model.head != "cosine":
    raise ConfigError(f"config key {key}: {loss!r} puts its margins on cosine logits (Cao et al. 2019): set "
                      "model.head='cosine' (its scale s is model.head_scale)")


def _check_batch(size: int, key: str, micro_batches: int = 1) -> None:
  if size % (micro_batches * jax.device_count()):
    over = f"{micro_batches} micro-batches (accumulate_steps) of the " if micro_batches > 1 else "the "
    raise ConfigError(f"config key {key} = {size} must be a multiple of {over}{jax.device_count()} devices")


def _check_stage2(config: ml_collections.ConfigDict) -> None:
  """Every method of stage2.methods names an entry whose values (at data.imbalance_ratio) pass its record's rules."""
  s2 = config.stage2
  entries = [name for name in s2 if name not in schema.STAGE2]
  for name in s2.methods:
    if name not in entries:
      raise ConfigError(f"config key stage2.methods: {name!r} is not a stage-2 entry; the entries are "
                        f"{', '.join(entries)}")
    key, method = f"stage2.{name}", registry.method_of(config, name)
    hyper = registry.hyper_of(config, name)
    if method.linear_only and config.model.head != "linear":
      raise ConfigError(f"config key stage2.methods: {name!r} needs a linear head (config key model.head is "
                        f"{config.model.head!r})")
    if method.needs_val and not kinds.has_validation(config.data):
      raise ConfigError(f"config key stage2.methods: {name!r} chooses a hyper-parameter on a validation split, and "
                        f"the config names none: set {kinds.validation_keys(config.data)}, or drop it")
    if "loss" in hyper:
      _check_loss(config, hyper.loss, f"{key}.loss")
    if method.runs_on == registry.THROUGH_BACKBONE:
      _check_batch(hyper.batch_size, f"{key}.batch_size", hyper.accumulate_steps)
    if method.check is not None:
      method.check(hyper, config, key)
  for name in s2.export:
    if name not in ("best", "all", *s2.methods):
      raise ConfigError(f"config key stage2.export: {name!r} is not 'best', 'all' or a method of stage2.methods")
  for name in s2.five_crop:
    if name not in s2.methods:
      raise ConfigError(f"config key stage2.five_crop: {name!r} is not a method of stage2.methods")
  if s2.five_crop and config.data.five_crop_resize < config.data.image_size:
    raise ConfigError(f"config key data.five_crop_resize: {config.data.five_crop_resize} is smaller than "
                      f"data.image_size {config.data.image_size}")


def _check_train(config: ml_collections.ConfigDict) -> None:
  train = config.train
  _check_loss(config, train.loss, "train.loss")
  if train.warmup_epochs > train.epochs:
    raise ConfigError(f"config key train.warmup_epochs = {train.warmup_epochs:g} is longer than train.epochs = "
                      f"{train.epochs}")
  previous = 0.0
  for pair in train.lr_steps:
    if not previous < pair[0] < train.epochs:
      raise ConfigError(f"config key train.lr_steps: {tuple(pair)!r}: the epochs must rise within (0, train.epochs = "
                        f"{train.epochs})")
    previous = pair[0]
  if train.schedule == "step" and not train.lr_steps:
    raise ConfigError("config key train.lr_steps must list (epoch, factor) pairs when train.schedule = 'step'")
  if train.drs_epoch >= train.epochs:
    raise ConfigError(f"config key train.drs_epoch = {train.drs_epoch} must be -1 (no re-sampling) or an epoch "
                      f"before train.epochs = {train.epochs}")
  _check_batch(train.batch_size, "train.batch_size", train.accumulate_steps)
  if train.accumulate_steps > 1 and train.mixup_alpha > 0:
    raise ConfigError("config key train.accumulate_steps: mixup mixes a whole batch, and accumulated micro-batches "
                      "would each be mixed apart: set train.accumulate_steps=1 with train.mixup_alpha > 0")
  _check_batch(config.stage2.batch_size, "stage2.batch_size")
  if train.init_from and not paths.is_dir(train.init_from):
    raise ConfigError(f"config key train.init_from: {train.init_from} is not a directory")


def _check_data(data: ml_collections.ConfigDict, with_data: bool) -> None:
  if data.few_threshold > data.many_threshold:
    raise ConfigError(f"config key data.few_threshold = {data.few_threshold} is above data.many_threshold = "
                      f"{data.many_threshold} (Many > many_threshold >= Medium >= few_threshold > Few)")
  if len(data.mean) != len(data.std):
    raise ConfigError(f"config key data.std has {len(data.std)} channels, data.mean {len(data.mean)}")
  transforms.eval_transform_of(data)  # its checks (data.resize >= data.image_size)
  if data.n_max and not data.imbalance_ratio:
    raise ConfigError(f"config key data.n_max = {data.n_max} shapes a long-tailed profile: set "
                      "data.imbalance_ratio too (0 keeps the data as they are)")
  if with_data:
    kinds.check_paths(data)


def validate(config: ml_collections.ConfigDict, with_data: bool = True) -> None:
  """Raises ConfigError (one line, naming the key) for the first fault of `config`; returns None if sound.
  with_data=False leaves out the dataset's paths (predicting new images reads none of them)."""
  schema.check(config)
  _check_data(config.data, with_data)
  _check_train(config)
  if config.distributed.process_id >= config.distributed.num_processes:
    raise ConfigError(f"config key distributed.process_id = {config.distributed.process_id} must be below "
                      f"distributed.num_processes = {config.distributed.num_processes}")
  _check_stage2(config)
  _check_patterns(config)
