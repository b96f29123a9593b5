"""Inference over a split, and --mode=evaluate: top-1 All / Many / Medium / Few of any checkpoint on test.

Inference is jitted and data-parallel like training (BatchNorm in inference mode, no augmentation). Every
sample carries its index through the gather of the sharded outputs, so rows land at their sample's position
whatever order the mesh lists the devices of several processes in.
"""
from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltr_jax import checkpoints, classifiers, metrics, models, parallel, paths, progress, report
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets, pipeline, transforms
from ltr_jax.data.sources import Source
from ltr_jax.errors import CheckpointError
from ltr_jax.models import LTRModel

Predict = Callable[[Variables, jax.Array], tuple[jax.Array, jax.Array]]


def make_predict(model: LTRModel, data: ml_collections.ConfigDict, mesh: Mesh) -> Predict:
  """Jitted (variables, uint8 images) -> (top-1 of the model's head [B], features [B, d]), batch sharded."""

  def predict(variables, images):
    logits, features = model.apply(variables, models.normalize(images, data.mean, data.std, model.dtype),
                                   train=False)
    return classifiers.top1(logits), features

  rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(predict, in_shardings=(rep, shard), out_shardings=(shard, shard))


def run_inference(predict: Predict, variables: Variables, source: Source, config: ml_collections.ConfigDict,
                  mesh: Mesh, desc: str) -> tuple[np.ndarray, np.ndarray]:
  """(top-1 predictions [N], features [N, d]) of every sample of `source`, in order, on every host."""
  batch_size = config.stage2.batch_size
  transform = transforms.eval_transform(config.data.eval_transform, config.data.image_size, config.data.resize)
  batches = pipeline.eval_batches(source, transform, global_batch=batch_size, process_index=jax.process_index(),
                                  process_count=jax.process_count(), num_workers=config.data.num_workers)
  predictions, features = None, None
  total = -(-len(source) // batch_size)
  bar = progress.bar(total, desc, unit="batch", leave=False, disable=jax.process_index() != 0)
  for batch in batches:
    sharded = parallel.global_batch({"image": batch["image"], "index": batch["index"]}, mesh)
    top1, z = predict(variables, sharded["image"])
    top1, z, index = parallel.to_host((top1, z, sharded["index"]))
    real = index < len(source)  # padding of the last batch
    if features is None:
      predictions = np.zeros(len(source), np.int32)
      features = classifiers.host_array((len(source), z.shape[-1]))
    predictions[index[real]] = top1[real]
    features[index[real]] = z[real]
    bar.update(1)
  bar.close()
  return predictions, features


def evaluate_split(predict: Predict, variables: Variables, source: Source, splits: datasets.Splits,
                   config: ml_collections.ConfigDict, mesh: Mesh, desc: str = "eval") -> dict[str, float | None]:
  """Top-1 All / Many / Medium / Few (percent) of the model's own head on `source`."""
  predictions, _ = run_inference(predict, variables, source, config, mesh, desc)
  per_class = metrics.per_class_accuracy(predictions, source.labels, splits.num_classes)
  return metrics.group_accuracy(per_class, splits.groups)


def _best_stage2(workdir: str) -> str | None:
  """The checkpoint of the best method (on validation) of the workdir's last stage-2 run, from its results.json."""
  path = paths.join(workdir, "results.json")
  if not paths.exists(path):
    return None
  results = paths.read_json(path)
  return results.get("exported", {}).get(results.get("best"))


def _default_checkpoint(workdir: str) -> str:
  """The best stage-2 method's checkpoint of the workdir's last stage-2 run, else its stage-1 checkpoint."""
  for path in (_best_stage2(workdir), paths.join(workdir, "checkpoints")):
    if path and paths.is_dir(path) and checkpoints.Manager(path, read_only=True).latest_step() is not None:
      return path
  raise CheckpointError(f"no stage-2 (the best method of {workdir}/results.json) or stage-1 ({workdir}/checkpoints) "
                        "checkpoint to evaluate: pass --checkpoint=DIR or run --mode=train first")


def run(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, splits: datasets.Splits,
        checkpoint: str | None = None) -> dict:
  """Evaluates the checkpoint in `checkpoint` (default: the workdir's best stage-2 method, else stage 1) and writes
  evaluate.json.

  Any ltr_jax checkpoint: stage 1, a stage-2 method's (workdir/stage2/<name>/checkpoints), imported weights.
  """
  directory = checkpoint or _default_checkpoint(workdir)
  if not paths.is_dir(directory):
    raise CheckpointError(f"--checkpoint={directory}: no such directory")
  manager = checkpoints.Manager(directory, read_only=True)
  meta = manager.check_meta(checkpoints.model_meta(config, splits.num_classes))
  model = models.from_config(config.model, splits.num_classes, head=meta.get("head"))
  variables = manager.restore_model(checkpoints.abstract_variables(model, splits.image_shape, mesh))
  name = meta["stage"].split("/", 1)[1] if meta["stage"].startswith("stage2/") else "joint"
  test = evaluate_split(make_predict(model, config.data, mesh), variables, splits.test, splits, config, mesh, "test")
  result = {"checkpoint": str(directory), "stage": meta["stage"], "method": name, "test": test}
  if jax.process_index() == 0:
    print(report.markdown_table({"dataset": splits.name, "methods": {name: test}}))
    paths.write_json(paths.join(workdir, "evaluate.json"), result, indent=2)
  return result
