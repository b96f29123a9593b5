"""Stage-2 methods that train through the backbone on augmented images, each a recipe of config key
stage2.finetune.recipes run by the stage-1 loop: the reference cRT recipe, Table 1's fine-tuning variants,
and MiSLAS's stage 2.

A recipe names what is frozen (patterns of ltr_jax.masks), whether the head is re-initialised, a learning-rate
scale and per-group multipliers, its loss, and learned per-class logit scales on the head; the schedule
(epochs, batch, base lr, weight decay) is stage2.finetune's. Every recipe samples class-balanced and starts from
the workdir's stage-1 model; its run lives in workdir/finetune/<name> (resumable like stage 1). Frozen
BatchNorm layers run in inference mode, so their statistics never drift (the reference let them drift during
cRT); BatchNorm statistics a recipe leaves unfrozen are re-estimated on its class-balanced batches.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from ltr_jax import models, train
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets


def recipe_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """config.train for recipe `name`: class-balanced sampling, stage2.finetune's schedule, the recipe's masks
  and loss; no warm-up, mixup, re-sampling switch or initial checkpoint."""
  ft = config.stage2.finetune
  recipe = ft.recipes[name]
  train_config = config.train.copy_and_resolve_references()
  train_config.update(dict(sampling="class", epochs=ft.epochs, batch_size=ft.batch_size,
                           base_lr=ft.base_lr * recipe.lr_scale, weight_decay=ft.weight_decay, warmup_epochs=0.0,
                           loss=recipe.loss, frozen=tuple(recipe.frozen), lr_mults=tuple(recipe.lr_mults),
                           init_from="", drs_epoch=-1, mixup_alpha=0.0))
  return train_config


def run(config: ml_collections.ConfigDict, workdir: str, name: str, stage1: Variables, splits: datasets.Splits,
        mesh: Mesh) -> tuple[models.LTRModel, Variables]:
  """Fine-tunes the stage-1 model `stage1` with recipe `name`; returns (model, tuned variables)."""
  recipe = config.stage2.finetune.recipes[name]
  train_config = recipe_config(config, name)
  model = models.from_config(config.model, splits.num_classes, train_config.frozen, recipe.head_lws)

  def init() -> Variables:
    head = models.init_head(model, config.seed) if recipe.reinit_head else dict(stage1["params"]["head"])
    if recipe.head_lws:
      head.setdefault("lws", jnp.ones(splits.num_classes, jnp.float32))
    head = jax.device_put(head, jax.tree.leaves(stage1)[0].sharding)
    return {"params": {**stage1["params"], "head": head}, "batch_stats": stage1["batch_stats"]}

  state = train.train(model, init, train_config, splits, config, os.path.join(workdir, "finetune", name), mesh,
                      stage=f"finetune/{name}")
  return model, state.variables
