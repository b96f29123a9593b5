"""The stage-2 methods: one record each. Their hyper-parameters are config subtree stage2.<name> (configs/base.py).

A method runs where its source runs it:
- on the cached features (`ON_FEATURES`, BatchNorm in inference mode, no augmentation): a function
  `fn(features: stage2.features.Features, joint: models.Head, hyper, config) -> models.Head`;
- through the frozen backbone on augmented images (`THROUGH_BACKBONE`), on the stage-1 loop: a function
  `fn(stage1: Variables, joint: models.Head, hyper, config, splits) -> stage2.backbone.Recipe` that says how the head
  starts, which head it has and what constrains it; the schedule, sampling, loss and frozen patterns are `hyper`'s.
Either way the result is a head over the features of its backbone, exported, plotted and evaluated alike.

Functions are named as 'module:function' inside ltr_jax.stage2 (or given as a callable), and resolved when a method
runs: reading this registry (ltr_jax.validate does) imports nothing of stage 2's work.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import ml_collections

from ltr_jax.errors import ConfigError

ON_FEATURES = "features"
THROUGH_BACKBONE = "backbone"
PROJECT_EVERY = ("step", "epoch")  # when WB projects its head onto the MaxNorm ball (config key stage2.<wb>.project_every)


@dataclasses.dataclass(frozen=True)
class Method:
  """A stage-2 method.

  label: its row in reports; paper: a method of Kang et al. 2020 (else a later one, marked in reports);
  variant: '' for the method as its source runs it, else what this variant changes (reports mark it and say so);
  runs_on: ON_FEATURES or THROUGH_BACKBONE; function: 'module:function' of ltr_jax.stage2, or a callable;
  needs_val: chooses a hyper-parameter on the validation split; linear_only: defined for a linear stage-1 head
  (config key model.head) only; arbitrary_logit_scale: its logits have a scale nothing fits to the data
  (distances, tau-rescaled columns), so its ECE and NLL say little (reports mark them; compare the ECE after
  temperature scaling). A head over normalised features (cosine, NCM) is marked so too.
  """
  label: str
  paper: bool
  runs_on: str
  function: str | Callable[..., Any]
  variant: str = ""
  needs_val: bool = False
  linear_only: bool = False
  arbitrary_logit_scale: bool = False

  def resolve(self) -> Callable[..., Any]:
    if callable(self.function):
      return self.function
    module, name = self.function.split(":")
    return getattr(importlib.import_module(f"ltr_jax.stage2.{module}"), name)


_CACHED = "on cached, un-augmented features with BatchNorm in inference mode (fast)"

METHODS: dict[str, Method] = {
    "joint": Method("Joint", True, ON_FEATURES, "on_features:joint"),
    "ncm": Method("NCM", True, ON_FEATURES, "on_features:ncm", arbitrary_logit_scale=True),
    # cRT and LWS as the reference runs them (run_networks.py): backbone parameters frozen, BatchNorm in training
    # mode (its running statistics re-estimated on the class-balanced, augmented batches).
    "crt": Method("cRT", True, THROUGH_BACKBONE, "backbone:finetune"),
    "crt_frozen_bn": Method("cRT (frozen BN statistics)", True, THROUGH_BACKBONE, "backbone:finetune",
                            variant="the frozen backbone's BatchNorm runs in inference mode (its statistics stay "
                                    "stage 1's)"),
    "crt_cached": Method("cRT (cached features)", True, ON_FEATURES, "on_features:crt", variant=_CACHED),
    "tau_norm": Method("τ-norm", True, ON_FEATURES, "on_features:tau_norm", needs_val=True,
                       arbitrary_logit_scale=True),
    "lws": Method("LWS", True, THROUGH_BACKBONE, "backbone:finetune"),
    "lws_cached": Method("LWS (cached features)", True, ON_FEATURES, "on_features:lws", variant=_CACHED),
    # Table 1 of the paper: the stage-1 model fine-tuned with class-balanced sampling, the part named frozen.
    "classifier": Method("C", True, THROUGH_BACKBONE, "backbone:finetune"),
    "last_block_classifier": Method("LB+C", True, THROUGH_BACKBONE, "backbone:finetune"),
    "backbone_classifier": Method("B+C", True, THROUGH_BACKBONE, "backbone:finetune"),
    "backbone_classifier_tenth_lr": Method("B+C (0.1× lr)", True, THROUGH_BACKBONE, "backbone:finetune"),
    "logit_adjust": Method("Logit adj.", False, ON_FEATURES, "on_features:logit_adjust", needs_val=True),
    "wb": Method("WB", False, THROUGH_BACKBONE, "backbone:wb", linear_only=True),
    "wb_cached": Method("WB (cached features)", False, ON_FEATURES, "on_features:wb", variant=_CACHED,
                        linear_only=True),
    "mislas": Method("MiSLAS", False, THROUGH_BACKBONE, "backbone:finetune"),
}


def hyper_of(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Method `name`'s hyper-parameters: config subtree stage2.<name>, with the values its source gives for the
  config's data.imbalance_ratio where the subtree lists them (per_imbalance_ratio: ((ratio, {key: value}), ...));
  ConfigError naming the keys to set for a ratio the table lacks."""
  hyper = config.stage2[name]
  table = hyper.get("per_imbalance_ratio", ())
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
                    f"{', '.join(f'stage2.{name}.{k}' for k in keys)} and stage2.{name}.per_imbalance_ratio=()")
