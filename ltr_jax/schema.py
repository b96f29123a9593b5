"""The domain of every config key, declared once: `check(config)` tests every leaf before any work.

The sections' keys are declared here, in the order of configs/base.py (which holds their defaults); a stage-2 entry's
keys by its method's record (ltr_jax.stage2.registry), and the loss hyper-parameters by ltr_jax.losses.LossHyper. A
leaf without a declaration is an error, so a new key cannot arrive unchecked. Rules between keys (a validation
split for a method that needs one, batch sizes against the devices, paths that must exist) are ltr_jax.validate's.
"""
from __future__ import annotations

import math
from typing import Any

import ml_collections

from ltr_jax import domains as d
from ltr_jax import losses
from ltr_jax.errors import ConfigError
from ltr_jax.stage2 import registry


def _imbalance_ratio(value: Any) -> str | None:
  if not d._number(value) or not math.isfinite(value):
    return "not a finite number"
  return None if value == 0 or value >= 1 else "out of range (the head must be at least as large as the tail)"


IMBALANCE_RATIO = d.Custom("0 (the data as they are) or a number >= 1 (largest / smallest class)", _imbalance_ratio,
                           (-5.0, 0.5, d.NAN, d.INF))

DATA: dict[str, d.Domain] = {
    "name": d.NAME,
    "kind": d.OneOf("ltr_jax.data.kinds:KINDS"),
    "data_dir": d.PATH,
    "download": d.Flag(),
    "num_classes": d.Int(0),
    "list_dir": d.PATH,
    "image_root": d.PATH,
    "train_list": d.PATH,
    "val_list": d.PATH,
    "test_list": d.PATH,
    "train_json": d.PATH,
    "val_json": d.PATH,
    "test_json": d.PATH,
    "class_names": d.PATH,
    "tfds_name": d.NAME,
    "train_split": d.NAME,
    "val_split": d.NAME,
    "test_split": d.NAME,
    "imbalance_ratio": IMBALANCE_RATIO,
    "n_max": d.COUNT,
    "class_order_seed": d.Maybe(d.COUNT),
    "seed": d.COUNT,
    "val_per_class": d.COUNT,
    "val_fill_from_train": d.Flag(),
    "val_min_class_size": d.COUNT,
    "many_threshold": d.COUNT,
    "few_threshold": d.COUNT,
    "image_size": d.POSITIVE_INT,
    "train_transform": d.OneOf("ltr_jax.data.transforms:TRAIN_TRANSFORMS"),
    "eval_transform": d.OneOf("ltr_jax.data.transforms:EVAL_TRANSFORMS"),
    "resize": d.POSITIVE_INT,
    "interpolation": d.OneOf("ltr_jax.data.transforms:INTERPOLATIONS"),
    "five_crop_resize": d.POSITIVE_INT,
    "color_jitter": d.NON_NEGATIVE,
    "mean": d.Seq(d.PROBABILITY, min_len=1),
    "std": d.Seq(d.POSITIVE, min_len=1),
    "num_workers": d.Int(-1),
    "preflight": d.Flag(),
    "preflight_decode": d.Flag(),
}
MODEL: dict[str, d.Domain] = {
    "name": d.OneOf("ltr_jax.models.model:ARCHITECTURES"),
    "dtype": d.OneOf("ltr_jax.models.model:DTYPES"),
    "head": d.OneOf("ltr_jax.models.heads:KINDS"),
    "head_scale": d.POSITIVE,
    "remat": d.Flag(),
}
TRAIN: dict[str, d.Domain] = {
    "sampling": registry.SAMPLING,
    "mixup_alpha": d.NON_NEGATIVE,
    "drs_epoch": d.Int(-1),
    "loss": registry.LOSS,
    **losses.HYPER_DOMAINS,
    "epochs": d.POSITIVE_INT,
    "batch_size": d.POSITIVE_INT,
    "base_lr": d.POSITIVE,
    "momentum": d.Real(0, 1, hi_open=True),
    "nesterov": d.Flag(),
    "weight_decay": d.NON_NEGATIVE,
    "warmup_epochs": d.NON_NEGATIVE,
    "accumulate_steps": d.POSITIVE_INT,
    "schedule": d.OneOf("ltr_jax.schedules:SCHEDULES"),
    "lr_steps": d.Seq(d.Pair(d.Real(0, lo_open=True), d.POSITIVE)),
    "frozen": d.PATTERNS,
    "lr_mults": d.LR_MULTS,
    "init_from": d.PATH,
    "eval_every_epochs": d.POSITIVE_INT,
    "checkpoint_every_epochs": d.POSITIVE_INT,
    "max_checkpoints": d.POSITIVE_INT,
    "log_every_steps": d.POSITIVE_INT,
    "resume_changed": d.Flag(),
}
STAGE2: dict[str, d.Domain] = {
    "methods": d.Seq(d.Text("the name of a stage-2 config entry", nonempty=True), min_len=1),
    "batch_size": d.POSITIVE_INT,
    "feature_dtype": d.OneOf("ltr_jax.stage2.features:FEATURE_DTYPES"),
    "export": d.Seq(d.Text("'best', 'all' or the name of a method", nonempty=True)),
    "five_crop": d.Seq(d.Text("the name of a method of stage2.methods", nonempty=True)),
}
DISTRIBUTED: dict[str, d.Domain] = {
    "coordinator_address": d.Text("host:port, or ''"),
    "num_processes": d.POSITIVE_INT,
    "process_id": d.COUNT,
    "auto": d.Flag(),
}
TOP: dict[str, d.Domain] = {"seed": d.COUNT}
SECTIONS: dict[str, dict[str, d.Domain]] = {"data": DATA, "model": MODEL, "train": TRAIN, "distributed": DISTRIBUTED}


