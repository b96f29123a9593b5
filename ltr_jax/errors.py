"""Errors a user can cause. Each carries one message naming the file, line or config key at fault."""


def first_line(error: BaseException, limit: int | None = 300) -> str:
  """The first line of `error`'s message (its type's name if it has none), at most `limit` characters: libraries'
  messages (TFDS, TensorStore, Orbax) go on for pages, and ours are one line. TensorStore's pointer to its spec
  ('See full TensorStore details: <bound method ...>') is left out."""
  line = (str(error).strip().splitlines() or [type(error).__name__])[0]
  head, cut, _ = line.partition(" See full TensorStore details")
  return (head.rstrip(".:; ") if cut else head)[:limit]


class LtrError(Exception):
  """Base class: `main` prints the message and exits non-zero, without a traceback."""


class DataError(LtrError):
  """Bad or missing data: a list line, an image, a label, an empty class, an IDX header."""


class ConfigError(LtrError):
  """A config key that is unknown, missing or out of range."""


class CheckpointError(LtrError):
  """A checkpoint that is missing or belongs to another model / class count."""


class TrainingError(LtrError):
  """Training diverged (NaN loss)."""


class Preempted(LtrError):
  """The run got SIGTERM (a preemption notice), saved a checkpoint and stopped; rerunning the command resumes."""
  exit_code = 143  # 128 + SIGTERM, as a process killed by the signal reports it
