"""grain input pipelines: sampler -> decode -> augment -> batch, sharded per host.

The training stream is organised by global step: row r of global batch s is draw
k = epoch * N + (s mod steps_per_epoch) * B + r of the sampler, with epoch = s // steps_per_epoch, and
process p feeds rows [p * b, (p + 1) * b) of every global batch. Everything, augmentation randomness
included, is a pure function of (seed, step, row), so the iterator state that goes into a checkpoint is
the step number alone, and a run restarted at step s continues exactly.
"""
from __future__ import annotations

import dataclasses
import gc
import os
from typing import Iterator

import grain
import numpy as np
from absl import flags

from ltr_jax.data.sampling import IndexSampler, process_positions
from ltr_jax.data.sources import Source, undecoded
from ltr_jax.data.transforms import Transform

try:  # grain's queue of shared-memory releases, which _release_shared_memory waits for (not a public API)
  from grain._src.python.ipc.shared_memory_array import SharedMemoryArray as _SharedMemoryArray
except ImportError:
  _SharedMemoryArray = None


@dataclasses.dataclass
class _TrainRecord:
  """Local position j of one process -> (augmented image, label). Picklable for grain workers."""
  source: Source
  sampler: IndexSampler
  transform: Transform
  global_batch: int
  steps_per_epoch: int
  process_index: int
  process_count: int
  seed: int

  def __call__(self, local_position: int) -> dict[str, np.ndarray]:
    g = process_positions(int(local_position), self.global_batch, self.process_index, self.process_count)
    step, row = divmod(g, self.global_batch)
    epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
    index = self.sampler[epoch * len(self.sampler) + step_in_epoch * self.global_batch + row]
    rng = np.random.Generator(np.random.Philox(key=[self.seed, g]))
    image = self.transform(undecoded(self.source, index), rng)
    return {"image": np.ascontiguousarray(image), "label": np.int32(self.source.labels[index])}


@dataclasses.dataclass
class _EvalRecord:
  """Local position j -> (image, label, index): the sample's index in `source`; positions past the split are
  padding (index >= len(source), the image and label of sample 0)."""
  source: Source
  transform: Transform
  global_batch: int
  process_index: int
  process_count: int

  def __call__(self, local_position: int) -> dict[str, np.ndarray]:
    g = process_positions(int(local_position), self.global_batch, self.process_index, self.process_count)
    index = g if g < len(self.source) else 0
    return {
        "image": np.ascontiguousarray(self.transform(undecoded(self.source, index), None)),
        "label": np.int32(self.source.labels[index]), "index": np.int32(g)
    }


def worker_processes(num_workers: int) -> int:
  """Config key data.num_workers: -1 is one worker process per core this process may run on (the training
  process itself needs almost none: benchmarks/pipeline.py); 0 decodes in this process, with threads."""
  return len(os.sched_getaffinity(0)) if num_workers < 0 else num_workers


def _iterate(dataset: grain.MapDataset, local_batch: int, num_workers: int) -> Iterator[dict]:
  if not flags.FLAGS.is_parsed():  # grain reads absl flags; a library caller may not have parsed them
    flags.FLAGS.mark_as_parsed()
  num_workers = worker_processes(num_workers)
  threads = 0 if num_workers else 4
  # The elements read are whole batches (38 MB at 256 x 224 x 224 x 3): a buffer of one per read thread
  # keeps every thread busy.
  batched = dataset.batch(local_batch, drop_remainder=True).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
  if num_workers:
    batched = batched.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2))
  iterator = iter(batched)
  try:
    for batch in iterator:
      # Worker processes hand batches over in shared memory: copied out at once (a few MB, about 1% of the decoding
      # work), so that no segment outlives the iterator in a batch the caller keeps.
      yield {k: np.array(v) if num_workers else np.asarray(v) for k, v in batch.items()}
      batch = None
  finally:
    if hasattr(iterator, "close"):  # stops grain's worker processes and frees their shared memory
      iterator.close()
    if num_workers:
      _release_shared_memory()


def _release_shared_memory() -> None:
  """Waits for grain's pending releases of shared-memory segments. grain unmaps and unlinks the segments of consumed
  batches on a background thread; those still queued when the interpreter exits leak, and the resource tracker
  reports 'leaked shared_memory objects' (and the tracebacks of arrays unmapped during shutdown). The thread is one,
  so a no-op through it returns once everything queued before is done."""
  gc.collect()
  pool = getattr(_SharedMemoryArray, "_del_thread_pool", None)
  if pool is not None:
    pool.apply(lambda: None)


def steps_per_epoch(num_samples: int, global_batch: int) -> int:
  """Steps of one epoch of N draws (the last partial batch is dropped, at least one step)."""
  return max(1, num_samples // global_batch)


def train_batches(source: Source, sampler: IndexSampler, transform: Transform, *, global_batch: int, start_step: int,
                  num_steps: int, seed: int, process_index: int = 0, process_count: int = 1,
                  num_workers: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Local batches of steps [start_step, num_steps): {'image': uint8 [b,H,W,C], 'label': int32 [b]}."""
  local_batch = global_batch // process_count
  record = _TrainRecord(source, sampler, transform, global_batch, steps_per_epoch(len(sampler), global_batch),
                        process_index, process_count, seed)
  dataset = grain.MapDataset.range(start_step * local_batch, num_steps * local_batch).map(record)
  return _iterate(dataset, local_batch, num_workers)


def eval_batches(source: Source, transform: Transform, *, global_batch: int, process_index: int = 0,
                 process_count: int = 1, num_workers: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `source` in order, padded to whole global batches; 'index' tells real samples from padding."""
  local_batch = global_batch // process_count
  num_batches = -(-len(source) // global_batch)
  record = _EvalRecord(source, transform, global_batch, process_index, process_count)
  dataset = grain.MapDataset.range(0, num_batches * local_batch).map(record)
  return _iterate(dataset, local_batch, num_workers)
