"""A data check before any training step: missing images, labels out of range, empty training classes.

Without it, a missing image is found when the sampler first draws it (possibly hours into stage 1) and a
test label out of range at the first evaluation. `check` reads no image: existence is tested by listing
each image directory once (`os.scandir`) and looking the listed names up in a set, so a million list
entries over ~1000 directories on local disk take about a second (benchmarks/preflight.py), where one
`os.stat` per image costs a system call each and far more on a network filesystem.
With config key data.preflight_decode (`Splits.preflight_decode`) it also decodes every image, in threads
(libjpeg-turbo and Pillow decode outside the GIL), so that a corrupt file stops the run before any step.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from concurrent import futures

import jax
import ml_collections
import numpy as np

from ltr_jax import parallel, progress
from ltr_jax.data import datasets
from ltr_jax.data.datasets import Splits
from ltr_jax.data.longtail import base_records
from ltr_jax.data.sources import EncodedImage
from ltr_jax.errors import DataError

SHOWN = 5  # examples named per problem
DECODE_BLOCK = 256  # images per task of the decoding threads


def _where(source, index: int, split: str, position: int) -> str:
  """Where a record was listed: file:line (list file), JSON file + image id, or the split's record number."""
  return source.where(index) if hasattr(source, "where") else f"{split} record {position}"


def _files_in(directory: str) -> set[str] | None:
  """Names of the files (or links to files) in `directory`; None where it cannot be listed."""
  try:
    with os.scandir(directory) as entries:
      return {entry.name for entry in entries if entry.is_file()}
  except OSError:
    return None


def missing_images(source, indices: np.ndarray, listings: dict[str, set[str] | None] | None = None) -> np.ndarray:
  """Sorted indices among `indices` (unique) of a file-backed source (`.paths`, `.image_root`) whose image
  file is absent.

  Each directory is listed once (a few Python operations per entry, no system call per image) into
  `listings` (directory -> file names), which calls for other sources over the same folders can share; a
  directory that cannot be listed (absent, or without read permission) falls back to one `os.path.isfile` per
  image in it.
  """
  listings = {} if listings is None else listings
  by_directory = defaultdict(list)
  paths = source.paths
  for i in indices.tolist():
    directory, slash, name = paths[i].rpartition("/")
    by_directory[directory + slash].append((name, i))  # "/x.jpg" is in "/", not in image_root
  missing = []
  for directory, entries in by_directory.items():
    directory = os.path.join(source.image_root, directory)
    if directory not in listings:
      listings[directory] = _files_in(directory)
    names = listings[directory]
    if names is None:
      missing += [i for name, i in entries if not os.path.isfile(os.path.join(directory, name))]
    else:
      missing += [i for name, i in entries if name not in names]
  return np.sort(np.asarray(missing, dtype=np.int64))


def _decode_errors(source, indices: np.ndarray) -> list[tuple[int, str]]:
  """(position in `indices`, DataError message naming the file and where it was listed) of the records among
  `indices` of `source` (one with `undecoded`) whose image cannot be read or decoded, in order."""
  errors = []
  for position, i in enumerate(indices.tolist()):
    try:
      image = source.undecoded(i)
      if isinstance(image, EncodedImage):
        image.decode()
    except DataError as e:
      errors.append((position, str(e)))
  return errors


@dataclasses.dataclass(frozen=True)
class Decoded:
  """The decoding check over every process: images decoded in all (`total`) and by this process (`here`), and
  (position among all the records, message) of each that does not decode, in record order."""
  total: int
  here: int
  failures: list[tuple[int, str]]


def undecodable_images(records: list[tuple[object, np.ndarray]]) -> Decoded:
  """Decodes every image of the (source, indices) pairs, each process its share (every process_count-th image from
  its process_index on), in one thread per core with a progress bar; the failures of every process are gathered,
  so each reports the same."""
  rank, count = jax.process_index(), jax.process_count()
  offsets = np.cumsum([0] + [len(indices) for _, indices in records])[:-1]
  blocks = [(source, indices[rank::count][k:k + DECODE_BLOCK], int(offset) + rank + count * k)
            for (source, indices), offset in zip(records, offsets)
            for k in range(0, len(indices[rank::count]), DECODE_BLOCK)]
  here = int(sum(len(indices) for _, indices, _ in blocks))
  errors = []
  with futures.ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool, \
      progress.bar(here, "checking images: decoding", unit="image", disable=rank != 0) as bar:
    for (_, indices, start), found in zip(blocks, pool.map(lambda block: _decode_errors(*block[:2]), blocks)):
      errors += [(start + count * i, message[:300]) for i, message in found]
      bar.update(len(indices))
  # Two gathers: the size of the largest report first (every process sends a buffer of one size), then the reports.
  report = {"here": here, "failures": errors}
  size = max(parallel.gather_json(len(json.dumps(report).encode())))
  every = parallel.gather_json(report, size=max(size, 1))
  failures = sorted((int(position), message) for r in every for position, message in r["failures"])
  return Decoded(sum(r["here"] for r in every), here, failures)


