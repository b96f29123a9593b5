"""Stage-2 methods that train through the frozen backbone on augmented images, on the stage-1 loop.

A method's function returns a `Setup` (how its head starts, whether the head has learned per-class scales, what
constrains it); its config entry stage2.<name> holds the rest, and `loop_recipe` builds the loop's recipe from the
keys it names: epochs, batch size, learning rate (at that batch size), weight decay, sampling, the loss and its
hyper-parameters, the frozen patterns and learning-rate groups (ltr_jax.masks). The patterns decide what trains and
how BatchNorm runs: the reference's cRT and LWS freeze the backbone's parameters only
('backbone/.*/(kernel|scale|bias)'), so its BatchNorm layers run in training mode and re-estimate their running
statistics on the re-balanced batches, as `model.train()` with frozen parameters does in classifier-balancing's
run_networks.py; a pattern that also matches the statistics ('backbone/.*') keeps BatchNorm in inference mode with
stage 1's statistics. Every method starts from the workdir's stage-1 model and runs in workdir/stage2/<name> (its
checkpoints, metrics and feature cache), resumable like stage 1.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltr_jax import checkpoints, losses, models, parallel, paths, train
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets
from ltr_jax.models import Classifier, HeadSpec, heads, vit
from ltr_jax.stage2 import rebalance


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a method through the backbone starts from: the head parameters (None: a new head, initialised with seed
  config.seed), learned per-class logit scales on the head (init 1), a projection after its updates, the head
  (default: the stage-1 head's where it starts from its parameters, else config key model.head's) and a ViT's
  parameter-efficient modules (new, initialised with seed config.seed)."""
  head: dict[str, Any] | None
  head_lws: bool = False
  constraint: train.Constraint | None = None
  head_spec: HeadSpec | None = None
  peft: models.Peft = models.Peft()


def finetune(stage1: Variables, joint: Classifier, hyper: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
             splits: datasets.Splits) -> Setup:
  """cRT, LWS, Table 1's fine-tuning variants and MiSLAS's stage 2: a new head (hyper.reinit_head) or the stage-1
  one, with learned per-class scales if hyper.head_lws; the entry says the rest."""
  return Setup(None if hyper.reinit_head else dict(stage1["params"]["head"]), hyper.head_lws)


def wb(stage1: Variables, joint: Classifier, hyper: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
       splits: datasets.Splits) -> Setup:
  """Weight balancing's stage 2 (Alshammari et al. 2022): the stage-1 head, trained with the entry's
  class-balanced loss and weight decay, each class vector projected onto the MaxNorm ball of radius
  rebalance.maxnorm_radius(W, hyper.max_norm) after every step (hyper.project_every = 'step', the paper and its
  author) or every epoch ('epoch', its released code)."""
  radius = rebalance.maxnorm_radius(stage1["params"]["head"]["kernel"], hyper.max_norm)

  def project(params):
    head = params["head"]
    return {**params, "head": {**head, "kernel": rebalance.maxnorm_project(head["kernel"], radius)}}

  return Setup(dict(stage1["params"]["head"]), constraint=train.Constraint(project,
                                                                           every_epoch=hyper.project_every == "epoch"))


def lift(stage1: Variables, joint: Classifier, hyper: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
         splits: datasets.Splits) -> Setup:
  """LIFT (Shi et al., ICML 2024): the frozen ViT with parameter-efficient modules in every block (hyper.adapter:
  'adaptformer', beside each MLP; 'lora', on the queries and values; 'none', the frozen patterns alone choose what
  trains, e.g. BitFit's biases), of bottleneck hyper.adapter_dim (0: LIFT's
  2^floor(log2(C / 2L)) for C classes and L blocks), and a cosine head of scale hyper.head_scale without bias on the
  class token's features, its class vectors those of the joint classifier mapped onto the features and normalised.
  On an imported CLIP the joint classifier is its zero-shot head (text embeddings T of the class prompts over the
  projected features z P), so the head starts at normalise(normalise(T) P^T), LIFT's text initialisation; on a
  trained linear head, at its own normalised columns. What trains is the entry's (hyper.frozen: every backbone
  parameter but the modules')."""
  layers = sum(k.startswith("resblocks_") for k in stage1["params"]["backbone"]["transformer"])
  dim = hyper.adapter_dim or vit.lift_bottleneck(splits.num_classes, layers)
  peft = {"adaptformer": models.Peft(adaptformer_dim=dim), "lora": models.Peft(lora_rank=dim), "none": models.Peft()}
  peft = peft[hyper.adapter]
  kernel = joint.kernel if joint.projection is None else joint.projection @ joint.kernel
  return Setup({"kernel": heads.unit_columns(np.asarray(kernel, np.float32))},
               head_spec=HeadSpec("cosine", hyper.head_scale, bias=False), peft=peft)


