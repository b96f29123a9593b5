"""What the command-line entry points (main, study, import_torch) share: the --config flag, flag parsing
and error reporting, each failure a user can cause ending with one line and no traceback."""
from __future__ import annotations

import os
import re
import sys
from typing import Callable

from absl import flags, logging
from ml_collections import config_flags

from ltr_jax.errors import LtrError, Preempted, first_line

FLAGS = flags.FLAGS


def define_config_flag() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).", lock_config=True)


def config_import_paths(config_file: str) -> list[str]:
  """Where a config file's imports are found, whatever the working directory: the folder above its own when that is
  a `configs` package (`from configs import base`), and the checkout that holds ltr_jax's configs/ (a config of
  one's own, kept beside one's data, that builds on configs/base.py)."""
  here = os.path.dirname(os.path.abspath(config_file))
  roots = [os.path.dirname(here)] if os.path.isfile(os.path.join(here, "__init__.py")) else []
  checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if os.path.isfile(os.path.join(checkout, "configs", "base.py")):
    roots.append(checkout)
  return roots


def _raised_in(error: BaseException, config_file: str | None) -> bool:
  """Whether `error` came out of the code of `config_file` (a frame of its traceback, or its syntax)."""
  if config_file is None:
    return False
  target = os.path.abspath(config_file)
  if isinstance(error, SyntaxError) and error.filename and os.path.abspath(error.filename) == target:
    return True
  frame = error.__traceback__
  while frame is not None:
    if os.path.abspath(frame.tb_frame.f_code.co_filename) == target:
      return True
    frame = frame.tb_next
  return False


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a missing config file, one that cannot be imported or an override of no config key ends with
  one line."""
  path = None
  for i, arg in enumerate(argv[1:], 1):
    path = arg[len("--config="):] if arg.startswith("--config=") else \
        argv[i + 1] if arg == "--config" and i + 1 < len(argv) else path
  if path is not None:
    if not os.path.isfile(path.split(":", 1)[0]):
      sys.exit(f"error: --config={path}: no such config file")
    sys.path[1:1] = [root for root in config_import_paths(path.split(":", 1)[0]) if root not in sys.path]
  try:
    return FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - each kind ends in one line below
    failed = next((error for error in (e, e.__cause__, e.__context__)
                   if error is not None and _raised_in(error,
                                                       path.split(":", 1)[0] if path else None)), None)
    if failed is not None:  # the config file itself: an import, a syntax error, its get_config
      sys.exit(f"error: --config={path}: cannot be loaded ({type(failed).__name__}: {first_line(failed)})")
    if isinstance(e, flags.Error):
      sys.exit(f"error: {e}\nPass --helpfull to see the flags.")
    if not isinstance(e, (AttributeError, KeyError)):
      raise
    # ml_collections: an override of a key the config lacks
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
