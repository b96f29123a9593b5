"""--mode=evaluate: top-1 All / Many / Medium / Few of any stage-1 or stage-2 checkpoint on the test split."""
from __future__ import annotations

import json
import os

import jax
import ml_collections

from ltr_jax import checkpoints, parallel, report, train
from ltr_jax.data import datasets
from ltr_jax.errors import CheckpointError


def _default_checkpoint(workdir: str) -> str:
  for sub in ("stage2", "checkpoints"):
    path = os.path.join(workdir, sub)
    if os.path.isdir(path) and checkpoints.Manager(path, read_only=True).latest_step() is not None:
      return path
  raise CheckpointError(f"no stage-2 ({workdir}/stage2) or stage-1 ({workdir}/checkpoints) checkpoint "
                        "to evaluate: pass --checkpoint=DIR or run --mode=train first")


def run(config: ml_collections.ConfigDict, workdir: str, checkpoint: str | None = None) -> dict:
  """Evaluates the checkpoint in `checkpoint` (default: the workdir's latest) and writes evaluate.json."""
  splits = datasets.build_splits(config.data)
  directory = checkpoint or _default_checkpoint(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f"--checkpoint={directory}: no such directory")
  manager = checkpoints.Manager(directory, read_only=True)
  meta = manager.check_meta(checkpoints.model_meta(config, splits.num_classes))
  image_shape = (config.data.image_size, config.data.image_size, splits.train[0].shape[-1])
  mesh = parallel.data_mesh()
  if meta["stage"] == "stage1":
    model, evaluated = train.restore_stage1(config, directory, splits.num_classes, image_shape)
  elif meta["stage"] == "stage2":
    model = train.build_model(config, splits.num_classes)
    full = train.create_train_state(model, train.make_optimizer(config.train, 1), image_shape, config.seed)
    template = {"params": full.params, "batch_stats": full.batch_stats}
    state = manager.restore(jax.device_put(template, parallel.replicated(mesh)))
    evaluated = full.replace(params=state["params"], batch_stats=state["batch_stats"])
  else:
    raise CheckpointError(f"{directory} holds a {meta['stage']} checkpoint: --mode=decouple reports it; "
                          "--mode=evaluate takes stage-1 (workdir/checkpoints) or stage-2 (workdir/stage2) ones")
  name = meta.get("method", "joint")
  result = {"checkpoint": directory, "stage": meta["stage"], "method": name,
            "test": train.evaluate_split(model, evaluated, splits.test, splits, config, mesh, desc="test")}
  if jax.process_index() == 0:
    print(report.markdown_table({"dataset": splits.name, "methods": {name: result["test"]}}))
    with open(os.path.join(workdir, "evaluate.json"), "w") as f:
      json.dump(result, f, indent=2)
  return result
