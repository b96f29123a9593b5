"""Stage-2 methods that train through the backbone on images: Table 1's fine-tuning variants and the
reference cRT recipe, each a recipe of config key stage2.finetune.recipes run by the stage-1 loop.

A recipe names what is frozen (patterns of ltr_jax.masks), whether the head is re-initialised, and a
learning-rate scale; the schedule (epochs, batch, base lr, weight decay) is stage2.finetune's. Every recipe
samples class-balanced and starts from the workdir's stage-1 model; its run lives in workdir/finetune/<name>
(resumable like stage 1). Frozen BatchNorm layers run in inference mode, so their statistics never drift (the
reference let them drift during cRT).
"""
from __future__ import annotations

import os

import jax
import ml_collections
from jax.sharding import Mesh

from ltr_jax import models, train
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets


def recipe_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """config.train for recipe `name`: class-balanced sampling, stage2.finetune's schedule, the recipe's masks."""
  ft = config.stage2.finetune
  recipe = ft.recipes[name]
  train_config = config.train.copy_and_resolve_references()
  train_config.update(dict(sampling="class", epochs=ft.epochs, batch_size=ft.batch_size,
                           base_lr=ft.base_lr * recipe.lr_scale, weight_decay=ft.weight_decay, warmup_epochs=0.0,
                           loss="ce", frozen=tuple(recipe.frozen), lr_mults=(), init_from=""))
  return train_config


def run(config: ml_collections.ConfigDict, workdir: str, name: str, stage1: Variables, splits: datasets.Splits,
        mesh: Mesh) -> tuple[models.LTRModel, Variables]:
  """Fine-tunes the stage-1 model `stage1` with recipe `name`; returns (model, tuned variables)."""
  recipe = recipe_config(config, name)
  model = models.from_config(config.model, splits.num_classes, recipe.frozen)

  def init() -> Variables:
    head = models.init_head(model, config.seed) if config.stage2.finetune.recipes[name].reinit_head \
        else stage1["params"]["head"]
    return {"params": {**stage1["params"], "head": jax.device_put(head, jax.tree.leaves(stage1)[0].sharding)},
            "batch_stats": stage1["batch_stats"]}

  state = train.train(model, init, recipe, splits, config, os.path.join(workdir, "finetune", name), mesh,
                      stage=f"finetune/{name}")
  return model, state.variables
