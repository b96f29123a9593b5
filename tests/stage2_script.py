"""Runs stage 2 (ltr_jax.main's --mode=decouple) in its own process, with a given device count and jax.distributed
setup, on the workdir's stage-1 checkpoint.

Used by tests that need a fresh JAX runtime: several processes on localhost, each with its own workdir.
usage: python tests/stage2_script.py WORKDIR DEVICES [COORDINATOR NUM_PROCESSES PROCESS_ID] [--export]
Without --export no checkpoint is written (stage2.export = ()): hosts whose workdirs are not shared cannot write one.
"""
import os
import sys

if __name__ == "__main__":  # before JAX starts: the device count of this process
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[2]}"
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ltr_jax import cli, parallel  # noqa: E402
from ltr_jax.stage2 import run  # noqa: E402
from train_script import tiny_config  # noqa: E402


def stage2_config():
  """tiny_config with a validation split (20 per class) and the methods on features, batch 100 for features."""
  config = tiny_config()
  config.data.val_per_class = 20
  config.stage2.update(dict(batch_size=100, export=(),
                            methods=("joint", "ncm", "crt_cached", "tau_norm", "lws_cached")))
  return config


if __name__ == "__main__":
  config = stage2_config()
  if "--export" in sys.argv:
    config.stage2.export = ("best",)
    sys.argv.remove("--export")
  if len(sys.argv) > 3:
    config.distributed.update(
        dict(coordinator_address=sys.argv[3], num_processes=int(sys.argv[4]), process_id=int(sys.argv[5])))
  parallel.initialize(config)
  cli.run_or_exit(lambda: run.run(config, sys.argv[1]))
