"""What the command-line entry points (main, study, import_torch) share: the --config flag, flag parsing
and error reporting, each failure a user can cause ending with one line and no traceback."""
from __future__ import annotations

import os
import re
import sys
from typing import Callable

from absl import flags, logging
from ml_collections import config_flags

from ltr_jax.errors import LtrError, Preempted

FLAGS = flags.FLAGS


def define_config_flag() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a missing config file or an override of no config key ends with one line."""
  for i, arg in enumerate(argv[1:], 1):
    path = arg[len("--config="):] if arg.startswith("--config=") else \
        argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None
    if path is not None and not os.path.isfile(path.split(":", 1)[0]):
      sys.exit(f"error: --config={path}: no such config file")
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


def quiet_logs() -> None:
  """Orbax logs every checkpoint step at INFO; -v 0 (or any --verbosity) brings it back."""
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)


def run_or_exit(work: Callable[[], object]) -> object:
  """Runs `work`; an LtrError (a fault of the user's config, data or checkpoint) exits 1 with its one line, a
  preemption (errors.Preempted, after its checkpoint) 143."""
  try:
    return work()
  except Preempted as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  except LtrError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
