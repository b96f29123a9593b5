"""--mode=evaluate: top-1 All / Many / Medium / Few of any checkpoint on the test split, with its report."""
from __future__ import annotations

import jax
import ml_collections
from jax.sharding import Mesh

from ltr_jax import checkpoints, inference, models, paths, report
from ltr_jax.data import datasets
from ltr_jax.errors import CheckpointError


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
  model = models.from_config(config.model, splits.num_classes, head_spec=checkpoints.head_spec_of(meta))
  variables = manager.restore_model(checkpoints.abstract_variables(model, splits.image_shape, mesh))
  name = meta["stage"].split("/", 1)[1] if meta["stage"].startswith("stage2/") else "joint"
  predict = inference.make_predict(model, config.data, mesh)
  test = inference.evaluate_split(predict, variables, splits.test, splits, config, mesh, "test")
  result = {"checkpoint": str(directory), "stage": meta["stage"], "method": name, "test": test}
  if jax.process_index() == 0:
    print(report.markdown_table({"dataset": splits.name, "methods": {name: test}}))
    paths.write_json(paths.join(workdir, "evaluate.json"), result, indent=2)
  return result
