"""Command line: python -m ltr_jax.main --config=configs/quickstart.py --workdir=DIR [--mode=all].

Modes: train (stage 1), decouple (stage 2 on the stage-1 checkpoint in the workdir), all (both),
evaluate (any stage-1 or stage-2 checkpoint on the test split). Config fields are overridden with
--config.a.b=value; the config is locked, so an unknown key is an error.
"""
from __future__ import annotations

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ltr_jax.errors import LtrError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, features and reports.")
flags.DEFINE_enum("mode", "all", ["train", "decouple", "evaluate", "all"], "What to run.")
flags.DEFINE_string("checkpoint", None, "--mode=evaluate: a checkpoint directory (default: the "
                    "workdir's stage-2 checkpoint, else its stage-1 checkpoint).")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, where a config override naming no config key ends with one line, not a trace."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}\nPass --helpfull to see the flags.")
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config lacks
    message = str(e).replace("\\n", " ").replace("\\'", "'")
    key = (re.findall(r"'(\w+)'", message) or [message])[0]
    hint = message[message.find("Did you mean"):].rstrip("\"'") if "Did you mean" in message else ""
    culprits = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a.split("=")[0]]
    sys.exit(f"error: {' '.join(culprits) or key}: no such config key (the config is locked; every key "
             f"is in configs/base.py). {hint}".rstrip())


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:  # Orbax logs every save step at INFO; -v 0 brings it back
    logging.set_verbosity(logging.ERROR)
  # Imported here so that --help answers without loading JAX.
  from ltr_jax import decouple, evaluate, parallel, report, train
  config = FLAGS.config
  try:
    parallel.initialize(config)
    if FLAGS.mode in ("train", "all"):
      train.train_and_evaluate(config, FLAGS.workdir)
    if FLAGS.mode in ("decouple", "all"):
      results = decouple.run(config, FLAGS.workdir)
      if "files" in results:
        print(report.markdown_table(results))
        print("wrote:\n  " + "\n  ".join(results["files"]))
    if FLAGS.mode == "evaluate":
      evaluate.run(config, FLAGS.workdir, FLAGS.checkpoint)
  except LtrError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
