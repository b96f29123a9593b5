"""--mode=evaluate: any checkpoint scored on the test split, with its report and every prediction.

Writes evaluate.json (top-1 All / Many / Medium / Few), predictions/test.csv (each test image, its label, the
predicted class and the top 5 with their probabilities, the classes by name) and, for up to report.CONFUSION_MAX
classes, confusion.png.
"""
from __future__ import annotations

import jax
import ml_collections
from jax.sharding import Mesh

from ltr_jax import checkpoints, inference, metrics, paths, report
from ltr_jax.data import datasets
from ltr_jax.errors import CheckpointError
from ltr_jax.models import Classifier


def run(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, splits: datasets.Splits,
        checkpoint: str | None = None) -> dict:
  """Evaluates the checkpoint in `checkpoint` (default: the workdir's best stage-2 method, else stage 1) on test.

  Any ltr_jax checkpoint: stage 1, a stage-2 method's (workdir/stage2/<name>/checkpoints), imported weights. Its
  classes must be the data's: the same count, and the same names where both name them.
  """
  directory = checkpoint or checkpoints.default_checkpoint(workdir)
  model, variables, meta = checkpoints.restore_for_inference(config, directory, mesh, splits.image_shape)
  if meta["num_classes"] != splits.num_classes:
    raise CheckpointError(f"{directory} holds a model of {meta['num_classes']} classes, but the data (config key "
                          f"data) has {splits.num_classes}: use the data it was trained on")
  if meta.get("class_names") and splits.class_names and meta["class_names"] != list(splits.class_names):
    mismatch = next(c for c, (a, b) in enumerate(zip(meta["class_names"], splits.class_names)) if a != b)
    raise CheckpointError(f"{directory} names class {mismatch} {meta['class_names'][mismatch]!r}, the data "
                          f"{splits.class_names[mismatch]!r}: the data's classes are not the ones it was trained on")
  name = meta["stage"].split("/", 1)[1] if meta["stage"].startswith("stage2/") else "joint"
  entry = config.stage2.get(name)
  label = entry.label if entry is not None and "label" in entry else name
  _, features = inference.run_inference(inference.make_predict(model, config.data, mesh), variables, splits.test,
                                        config, mesh, "test")
  head = Classifier.of_model(jax.device_get(variables["params"]["head"]), model.head_spec)
  predictions = head.predict(features)
  test = metrics.groups_of(predictions, splits.test.labels, splits)
  result = {"checkpoint": str(directory), "stage": meta["stage"], "method": name, "test": test}
  if jax.process_index() == 0:
    classes, probabilities = inference.top_k(head, features)
    names = meta.get("class_names") or splits.names
    written = [paths.join(workdir, "evaluate.json"), paths.join(workdir, "predictions", "test.csv")]
    paths.write_json(written[0], result, indent=2)
    paths.write_text(
        written[1],
        report.predictions_csv(inference.image_names(splits.test), names, classes, probabilities,
                               labels=splits.test.labels))
    if splits.num_classes <= report.CONFUSION_MAX:
      written.append(paths.join(workdir, "confusion.png"))
      report.plot_confusion(metrics.confusion_matrix(predictions, splits.test.labels, splits.num_classes), names,
                            f"{label}: test split of {splits.name}", written[-1])
    print(report.markdown_table({"dataset": splits.name, "methods": {name: {**test, "label": label}}}))
    print("wrote:\n  " + "\n  ".join(written))
    result["files"] = written
  return result