def _label_problems(split: str, source, num_classes: int) -> str | None:
  labels = np.asarray(source.labels)
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if not bad.size:
    return None
  base, indices = base_records(source)
  shown = ", ".join(f"{labels[k]} at {_where(base, int(indices[k]), split, int(k))}" for k in bad[:SHOWN])
  return f"{bad.size} {split} label(s) outside [0, {num_classes}): {shown}"


def check(splits: Splits) -> None:
  """Raises one DataError naming every problem found in `splits`, before any training step.

  (a) every image listed by a file-backed split (ListFileSource, INatJsonSource, or a Subset of one: only its
  own records) exists: the message counts the missing ones and names the first five with their list-file line
  or JSON image id; (b) every label of every split lies in [0, num_classes); (c) no training class is empty.
  Sources without image files (IDX arrays, TFDS) get (b) and (c) only. Where (a) to (c) pass and
  `splits.preflight_decode`: (d) every image of a source that stores encoded images (files, TFDS) decodes, its
  records read as the pipeline reads them: the message counts those that do not and names the first five.
  """
  named = [(name, getattr(splits, name)) for name in ("train", "val", "test")]
  named = [(name, source) for name, source in named if source is not None]
  problems = [p for name, source in named if (p := _label_problems(name, source, splits.num_classes))]
  labels = np.asarray(splits.train.labels)
  counts = np.bincount(labels[(labels >= 0) & (labels < splits.num_classes)], minlength=splits.num_classes)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    problems.append(f"{empty.size} of {splits.num_classes} classes have no training image: class(es) "
                    f"{', '.join(map(str, empty[:20].tolist()))}{', ...' if empty.size > 20 else ''}")
  # Every base source once, with the union of the records its splits use (val is often a Subset of train's).
  records: dict[int, tuple[object, list[np.ndarray]]] = {}
  for _, source in named:
    base, indices = base_records(source)
    records.setdefault(id(base), (base, []))[1].append(indices)
  used = []
  for base, parts in records.values():
    mask = np.zeros(len(base), bool)
    for part in parts:
      mask[part] = True
    used.append((base, np.flatnonzero(mask)))  # A mask: numpy 2's np.unique takes ~1 s on 1M indices.
  listed, shown, total, listings = 0, [], 0, {}
  for base, indices in used:
    if hasattr(base, "paths") and hasattr(base, "image_root"):
      missing = missing_images(base, indices, listings)
      listed, total = listed + indices.size, total + missing.size
      shown += [f"{base.image_path(i)} (listed at {base.where(i)})" for i in missing[:SHOWN - len(shown)].tolist()]
  if total:
    problems.append(f"{total} of {listed} listed images are missing: {', '.join(shown)}"
                    f"{', ...' if total > SHOWN else ''} (config key data.preflight=False skips this check)")
  if not problems and splits.preflight_decode:
    decoded = undecodable_images([(base, indices) for base, indices in used if hasattr(base, "undecoded")])
    if decoded.failures:
      shown = "; ".join(message for _, message in decoded.failures[:SHOWN])
      problems.append(f"{len(decoded.failures)} of {decoded.total} images do not decode: {shown}"
                      f"{'; ...' if len(decoded.failures) > SHOWN else ''}")
  if problems:
    raise DataError(f"data check of {splits.name or 'the dataset'}: " + "; ".join(problems))


def checked_splits(data: ml_collections.ConfigDict) -> Splits:
  """The splits of config key `data`, checked first unless data.preflight is False."""
  splits = datasets.build_splits(data)
  if data.preflight:
    check(splits)
  return splits
