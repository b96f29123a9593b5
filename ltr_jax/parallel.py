"""Data parallelism over every device of every host: a 1-D mesh, sharded batches, replicated state.

`jax.jit` over a `jax.make_mesh` mesh, not `jax.pmap` (in maintenance since JAX 0.8): the batch is
sharded on axis 'data', parameters are replicated, and a mean over the batch axis (BatchNorm, the loss)
is over the global batch.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections

from ltr_jax.errors import ConfigError

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