def loop_recipe(config: ml_collections.ConfigDict, hyper: ml_collections.ConfigDict) -> train.Recipe:
  """The loop's recipe for a method with config entry `hyper`, from the keys it names: its schedule (lr at its batch
  size, cosine to 0, no warm-up, SGD momentum 0.9 as in the sources), sampling, loss (with the loss hyper-parameters
  the entry sets, the others at their defaults), frozen patterns and learning-rate groups; stage 1's periods of
  validation, checkpoints and logging (config keys train.*_every_*, train.max_checkpoints)."""
  return train.Recipe(sampling=hyper.sampling, epochs=hyper.epochs, batch_size=hyper.batch_size,
                      base_lr=hyper.lr * 256 / hyper.batch_size, weight_decay=hyper.weight_decay, loss=hyper.loss,
                      loss_hyper=losses.LossHyper.of(hyper), accumulate_steps=hyper.accumulate_steps,
                      frozen=train.as_tuples(hyper.frozen), lr_mults=train.as_tuples(hyper.lr_mults),
                      eval_every_epochs=config.train.eval_every_epochs,
                      checkpoint_every_epochs=config.train.checkpoint_every_epochs,
                      max_checkpoints=config.train.max_checkpoints, log_every_steps=config.train.log_every_steps)


def settings(name: str, hyper: ml_collections.ConfigDict, stage1_checksum: str) -> dict[str, Any]:
  """What shapes method `name`'s run: the values of its entry (not how reports label it) and the stage-1 model it
  starts from (checkpoints.checksum of its arrays)."""
  values = {f"stage2.{name}.{k}": v for k, v in hyper.to_dict().items() if k not in ("label", "paper", "variant")}
  return {**values, "stage 1 checkpoint": stage1_checksum}


def run(name: str, setup: Setup, hyper: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir: str,
        stage1: Variables, stage1_head: HeadSpec, splits: datasets.Splits, mesh: Mesh,
        stage1_checksum: str | None = None) -> tuple[models.LTRModel, Variables]:
  """Trains method `name` from the stage-1 variables (their head computing `stage1_head`) in workdir/stage2/<name>;
  returns (model, its variables).

  A run there with the same settings (its entry's values and the stage-1 model) is resumed, or reused when
  finished; one made under other settings is moved to workdir/stage2/<name>-previous (replacing an older one there)
  and the method starts afresh, saying so in one line. `stage1_checksum`: checkpoints.checksum(stage1), where the
  caller has it (one hash of the stage-1 model for all of its methods).
  """
  recipe = loop_recipe(config, hyper)
  head_spec = setup.head_spec or (HeadSpec.of_config(config.model) if setup.head is None else stage1_head)
  head_spec = head_spec.replace(lws=head_spec.lws or setup.head_lws)
  model = models.from_config(config.model, splits.num_classes, recipe.frozen, head_spec, setup.peft)

  def init() -> Variables:
    head = models.init_head(model, config.seed) if setup.head is None else dict(setup.head)
    if setup.head_lws:
      head.setdefault("lws", jnp.ones(splits.num_classes, jnp.float32))
    sharding = jax.tree.leaves(stage1)[0].sharding
    params = {**stage1["params"], "head": jax.device_put(head, sharding)}
    if setup.peft != models.Peft():  # the new modules' initial params, beside stage 1's
      new = model.init(jax.random.key(config.seed), jnp.zeros((1, *splits.image_shape), model.dtype), train=False)
      params["backbone"] = _with(jax.device_put(new["params"]["backbone"], sharding), stage1["params"]["backbone"])
    return {"params": params, "batch_stats": stage1["batch_stats"]}

  directory, shaped_by = run_dir(workdir, name), settings(name, hyper, stage1_checksum or checkpoints.checksum(stage1))

  def trained() -> train.TrainState:
    return train.train(model, init, recipe, splits, config, directory, mesh, stage=f"stage2/{name}",
                       constraint=setup.constraint, settings=shaped_by)

  try:
    state = trained()
  except checkpoints.SettingsChanged as e:
    previous = f"{directory}-previous"
    if jax.process_index() == 0:
      if paths.exists(previous):
        paths.path(previous).rmtree()
      paths.path(directory).rename(previous)
      print(f"stage2/{name}: {e}; starting afresh (the old run is kept in {previous})", file=sys.stderr)
    parallel.barrier("stage-2 run moved aside")
    state = trained()
  return model, state.variables


def _with(fresh: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
  """The params tree `fresh` with every leaf that `loaded` also has taken from `loaded`."""
  return {
      k: (_with(v, loaded[k]) if isinstance(v, dict) else loaded[k]) if k in loaded else v for k, v in fresh.items()
  }


def run_dir(workdir: str, name: str) -> str:
  """Where method `name` runs and keeps its checkpoints: workdir/stage2/<name>."""
  return paths.join(workdir, "stage2", name)
