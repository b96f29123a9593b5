"""Runs the data check with every image decoded, in one process of a jax.distributed group (gloo on localhost).

usage: python tests/preflight_script.py LIST_FILE IMAGE_ROOT OUT.json [COORDINATOR NUM_PROCESSES PROCESS_ID]
Writes {"message": the check's DataError, "here": images this process decoded, "total": images decoded in all}.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ltr_jax import parallel  # noqa: E402
from ltr_jax.data import datasets, preflight, sources  # noqa: E402
from ltr_jax.errors import DataError  # noqa: E402
from train_script import tiny_config  # noqa: E402

if __name__ == "__main__":
  list_file, image_root, out = sys.argv[1:4]
  config = tiny_config()
  if len(sys.argv) > 4:
    config.distributed.update(
        dict(coordinator_address=sys.argv[4], num_processes=int(sys.argv[5]), process_id=int(sys.argv[6])))
  parallel.initialize(config)
  source = sources.ListFileSource(list_file, image_root)
  decoded = preflight.undecodable_images([(source, np.arange(len(source)))])
  try:
    preflight.check(
        datasets.Splits("tiny", source.num_classes, source, None, source,
                        sources.class_counts(source.labels, source.num_classes), None, (8, 8, 3),
                        preflight_decode=True))
    message = ""
  except DataError as e:
    message = str(e)
  with open(out, "w") as f:
    json.dump({"message": message, "here": decoded.here, "total": decoded.total}, f)
