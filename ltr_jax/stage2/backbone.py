"""Stage-2 methods that train through the frozen backbone on augmented images, on the stage-1 loop.

A method's function returns a `Recipe` (how its head starts, whether the head has learned per-class scales, what
constrains it); its config subtree stage2.<name> holds the rest: epochs, batch size, learning rate (at that
batch size), weight decay, sampling, the loss and its hyper-parameters, the frozen patterns and learning-rate
groups (ltr_jax.masks). The patterns decide what trains and how BatchNorm runs: the reference's cRT and LWS freeze
the backbone's parameters only ('backbone/.*/(kernel|scale|bias)'), so its BatchNorm layers run in training mode
and re-estimate their running statistics on the re-balanced batches, as `model.train()` with frozen parameters
does in classifier-balancing's run_networks.py; a pattern that also matches the statistics ('backbone/.*')
keeps BatchNorm in inference mode with stage 1's statistics. Every method starts from the workdir's stage-1
model and runs in workdir/stage2/<name> (its checkpoints, metrics and feature cache), resumable like stage 1.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from ltr_jax import losses, models, paths, train
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets
from ltr_jax.models import Head
from ltr_jax.stage2 import rebalance


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What a method through the backbone starts from: the head parameters (None: a new head, initialised with seed
  config.seed), learned per-class logit scales on the head (init 1), and a projection after its updates."""
  head: dict[str, Any] | None
  head_lws: bool = False
  constraint: train.Constraint | None = None


def finetune(stage1: Variables, joint: Head, hyper: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
             splits: datasets.Splits) -> Recipe:
  """cRT, LWS, Table 1's fine-tuning variants and MiSLAS's stage 2: a new head (hyper.reinit_head) or the stage-1
  one, with learned per-class scales if hyper.head_lws; the subtree says the rest."""
  return Recipe(None if hyper.reinit_head else dict(stage1["params"]["head"]), hyper.head_lws)


def wb(stage1: Variables, joint: Head, hyper: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
       splits: datasets.Splits) -> Recipe:
  """Weight balancing's stage 2 (Alshammari et al. 2022): the stage-1 head, trained with the subtree's
  class-balanced loss and weight decay, each class vector projected onto the MaxNorm ball of radius
  rebalance.maxnorm_radius(W, hyper.max_norm) after every step (hyper.project_every = 'step', the paper and its
  author) or every epoch ('epoch', its released code)."""
  radius = rebalance.maxnorm_radius(stage1["params"]["head"]["kernel"], hyper.max_norm)

  def project(params):
    head = params["head"]
    return {**params, "head": {**head, "kernel": rebalance.maxnorm_project(head["kernel"], radius)}}

  return Recipe(dict(stage1["params"]["head"]),
                constraint=train.Constraint(project, every_epoch=hyper.project_every == "epoch"))


LOOP_KEYS = ("sampling", "epochs", "batch_size", "weight_decay", "loss")


def loop_recipe(config: ml_collections.ConfigDict, hyper: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.train as the stage-1 loop reads it, for a method with subtree `hyper`: its schedule (lr at its batch
  size, cosine to 0, no warm-up), sampling, loss (and the loss hyper-parameters it sets), frozen patterns and
  learning-rate groups; SGD momentum 0.9 as in the sources; no mixup, re-sampling switch or initial checkpoint."""
  recipe = config.train.copy_and_resolve_references()
  recipe.update({key: hyper[key] for key in LOOP_KEYS})
  recipe.update({f.name: hyper[f.name] for f in dataclasses.fields(losses.LossHyper) if f.name in hyper})
  recipe.update(dict(base_lr=hyper.lr * 256 / hyper.batch_size, momentum=0.9, nesterov=False, warmup_epochs=0.0,
                     schedule="cosine", lr_steps=(),
                     init_from="", drs_epoch=-1, mixup_alpha=0.0, frozen=tuple(hyper.frozen),
                     lr_mults=tuple(tuple(pair) for pair in hyper.lr_mults)))
  return recipe


def run(name: str, recipe: Recipe, hyper: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
        workdir: str, stage1: Variables, splits: datasets.Splits, mesh: Mesh) -> tuple[models.LTRModel, Variables]:
  """Trains method `name` from the stage-1 variables in workdir/stage2/<name>; returns (model, its variables)."""
  loop = loop_recipe(config, hyper)
  model = models.from_config(config.model, splits.num_classes, loop.frozen,
                             models.head_spec(config.model, lws=recipe.head_lws))

  def init() -> Variables:
    head = models.init_head(model, config.seed) if recipe.head is None else dict(recipe.head)
    if recipe.head_lws:
      head.setdefault("lws", jnp.ones(splits.num_classes, jnp.float32))
    head = jax.device_put(head, jax.tree.leaves(stage1)[0].sharding)
    return {"params": {**stage1["params"], "head": head}, "batch_stats": stage1["batch_stats"]}

  state = train.train(model, init, loop, splits, config, run_dir(workdir, name), mesh, stage=f"stage2/{name}",
                      constraint=recipe.constraint)
  return model, state.variables


def run_dir(workdir: str, name: str) -> str:
  """Where method `name` runs and keeps its checkpoints: workdir/stage2/<name>."""
  return paths.join(workdir, "stage2", name)
