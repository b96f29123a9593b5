"""Runs stage 1 in its own process with a given device count (and jax.distributed setup).

Used by tests that need a fresh JAX runtime: several CPU devices, or several processes on localhost.
usage: python tests/train_script.py WORKDIR OUT.npz DEVICES [COORDINATOR NUM_PROCESSES PROCESS_ID] [--key=value ...]
"""
import os
import sys

if __name__ == "__main__":  # before JAX starts: the device count of this process
  args = [a for a in sys.argv[1:] if not a.startswith("--")]
  overrides = [a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--")]
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args[2]}"
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import quickstart  # noqa: E402
from ltr_jax import cli, parallel, train  # noqa: E402


def tiny_config():
  """Fashion-MNIST-LT with 200 -> 20 images per class, 2 epochs of batch 32, no validation split."""
  config = quickstart.get_config()
  config.data.update(dict(n_max=200, imbalance_ratio=10.0, val_per_class=0))
  config.train.update(dict(epochs=2, batch_size=32, warmup_epochs=0.0, log_every_steps=5))
  return config


if __name__ == "__main__":
  config = tiny_config()
  for key, value in overrides:
    section, name = key.split(".")
    config[section][name] = type(config[section][name])(value)
  if len(args) > 3:
    config.distributed.update(dict(coordinator_address=args[3], num_processes=int(args[4]), process_id=int(args[5])))
  parallel.initialize(config)
  state = cli.run_or_exit(lambda: train.train_and_evaluate(config, args[0]))
  flat = {
      jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(
          parallel.to_host({"params": state.params, "batch_stats": state.batch_stats}))
  }
  if jax.process_index() == 0:
    np.savez(args[1], **flat)
