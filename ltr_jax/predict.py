"""--mode=predict: a trained model applied to new, unlabelled images; one CSV row per image.

The images are a folder (searched recursively for the files Pillow reads, their extensions in any case) or a list
file (one image path per line, relative to the list file's folder). Every image is decoded first, each process its
share: those that cannot be read are listed in the CSV as such, and the others are predicted, data-parallel on
every device of every host, by the model of the checkpoint (default: the workdir's best stage-2 method, else its
stage 1), with the top 5 classes by name and probability.
"""
from __future__ import annotations

import os
import sys

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltr_jax import checkpoints, inference, paths, report
from ltr_jax.data import longtail, preflight, sources
from ltr_jax.errors import DataError
from ltr_jax.models import Classifier


class ImageFiles(sources.ListFileSource):
  """Unlabelled image files (label 0 for each: the pipeline carries one), decoded as ListFileSource (RGB)."""

  def __init__(self, files: list[str]):
    # Sets what ListFileSource's __init__ sets, from a list of files.
    self.list_file, self.image_root, self.paths = "", "", list(files)
    self.labels = np.zeros(len(files), np.int64)
    self.num_classes, self.class_names = 1, None

  def where(self, index: int) -> str:
    return self.image_path(index)


def image_files(location: str) -> list[str]:
  """The images at `location`: a folder (recursively; hidden files and folders left out), or a list file."""
  if os.path.isdir(location):
    extensions = sources.image_extensions()
    found = [p for p in sources.visible_files(location) if os.path.splitext(p)[1].lower() in extensions]
    if not found:
      raise DataError(f"--images={location}: no image files in this folder or below it")
    return found
  if not os.path.isfile(location):
    raise DataError(f"--images={location}: no such folder or list file")
  try:
    with open(location, encoding="utf-8") as f:
      lines = [line.strip() for line in f]
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"--images={location}: not a readable list file ({e})") from e
  here = os.path.dirname(os.path.abspath(location))
  files = [line if os.path.isabs(line) else os.path.join(here, line) for line in lines if line]
  if not files:
    raise DataError(f"--images={location}: an empty list file")
  return files


def run(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, images: str, output: str,
        checkpoint: str | None = None) -> dict:
  """Predicts every image at `images` and writes `output` (CSV); returns the counts and where it wrote."""
  files = image_files(images)
  directory = checkpoint or checkpoints.default_checkpoint(workdir)
  model, variables, meta = checkpoints.restore_for_inference(config, directory, mesh)
  names = meta.get("class_names") or [str(c) for c in range(meta["num_classes"])]
  source = ImageFiles(files)
  failures = dict(preflight.undecodable_images([(source, np.arange(len(files)))]).failures)
  readable = np.asarray([i for i in range(len(files)) if i not in failures], np.int64)
  classes = np.full((len(files), min(5, len(names))), -1, np.int64)
  probabilities = np.zeros(classes.shape)
  if readable.size:
    _, features = inference.run_inference(inference.make_predict(model, config.data, mesh), variables,
                                          longtail.Subset(source, readable), config, mesh, "predict")
    head = Classifier.of_model(jax.device_get(variables["params"]["head"]), model.head_spec)
    classes[readable], probabilities[readable] = inference.top_k(head, features, classes.shape[1])
  status = [f"unreadable: {failures[i]}" if i in failures else "ok" for i in range(len(files))]
  if jax.process_index() == 0:
    paths.write_text(output, report.predictions_csv(files, names, classes, probabilities, status=status))
    print(
        f"predicted {readable.size} images, {len(failures)} unreadable (listed as such) with {directory}: wrote "
        f"{output}", file=sys.stderr if failures else sys.stdout)
  return {"predicted": int(readable.size), "unreadable": len(failures), "checkpoint": str(directory), "output": output}
