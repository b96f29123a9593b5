"""Runs inference of a stage-1 checkpoint in its own process, on meshes of two device orders.

Used by tests that need a fresh JAX runtime: several CPU devices, or several processes on localhost.
usage: python tests/eval_script.py WORKDIR OUT.npz DEVICES [COORDINATOR NUM_PROCESSES PROCESS_ID]
Two meshes, ORDERS: 'default' (jax.devices(): process 0's devices first) and 'interleaved' ([p0d0, p1d0, p0d1,
p1d1, ...]; the same as 'default' with one process). For each, process 0 writes the predictions and features of
TEST_SUBSET, and the process owning each mesh position, as {ORDER}/predictions, ....
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # before JAX starts: the device count of this process
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[3]}"
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from ltr_jax import checkpoints, inference, parallel  # noqa: E402
from ltr_jax.data import longtail, sources  # noqa: E402
from train_script import tiny_config  # noqa: E402

# Every 20th Fashion-MNIST test image (500, all classes). Batches of 96 (48 per process of 2, 24 per device of
# 4): 6 batches, the last one holding 20 images and 76 rows of padding (process 1's rows are all padding).
TEST_SUBSET = np.arange(0, 10000, 20)
BATCH_SIZE = 96


def interleaved(devices: list) -> list:
  """`devices` reordered so that consecutive mesh positions alternate between processes."""
  by_process: dict[int, list] = {}
  for device in devices:
    by_process.setdefault(device.process_index, []).append(device)
  return [device for group in zip(*by_process.values()) for device in group]


if __name__ == "__main__":
  workdir, out = sys.argv[1:3]
  config = tiny_config()
  config.stage2.batch_size = BATCH_SIZE
  if len(sys.argv) > 4:
    config.distributed.update(
        dict(coordinator_address=sys.argv[4], num_processes=int(sys.argv[5]), process_id=int(sys.argv[6])))
  parallel.initialize(config)
  test = longtail.Subset(sources.fashion_mnist("test"), TEST_SUBSET)
  results = {}
  for order, devices in (("default", jax.devices()), ("interleaved", interleaved(jax.devices()))):
    mesh = parallel.data_mesh(devices)
    model, variables = checkpoints.restore_stage1(config, os.path.join(workdir, "checkpoints"), 10, (28, 28, 1), mesh)
    predictions, features = inference.run_inference(inference.make_predict(model, config.data, mesh), variables, test,
                                                    config, mesh, order)
    results.update({
        f"{order}/predictions": predictions, f"{order}/features": features,
        f"{order}/mesh_processes": np.array([device.process_index for device in mesh.devices.flat])
    })
  if jax.process_index() == 0:
    np.savez(out, **results)
