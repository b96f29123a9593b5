"""The stage-2 methods: one record per function, chosen by the `type` of a config entry (big_vision's pattern).

A config entry stage2.<name> (configs/base.py) is one row of the report: its `type` names a record of `METHODS`, its
`label`, `paper` and `variant` say how reports show it, and its other keys are the hyper-parameters that its
record declares, each with its domain. So the paper's cRT, its frozen-statistics variant, LWS, Table 1's
fine-tuning variants and MiSLAS's stage 2 are five entries of one record ('finetune') that differ in config only.

A record's function runs where its source runs the method:
- on the cached features (`ON_FEATURES`, BatchNorm in inference mode, no augmentation):
  `fn(features: stage2.features.Features, joint: models.Classifier, hyper, config) -> models.Classifier`;
- through the frozen backbone on augmented images (`THROUGH_BACKBONE`), on the stage-1 loop:
  `fn(stage1: Variables, joint: models.Classifier, hyper, config, splits) -> stage2.backbone.Setup` (how the head
  starts, which head it has, what constrains it); the schedule, sampling, loss and frozen patterns are `hyper`'s.
Either way the result is a head over the features of its backbone, exported, plotted and evaluated alike.

Functions are named as 'module:function' inside ltr_jax.stage2 and resolved when a method runs: reading this
registry (ltr_jax.validate does) imports nothing of stage 2's work.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import ml_collections

from ltr_jax import domains as d
from ltr_jax.errors import ConfigError

ON_FEATURES = "features"
THROUGH_BACKBONE = "backbone"
PROJECT_EVERY = ("step", "epoch")  # when WB projects its head onto the MaxNorm ball
NCM_METRICS = ("euclidean", "cosine", "reference_cos")
SAMPLING = d.OneOf("ltr_jax.data.sampling:STRATEGIES")
LOSS = d.OneOf("ltr_jax.losses:LOSSES")
TAUS = d.Seq(d.NON_NEGATIVE, min_len=1)
# The keys of every config entry: which record it runs, and how reports show it.
ENTRY_KEYS: dict[str, d.Domain] = {
    "type": d.OneOf("ltr_jax.stage2.registry:METHODS"), "label": d.Text("a report label", nonempty=True),
    "paper": d.Flag(), "variant": d.Text("what the variant changes, or '' for the method as its source "
                                         "runs it")
}
SCHEDULE_KEYS: dict[str, d.Domain] = {
    "epochs": d.POSITIVE_INT, "batch_size": d.POSITIVE_INT, "lr": d.POSITIVE, "weight_decay": d.NON_NEGATIVE
}
THROUGH_BACKBONE_KEYS: dict[str, d.Domain] = {
    **SCHEDULE_KEYS, "sampling": SAMPLING, "frozen": d.PATTERNS, "lr_mults": d.LR_MULTS, "loss": LOSS,
    "accumulate_steps": d.POSITIVE_INT
}
MAXNORM_KEYS: dict[str, d.Domain] = {"max_norm": d.Real(0, 1), "project_every": d.OneOf(PROJECT_EVERY)}
# LIFT's parameter-efficient modules: an AdaptFormer per block, LoRA on queries and values, or none (then the entry's
# frozen patterns alone say what trains: BitFit, the biases; LayerNorm tuning, the LayerNorms).
ADAPTERS = ("adaptformer", "lora", "none")
LIFT_KEYS: dict[str, d.Domain] = {"adapter": d.OneOf(ADAPTERS), "adapter_dim": d.COUNT, "head_scale": d.POSITIVE}


@dataclasses.dataclass(frozen=True)
class Method:
  """A stage-2 method's function and what it reads.

  runs_on: ON_FEATURES or THROUGH_BACKBONE; function: 'module:function' of ltr_jax.stage2 (or a callable);
  keys: the hyper-parameters it reads (config entry keys besides ENTRY_KEYS), each with its domain; an entry with a
  `loss` key may also set the LossHyper fields its loss reads. needs_val: chooses a hyper-parameter on the
  validation split; linear_only: defined for a linear stage-1 head (config key model.head) only;
  arbitrary_logit_scale: its logits have a scale nothing fits to the data (distances, tau-rescaled columns), so its
  ECE and NLL say little (reports mark them; compare the ECE after temperature scaling); a head over normalised
  features (cosine, NCM) is marked so too. check(hyper, config, key): the record's cross-key rules (ConfigError).
  """
  runs_on: str
  function: str | Callable[..., Any]
  keys: dict[str, d.Domain] = dataclasses.field(default_factory=dict)
  needs_val: bool = False
  linear_only: bool = False
  arbitrary_logit_scale: bool = False
  check: Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict, str], None] | None = None

  def resolve(self) -> Callable[..., Any]:
    if callable(self.function):
      return self.function
    module, name = self.function.split(":")
    return getattr(importlib.import_module(f"ltr_jax.stage2.{module}"), name)


METHODS: dict[str, Method] = {
    "joint": Method(ON_FEATURES, "on_features:joint"),
    "ncm": Method(ON_FEATURES, "on_features:ncm", {"metric": d.OneOf(NCM_METRICS)}, arbitrary_logit_scale=True),
    "tau_norm": Method(ON_FEATURES, "on_features:tau_norm", {"taus": TAUS}, needs_val=True, arbitrary_logit_scale=True),
    "logit_adjust": Method(ON_FEATURES, "on_features:logit_adjust", {"taus": TAUS}, needs_val=True),
    "crt_on_features": Method(ON_FEATURES, "on_features:crt", {**SCHEDULE_KEYS, "sampling": SAMPLING}),
    "lws_on_features": Method(ON_FEATURES, "on_features:lws", dict(SCHEDULE_KEYS)),
    "wb_on_features": Method(ON_FEATURES, "on_features:wb",
                             {**SCHEDULE_KEYS, "sampling": SAMPLING, "loss": LOSS, **MAXNORM_KEYS}, linear_only=True),
    # cRT, LWS, Table 1's variants and MiSLAS's stage 2: the stage-1 model fine-tuned through the frozen part, a new
    # head (reinit_head) or the stage-1 one, with learned per-class scales (head_lws) or not.
    "finetune": Method(THROUGH_BACKBONE, "backbone:finetune",
                       {**THROUGH_BACKBONE_KEYS, "reinit_head": d.Flag(), "head_lws": d.Flag()}),
    "wb": Method(THROUGH_BACKBONE, "backbone:wb", {**THROUGH_BACKBONE_KEYS, **MAXNORM_KEYS}, linear_only=True),
    # LIFT (Shi et al. 2024): a ViT's parameter-efficient modules and a new cosine head, the rest frozen.
    "lift": Method(THROUGH_BACKBONE, "backbone:lift", {**THROUGH_BACKBONE_KEYS, **LIFT_KEYS},
                   check=lambda hyper, config, key: _vit_backbone(config, key)),
}
# A per-data.imbalance_ratio table of values (MiSLAS's CIFAR configs): ((ratio, {key: value}), ...).
RATIO_TABLE = "per_imbalance_ratio"


def _vit_backbone(config: ml_collections.ConfigDict, key: str) -> None:
  from ltr_jax.models import vit  # the table of ViTs, read when a method that needs one is checked
  if config.model.name not in vit.ARCHITECTURES:
    raise ConfigError(f"config key {key}: adds modules to a ViT's blocks, and config key model.name is "
                      f"{config.model.name!r}: use it with one of {', '.join(vit.ARCHITECTURES)}")


def method_of(config: ml_collections.ConfigDict, name: str) -> Method:
  """The record that config entry stage2.<name> runs."""
  return METHODS[config.stage2[name].type]


def hyper_of(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Config entry stage2.<name>, with the values its source gives for the config's data.imbalance_ratio where the
  entry lists them (per_imbalance_ratio: ((ratio, {key: value}), ...)); ConfigError naming the keys to set for a
  ratio the table lacks."""
  hyper = config.stage2[name]
  table = hyper.get(RATIO_TABLE, ())
  if not table:
    return hyper
  for ratio, values in table:
    if ratio == config.data.imbalance_ratio:
      resolved = hyper.copy_and_resolve_references()
      resolved.update(values)
      return resolved
  keys = sorted({key for _, values in table for key in values})
  raise ConfigError(f"config key data.imbalance_ratio = {config.data.imbalance_ratio:g}: stage2.{name} takes its "
                    f"source's values for ratios {', '.join(f'{r:g}' for r, _ in table)} only; for another, set "
                    f"{', '.join(f'stage2.{name}.{k}' for k in keys)} and stage2.{name}.{RATIO_TABLE}=()")
