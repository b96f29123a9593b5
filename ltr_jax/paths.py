"""Every file ltr_jax writes, and every workdir file it reads, goes through this path layer (etils.epath), so a
`gs://bucket/run` workdir works as a local one (Orbax writes its checkpoints there through TensorStore).

An object store is not a file system: no append, no atomic rename, no empty folders, no memory mapping. So:
- whole-file writes: locally a temporary file renamed over the target (atomic), remotely one object upload
  (atomic on GCS: a reader sees the old or the new object);
- `JsonLines` (metrics.jsonl): locally appended; remotely the whole object rewritten at each flush;
- arrays (.npy): memory-mapped locally, read whole remotely;
- `savefig` through a file object, its format named;
- TensorBoard event files through the same layer (`tensorboard_writer`).
fsspec's listing cache is off: objects written by another client (Orbax's TensorStore, another process) would
otherwise stay invisible to `exists()` and be read short.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
from typing import Any

import fsspec
import numpy as np
from etils import epath

from ltr_jax.errors import ConfigError, first_line

fsspec.config.conf.setdefault("gcs", {})["use_listings_cache"] = False

PathLike = str | os.PathLike


def is_remote(p: PathLike) -> bool:
  """A path of an object store (gs://, s3://, ...)."""
  return "://" in os.fspath(p)


def path(p: PathLike) -> epath.Path:
  """`p` as an epath.Path; a local path made absolute."""
  return epath.Path(p) if is_remote(p) else epath.Path(os.path.abspath(os.fspath(p)))


def join(p: PathLike, *parts: str) -> str:
  """`p` / parts as a string (local paths absolute)."""
  return os.fspath(path(p).joinpath(*parts))


def makedirs(p: PathLike) -> None:
  """Creates the folder `p` locally; remotely nothing (a prefix exists once an object is under it)."""
  if not is_remote(p):
    os.makedirs(os.fspath(path(p)), exist_ok=True)


def exists(p: PathLike) -> bool:
  return path(p).exists()


def is_dir(p: PathLike) -> bool:
  return path(p).is_dir()


@contextlib.contextmanager
def _writing(p: PathLike):
  """A binary file object that becomes `p` when closed: locally a temporary file renamed over `p`, remotely one
  object upload (streamed; the object appears whole when the upload completes)."""
  target = path(p)
  if is_remote(p):
    with target.open("wb") as f:
      yield f
    return
  makedirs(target.parent)
  temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
  with open(temporary, "wb") as f:
    yield f
  os.replace(temporary, target)


def write_bytes(p: PathLike, data: bytes) -> None:
  """Writes the whole file at once (atomically, see the module doc)."""
  with _writing(p) as f:
    f.write(data)


def write_text(p: PathLike, text: str) -> None:
  write_bytes(p, text.encode())


def read_text(p: PathLike) -> str:
  return path(p).read_text()


def write_json(p: PathLike, value: Any, indent: int = 1) -> None:
  write_text(p, json.dumps(value, indent=indent))


def read_json(p: PathLike) -> Any:
  return json.loads(read_text(p))


def save_array(p: PathLike, array: np.ndarray) -> None:
  """`array` as a .npy file (atomically, see the module doc), streamed: no second copy in memory."""
  with _writing(p) as f:
    np.save(f, array)


def load_array(p: PathLike) -> np.ndarray:
  """A .npy file: memory-mapped where it is local (read as used; its data starts 64-byte aligned), else read
  whole."""
  if not is_remote(p):
    return np.load(os.fspath(path(p)), mmap_mode="r")
  with path(p).open("rb") as f:
    return np.load(f)


def savefig(figure, p: PathLike, **kwargs) -> None:
  """figure.savefig to `p`, its format taken from the suffix (a remote file object has no name to take it from)."""
  with _writing(p) as f:
    figure.savefig(f, format=path(p).suffix.lstrip("."), **kwargs)


class _RemoteRecords:
  """A growing file on an object store (which has no append): its bytes kept, the whole object rewritten at each
  flush that has something new."""

  def __init__(self, p: PathLike, initial: bytes = b""):
    self._path, self._buffer, self._written = path(p), io.BytesIO(), len(initial)
    self._buffer.write(initial)

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    if self._buffer.tell() != self._written:
      self._path.write_bytes(self._buffer.getvalue())
      self._written = self._buffer.tell()

  def close(self) -> None:
    self.flush()


class JsonLines:
  """A file of JSON lines that grows: appended locally, rewritten whole remotely at each flush."""

  def __init__(self, p: PathLike):
    target = path(p)
    if is_remote(p):
      self._file = _RemoteRecords(target, target.read_bytes() if target.exists() else b"")
    else:
      makedirs(target.parent)
      self._file = open(target, "ab")

  def write(self, value: dict[str, Any]) -> None:
    self._file.write((json.dumps(value) + "\n").encode())

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class _RemoteRecordsFactory:

  def open(self, p: str) -> _RemoteRecords:
    return _RemoteRecords(p)

  def directory_check(self, p: str) -> None:
    """Object stores have no folders to create."""


def tensorboard_writer(logdir: PathLike):
  """A tensorboardX SummaryWriter in `logdir`, local or remote (through this layer, not tensorboardX's own gs://
  client, which uploads the whole file again when it is garbage-collected and waits minutes on a lost server)."""
  from tensorboardX import SummaryWriter, record_writer
  for scheme in ("gs", "s3"):
    record_writer.register_writer_factory(scheme, _RemoteRecordsFactory())
  return SummaryWriter(os.fspath(path(logdir)))


def require_shared(directory: PathLike, what: str) -> None:
  """With several processes: ConfigError in one line (on every process) unless they all see `directory` as one
  folder (a gs:// bucket, a network file system): process 0 writes a token there that every process must read.
  Orbax writes a checkpoint from several processes into one folder; on disks the hosts do not share it would
  wait for ever."""
  from ltr_jax import parallel  # the mesh layer, below which this module sits
  import jax
  if jax.process_count() == 1:
    return
  token = path(directory) / ".ltr_jax_shared_check"
  expected = f"{os.getpid()}"
  if jax.process_index() == 0:
    write_text(token, expected)
  expected = parallel.broadcast_text(expected)
  parallel.barrier("shared-folder token written")
  seen = token.exists() and token.read_text() == expected
  if not parallel.all_true(seen):
    raise ConfigError(f"{what} in {os.fspath(directory)} needs a folder that every host shares (a gs:// bucket or "
                      "a network file system), and the hosts here see different folders")


def _write_check(folder: epath.Path) -> None:
  """Writes and removes a small file in `folder`: raises what the file system or the object store raises."""
  probe = folder / f".ltr_jax_write_check.{os.getpid()}"
  probe.write_text("")
  probe.unlink()


_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")


def bucket_problem(name: str) -> str | None:
  """What breaks Cloud Storage's bucket naming rules in `name` (None if nothing): 3 to 63 characters (222 with dots,
  63 between them) of lowercase letters, digits, '-', '_' and '.', beginning and ending with a letter or digit, not
  an IP address, not beginning with 'goog' nor containing 'google'
  (https://cloud.google.com/storage/docs/buckets#naming)."""
  if not _BUCKET_CHARS.fullmatch(name):
    return "only lowercase letters, digits, '-', '_' and '.', beginning and ending with a letter or digit"
  if "." not in name and not 3 <= len(name) <= 63:
    return f"{len(name)} characters, where 3 to 63 are allowed"
  if "." in name and (len(name) > 222 or any(not 1 <= len(part) <= 63 for part in name.split("."))):
    return "at most 222 characters with dots, and 1 to 63 between them"
  if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", name):
    return "an IP address"
  if name.startswith("goog") or "google" in name:
    return "begins with 'goog' or contains 'google'"
  return None


def check_workdir(workdir: PathLike, timeout: float = 20.0) -> None:
  """ConfigError in one line, before any work, if `workdir` is a file or cannot be written (a remote one: a bucket
  name that Cloud Storage's rules forbid, or within `timeout` seconds: a missing bucket, no credentials, an
  unreachable endpoint)."""
  where, target = os.fspath(workdir), path(workdir)
  if where.startswith("gs://"):
    bucket = where[len("gs://"):].split("/", 1)[0]
    problem = bucket_problem(bucket)
    if problem:
      raise ConfigError(f"--workdir={where}: {bucket!r} is not a Cloud Storage bucket name ({problem})")
  if not is_remote(workdir):
    if target.exists() and not target.is_dir():
      raise ConfigError(f"--workdir={where} is a file, not a directory: pass a directory (it is created if missing)")
    try:
      makedirs(target)
      _write_check(target)
    except OSError as e:
      raise ConfigError(f"--workdir={where} cannot be written: {e.strerror or e}") from e
    return
  outcome: list[BaseException | None] = []

  def probe() -> None:
    try:
      _write_check(target)
      outcome.append(None)
    except BaseException as e:  # noqa: BLE001 - reported below, in one line
      outcome.append(e)

  thread = threading.Thread(target=probe, daemon=True)  # a daemon: a hung client does not keep the process alive
  thread.start()
  thread.join(timeout)
  if not outcome:
    raise ConfigError(f"--workdir={where} cannot be reached within {timeout:.0f} s: check the bucket name, network "
                      "and credentials (gcloud auth application-default login)")
  if outcome[0] is not None:
    raise ConfigError(f"--workdir={where} cannot be written ({type(outcome[0]).__name__}: "
                      f"{first_line(outcome[0], limit=200)}): check the bucket name and credentials "
                      "(gcloud auth application-default login)")
