"""The whole config checked before any work: every choice, the stage-2 preconditions, batch sizes, data paths.

`validate(config)` raises ConfigError with one line naming the config key at fault. Entry points (main, study,
import_torch) call it first, so a typo fails in seconds, not after hours of stage 1.
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections

from ltr_jax import classifiers, losses, masks, models, schedules
from ltr_jax.data import kinds, sampling, transforms
from ltr_jax.errors import ConfigError
from ltr_jax.stage2 import registry


def _one_of(value, choices, key: str) -> None:
  if value not in choices:
    raise ConfigError(f"config key {key}: {value!r} is not one of {', '.join(map(str, choices))}")


def _positive(config: ml_collections.ConfigDict, *keys: str) -> None:
  for key in keys:
    node = config
    for part in key.split("."):
      node = node[part]
    if not node > 0:
      raise ConfigError(f"config key {key} must be > 0, got {node!r}")


def _check_patterns(config: ml_collections.ConfigDict) -> None:
  """Frozen and lr-multiplier patterns are regular expressions that each match some parameter or statistic."""
  model = models.from_config(config.model, 1)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, config.data.image_size, config.data.image_size, 3), jnp.float32))
  last = models.last_stage_name(config.model.name)
  trees = (shapes["params"], shapes.get("batch_stats", {}))
  owners = [("train", config.train)] + [(f"stage2.{name}", registry.hyper_of(config, name))
                                        for name in config.stage2.methods
                                        if registry.METHODS[name].runs_on == registry.THROUGH_BACKBONE]
  for key, owner in owners:
    masks.check_patterns(masks.resolve(owner.frozen, last), trees, f"{key}.frozen")
    for pair in owner.lr_mults:
      if len(pair) != 2 or not isinstance(pair[1], (int, float)) or not pair[1] > 0:
        raise ConfigError(f"config key {key}.lr_mults: {pair!r} is not a (pattern, multiplier > 0) pair")
    masks.check_patterns(masks.resolve([p for p, _ in owner.lr_mults], last), trees, f"{key}.lr_mults")


def _check_stage2(config: ml_collections.ConfigDict) -> None:
  """Every method of stage2.methods is registered, its subtree's values are in range, and what it needs is there."""
  s2 = config.stage2
  for name in s2.methods:
    _one_of(name, list(registry.METHODS), "stage2.methods")
    method, key = registry.METHODS[name], f"stage2.{name}"
    if name not in s2:
      raise ConfigError(f"config key {key} is missing: every stage-2 method has its subtree (configs/base.py)")
    hyper = registry.hyper_of(config, name)
    if method.linear_only and config.model.head != "linear":
      raise ConfigError(f"config key stage2.methods: {name!r} needs a linear head (config key model.head is "
                        f"{config.model.head!r})")
    if method.needs_val and not kinds.has_validation(config.data):
      raise ConfigError(f"config key stage2.methods: {name!r} chooses tau on a validation split, and the config "
                        f"names none: set {kinds.validation_keys(config.data)}, or drop it")
    for field in ("epochs", "batch_size", "lr"):
      if field in hyper:
        _positive(config, f"{key}.{field}")
    for field in ("weight_decay", "max_norm"):
      if field in hyper and not hyper[field] >= 0:
        raise ConfigError(f"config key {key}.{field} must be >= 0, got {hyper[field]!r}")
    if "sampling" in hyper:
      _one_of(hyper.sampling, sampling.STRATEGIES, f"{key}.sampling")
    if "loss" in hyper:
      _one_of(hyper.loss, sorted(losses.LOSSES), f"{key}.loss")
      losses.LossHyper.of(hyper, key)
    if "taus" in hyper and not (len(hyper.taus) and all(map(math.isfinite, hyper.taus))):
      raise ConfigError(f"config key {key}.taus must be a non-empty tuple of finite numbers, got {hyper.taus!r}")
    if "metric" in hyper:
      _one_of(hyper.metric, classifiers.NCM_METRICS, f"{key}.metric")
    if "project_every" in hyper:
      _one_of(hyper.project_every, registry.PROJECT_EVERY, f"{key}.project_every")
    if method.runs_on == registry.THROUGH_BACKBONE and hyper.batch_size % jax.device_count():
      raise ConfigError(f"config key {key}.batch_size = {hyper.batch_size} must be a multiple of the "
                        f"{jax.device_count()} devices")
  for name in s2.export:
    _one_of(name, ["best", "all", *s2.methods], "stage2.export")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (one line, naming the key) for the first fault of `config`; returns None if sound."""
  _one_of(config.model.name, sorted(models.ARCHITECTURES), "model.name")
  _one_of(config.model.dtype, sorted(models.DTYPES), "model.dtype")
  _one_of(config.model.head, models.HEADS, "model.head")
  _one_of(config.data.kind, list(kinds.KINDS), "data.kind")
  transforms.train_transform(config.data.train_transform, config.data.image_size, config.data.color_jitter)
  transforms.eval_transform(config.data.eval_transform, config.data.image_size, config.data.resize)
  _one_of(config.train.sampling, sampling.STRATEGIES, "train.sampling")
  _one_of(config.train.loss, sorted(losses.LOSSES), "train.loss")
  losses.LossHyper.of(config.train, "train")
  if config.train.loss in losses.COSINE_LOSSES and config.model.head != "cosine":
    raise ConfigError(f"config key train.loss: {config.train.loss!r} puts its margins on cosine logits (Cao et al. "
                      "2019): set model.head='cosine' (its scale s is model.head_scale)")
  if config.train.mixup_alpha < 0:
    raise ConfigError(f"config key train.mixup_alpha must be >= 0, got {config.train.mixup_alpha}")
  _positive(config, "data.image_size", "train.epochs", "train.batch_size", "train.base_lr", "stage2.batch_size")
  _one_of(config.train.schedule, schedules.SCHEDULES, "train.schedule")
  previous = 0.0
  for pair in config.train.lr_steps:
    if len(pair) != 2 or not previous < pair[0] < config.train.epochs or not pair[1] > 0:
      raise ConfigError(f"config key train.lr_steps: {pair!r} is not an (epoch, factor > 0) pair with epochs rising "
                        f"within (0, train.epochs = {config.train.epochs})")
    previous = pair[0]
  if config.train.schedule == "step" and not config.train.lr_steps:
    raise ConfigError("config key train.lr_steps must list (epoch, factor) pairs when train.schedule = 'step'")
  if not -1 <= config.train.drs_epoch < config.train.epochs:
    raise ConfigError(f"config key train.drs_epoch must be -1 (no re-sampling) or an epoch in [0, train.epochs), "
                      f"got {config.train.drs_epoch}")
  for key, size in {"train.batch_size": config.train.batch_size, "stage2.batch_size": config.stage2.batch_size}.items():
    if size % jax.device_count():
      raise ConfigError(f"config key {key} = {size} must be a multiple of the {jax.device_count()} devices")
  _check_stage2(config)
  if config.data.num_workers < -1:
    raise ConfigError(f"config key data.num_workers must be -1 (one per core) or >= 0, got {config.data.num_workers}")
  kinds.check_paths(config.data)
  if config.train.init_from and not os.path.isdir(config.train.init_from):
    raise ConfigError(f"config key train.init_from: {config.train.init_from} is not a directory")
  _check_patterns(config)
