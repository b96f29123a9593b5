"""Data parallelism over every device of every host: a 1-D mesh, sharded batches, replicated state.

`jax.jit` over a `jax.make_mesh` mesh, not `jax.pmap` (in maintenance since JAX 0.8): the batch is
sharded on axis 'data', parameters are replicated, and a mean over the batch axis (BatchNorm, the loss)
is over the global batch.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections

from ltr_jax.errors import ConfigError, LtrError

DATA_AXIS = "data"


def initialize(config: ml_collections.ConfigDict) -> None:
  """Starts jax.distributed when config.distributed or the environment asks for several processes.

  Explicit: config.distributed.{coordinator_address, num_processes, process_id} (a manual launch).
  Implicit: jax.distributed.initialize() with no argument on a cluster JAX detects itself (Cloud TPU
  pods, SLURM, Open MPI), asked for by config.distributed.auto or the JAX_COORDINATOR_ADDRESS variable.
  """
  dist = config.distributed
  if jax.distributed.is_initialized():
    return
  if dist.num_processes > 1:
    if not dist.coordinator_address:
      raise ConfigError("config key distributed.coordinator_address must be set (host:port) when "
                        f"distributed.num_processes = {dist.num_processes}")
    # Collectives between CPU devices of different processes (only the CPU backend reads this).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(dist.coordinator_address, dist.num_processes, dist.process_id)
  elif dist.auto or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()


def data_mesh(devices: list | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def take(values: jax.Array, index: jax.Array, like: jax.Array) -> jax.Array:
  """values[index], sharded as `like`. jax.make_mesh's axes are explicit (jax 0.10), and a gather whose output
  sharding jax cannot infer (a replicated table by sharded labels, a sharded batch by a permutation) is refused
  ('Resource axis ... not found in mesh'); this names it. Works on unsharded arrays too."""
  return values.at[index].get(out_sharding=jax.typeof(like).sharding)


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows -> one global jax.Array per key, sharded over the data axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def to_host(tree):
  """A (possibly multi-host sharded) pytree of arrays -> numpy on every host."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


_MESSAGE_BYTES = 1024

# Decisions that change which collectives a process runs (a cache hit, the resume step, a fault found before
# any work) are agreed by every process; otherwise one process enters a collective the others skip, and the
# job hangs.


def all_true(flag: bool) -> bool:
  """True on every process iff `flag` is True on every process."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.all(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def same_on_all(value: int | None, what: str, hint: str) -> int | None:
  """`value` (an int or None), checked to be the same on every process; ConfigError naming `what` otherwise."""
  if jax.process_count() == 1:
    return value
  values = multihost_utils.process_allgather(np.asarray(-1 if value is None else value, np.int64))
  if len(set(values.tolist())) > 1:
    seen = ", ".join(f"process {i}: {'none' if v < 0 else v}" for i, v in enumerate(values.tolist()))
    raise ConfigError(f"the processes see different values of {what} ({seen}): {hint}")
  return value


def _encode(text: str, size: int = _MESSAGE_BYTES) -> np.ndarray:
  """`text` as a fixed-size uint8 array (its first `size` bytes, zero-padded), for the collectives."""
  encoded = np.zeros(size, np.uint8)
  data = text.encode()[:size]
  encoded[:len(data)] = np.frombuffer(data, np.uint8)
  return encoded


def _decode(encoded: np.ndarray) -> str:
  return bytes(np.asarray(encoded, np.uint8)).rstrip(b"\0").decode(errors="replace")


def broadcast_text(text: str) -> str:
  """Process 0's `text` on every process (at most _MESSAGE_BYTES bytes)."""
  if jax.process_count() == 1:
    return text
  return _decode(multihost_utils.broadcast_one_to_all(_encode(text)))


def gather_json(value: Any, size: int = 16 * _MESSAGE_BYTES) -> list[Any]:
  """Every process's JSON-serialisable `value` (at most `size` bytes as JSON), in process order, on every process."""
  text = json.dumps(value)
  if len(text.encode()) > size:
    raise ValueError(f"gather_json: {len(text.encode())} bytes of JSON, at most {size}")
  if jax.process_count() == 1:
    return [value]
  return [json.loads(_decode(row)) for row in multihost_utils.process_allgather(_encode(text, size))]


def barrier(name: str) -> None:
  """Every process waits here for the others (after process 0 wrote what they may read)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def agreed(work: Callable[[], Any]) -> Any:
  """Runs `work` on every process; if it raises an LtrError on any, every process raises the first one (its
  message, prefixed with its process), so no process goes on alone into a collective."""
  try:
    return_value, error = work(), None
  except LtrError as e:
    return_value, error = None, e
  if jax.process_count() == 1:
    if error is not None:
      raise error
    return return_value
  for process, row in enumerate(multihost_utils.process_allgather(_encode("" if error is None else str(error)))):
    if text := _decode(row):
      raise LtrError(f"process {process}: {text}")
  return return_value


class Preemption:
  """SIGTERM (the notice a spot or preemptible machine gets) seen at a step boundary that every process agrees on.

  With several processes, jax.distributed's coordination service catches SIGTERM on whichever host gets it, and
  `reached(step)` is True at the same step on all of them (multihost_utils.reached_preemption_sync_point); in one
  process, a handler notes the signal and `reached` is True at the next step. The loop then saves and stops.
  """

  def __init__(self):
    self._noticed = False
    self._service = jax.process_count() > 1
    self._previous = None
    if not self._service and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._notice)

  def _notice(self, signum, frame) -> None:
    self._noticed = True

  def reached(self, step: int) -> bool:
    if self._service:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._noticed

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