def _undeclared(key: str) -> str:
  return f"config key {key} has no declared domain (ltr_jax/schema.py declares every key)"


def entry_domains(entry: ml_collections.ConfigDict) -> dict[str, d.Domain]:
  """The domains of the keys a stage-2 config entry may hold: every entry's (type, label, paper, variant), its
  record's, the per-imbalance-ratio table, and the LossHyper fields its loss reads."""
  record = registry.METHODS[entry.type]
  declared = {**registry.ENTRY_KEYS, **record.keys}
  if "loss" in record.keys and entry.get("loss") in losses.LOSSES:
    declared.update({k: losses.HYPER_DOMAINS[k] for k in losses.LOSSES[entry.loss].reads})
  declared[registry.RATIO_TABLE] = d.Seq(d.Pair(IMBALANCE_RATIO, _ratio_values(declared)))
  return declared


def _ratio_values(declared: dict[str, d.Domain]) -> d.Domain:
  """A {key: value} table row: each key one the entry may hold (not its type or label), each value in its domain."""

  def check(values: Any) -> str | None:
    if not isinstance(values, dict):
      return "not a {key: value} dict"
    for key, value in values.items():
      if key not in declared or key in registry.ENTRY_KEYS:
        return f"{key!r} is not a key of this method"
      if declared[key].error(value):
        return f"{key} = {value!r} is {declared[key].error(value)}; it must be {declared[key]}"
    return None

  return d.Custom("a {key: value} dict of the method's keys", check, ({"no_such_key": 1},))


def _check_entry(name: str, entry: Any) -> None:
  key = f"stage2.{name}"
  if not isinstance(entry, ml_collections.ConfigDict) or "type" not in entry:
    raise ConfigError(f"config key {key}: not a stage-2 method entry (a subtree with a 'type' naming a record of "
                      "ltr_jax/stage2/registry.py)")
  d.check_items({"type": entry.type}, registry.ENTRY_KEYS, key, _undeclared)
  declared = entry_domains(entry)
  record_keys = {**registry.ENTRY_KEYS, **registry.METHODS[entry.type].keys}
  missing = [k for k in record_keys if k not in entry]
  if missing:
    raise ConfigError(f"config key {key}.{missing[0]} is missing: a method of type {entry.type!r} reads it "
                      "(configs/base.py has an entry of each type)")

  def unread(field_key: str) -> str:
    field = field_key.rsplit(".", 1)[1]
    if field in losses.HYPER_DOMAINS and "loss" in entry:
      return (f"config key {field_key}: loss {entry.loss!r} ({key}.loss) does not read it; it reads "
              f"{', '.join(losses.LOSSES[entry.loss].reads) or 'no hyper-parameter'}")
    return (f"config key {field_key}: a method of type {entry.type!r} does not read it; it reads "
            f"{', '.join(k for k in declared if k not in (*registry.ENTRY_KEYS, registry.RATIO_TABLE)) or 'nothing'}")

  d.check_items({k: entry[k] for k in ("type", "loss", *entry) if k in entry}, declared, key, unread)


def check(config: ml_collections.ConfigDict) -> None:
  """ConfigError naming the key, the value and the domain of the first leaf of `config` outside its domain, or of a
  leaf no declaration covers."""
  for field in config:
    if field in TOP:
      d.check_items({field: config[field]}, TOP, "", _undeclared)
    elif field in SECTIONS:
      d.check_items(dict(config[field].items()), SECTIONS[field], field, _undeclared)
    elif field == "stage2":
      for name in config.stage2:
        if name in STAGE2:
          d.check_items({name: config.stage2[name]}, STAGE2, "stage2", _undeclared)
        else:
          _check_entry(name, config.stage2[name])
    else:
      raise ConfigError(_undeclared(field))
