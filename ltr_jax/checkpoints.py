"""Orbax checkpoints with three items, and loading a model out of them.

A step directory holds the items
- `model`: {params, batch_stats}, everything needed to run the network;
- `opt_state`: the optimizer state (absent from imported and stage-2 checkpoints);
- `meta`: JSON {model, num_classes, stage, head (a models.HeadSpec), step, data_position, config, ...}: enough to refuse a checkpoint of
  another architecture or class count before touching the arrays. The data-iterator position is the global step
  (the pipeline is a pure function of it).
Readers that only run the network (stage 2, --mode=evaluate, train.init_from) restore `model` alone, from
abstract shapes (jax.eval_shape: no initialisation runs, no optimizer is built); resuming restores all three.
Saves are atomic (Orbax writes a temporary directory and renames it), so a crash mid-save never corrupts the
checkpoints already there. `meta` holds a sha256 of each item's arrays, checked on every restore: a checkpoint
damaged later (a failing disk, an interrupted copy) is named in one line, and training resumes from the newest
readable one.
"""
from __future__ import annotations

import gc
import hashlib
import inspect
import json
import logging
import sys
import warnings
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from ltr_jax import models, parallel, paths
from ltr_jax.errors import CheckpointError, first_line
from ltr_jax.models import LTRModel

Variables = dict[str, Any]  # {'params': ..., 'batch_stats': ...}


def model_meta(config: ml_collections.ConfigDict, num_classes: int, stage: str = "stage1",
               head_spec: models.HeadSpec | None = None, settings: dict[str, Any] | None = None,
               class_names: list[str] | None = None, image_shape: tuple[int, ...] | None = None,
               peft: models.Peft = models.Peft()) -> dict[str, Any]:
  """The meta item: model, class count, stage, what the head computes (a models.HeadSpec; default: config keys
  model.head, model.head_scale), the config, and where known: `settings`, {key: value} of what shaped the run's
  checkpoints (a resume under other settings is a SettingsChanged); the classes' names in label order (evaluation
  and prediction name classes by them and check the data's against them); the input's shape (H, W, C); a ViT's
  parameter-efficient modules (models.Peft), without which its params would not fit."""
  meta = {
      "model": config.model.name, "num_classes": int(num_classes), "stage": stage,
      "head": (head_spec or models.HeadSpec.of_config(config.model)).to_dict(), "config": config.to_json()
  }
  if peft != models.Peft():
    meta["peft"] = peft.to_dict()
  for key, value in (("settings", settings), ("class_names", class_names), ("image_shape", image_shape)):
    if value is not None:
      meta[key] = json.loads(json.dumps(value))  # as the meta item reads back: tuples as lists
  return meta


def head_spec_of(meta: dict[str, Any]) -> models.HeadSpec:
  """The HeadSpec a checkpoint's meta records."""
  return models.HeadSpec.from_dict(meta["head"])


def abstract_variables(model: LTRModel, image_shape: tuple[int, ...], mesh: Mesh) -> Variables:
  """Shapes, dtypes and (replicated) shardings of the model's variables, without initialising anything."""
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, *image_shape), model.dtype))
  return replicated_like({"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}, mesh)


def replicated_like(abstract: Any, mesh: Mesh) -> Any:
  """`abstract` (a pytree of shapes) with every leaf replicated over `mesh`: the target of a restore."""
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract)


def checksum(tree: Any) -> str:
  """sha256 of every array of `tree` (in leaf order: dtype, shape, bytes). Arrays are replicated: each process
  hashes its own copy and gets the same digest."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      if not leaf.is_fully_replicated:
        raise ValueError("checkpoint checksums cover replicated arrays only")
      leaf = leaf.addressable_data(0)
    leaf = np.asarray(leaf)
    digest.update(f"{leaf.dtype}{leaf.shape}".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


class DamagedCheckpoint(CheckpointError):
  """A checkpoint step that cannot be read or whose arrays do not match their checksum."""


class SettingsChanged(CheckpointError):
  """A checkpoint made under other settings than the run that would resume it: `changes` lists (key, its value then,
  its value now)."""

  def __init__(self, directory: Any, step: int, changes: list[tuple[str, Any, Any]]):
    self.directory, self.step, self.changes = directory, step, changes
    shown = "; ".join(f"{key} = {then!r} there, {now!r} now" for key, then, now in changes[:4])
    super().__init__(f"{directory} holds step {step} of a run with other settings: {shown}"
                     f"{f' (and {len(changes) - 4} more)' if len(changes) > 4 else ''}")


def settings_changes(then: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
  """(key, then, now) of every key whose value differs between two settings dicts (a key one lacks: None there)."""
  return [(key, then.get(key), now.get(key)) for key in sorted(set(then) | set(now)) if then.get(key) != now.get(key)]


_RESTORED_FROM: set[str] = set()  # the checkpoint directories this process has restored from


def _abandoned_read(exception: BaseException | None) -> bool:
  """Whether `exception` is a failed read of a checkpoint restored here (Orbax's wrapper or TensorStore's error)."""
  text = str(exception) if exception is not None else ""
  return "while reading array index" in text or any(directory in text for directory in _RESTORED_FROM)


def _mute_abandoned_reads() -> None:
  """When one array of a restore cannot be read, Orbax leaves the reads of the others behind, and they report
  themselves as they end, some while the restore is still raising, some later or at exit: asyncio logs 'unhandled
  exception during asyncio.run() shutdown' and 'Future exception was never retrieved', TensorStore's finished reads
  find their event loop closed, coroutines are collected unawaited; hundreds of traceback lines after the one-line
  error. Installed before every restore (once per process), this drops those reports (of reads of the checkpoints
  restored here, and of their closed event loop) and lets every other unraisable exception and asyncio record through
  as before."""
  previous = sys.unraisablehook
  if getattr(previous, "mutes_abandoned_reads", False):
    return

  def hook(unraisable) -> None:
    name = getattr(unraisable.object, "__qualname__", "") if inspect.iscoroutine(unraisable.object) else ""
    closed_loop = isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value)
    if not (name.startswith("_read_array") or closed_loop or _abandoned_read(unraisable.exc_value)):
      previous(unraisable)

  def keep(record: logging.LogRecord) -> bool:
    exception = record.exc_info[1] if record.exc_info else None
    return not (_abandoned_read(exception) or "_read_array" in record.getMessage())

  hook.mutes_abandoned_reads = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(keep)


class Manager:
  """A CheckpointManager over `directory` (local or remote, see ltr_jax.paths) that checks the meta of what it
  restores and the checksums of its arrays."""

  def __init__(self, directory: str, max_to_keep: int | None = 2, read_only: bool = False):
    self.directory = paths.path(directory)
    if not read_only:
      paths.makedirs(self.directory)
      paths.require_shared(self.directory, "writing a checkpoint from several processes")
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, read_only=read_only,
                                                             create=not read_only))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def _step(self, step: int | None) -> int:
    """`step` (default: the latest), checked to be a checkpoint in this format."""
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    where = self.directory / str(step)
    if not (where / "model").exists():
      if (where / "state").exists():
        raise CheckpointError(f"{where} is a single-item checkpoint of an older ltr_jax (one 'state' item, no "
                              "'model' item), which this version does not read: rerun its stage or re-import it")
      raise CheckpointError(f"{where} has no 'model' item: not an ltr_jax checkpoint")
    return step

  def read_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self._step(step)
    try:
      return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # noqa: BLE001 - any failure to read it is a damaged item, named in one line
      raise DamagedCheckpoint(f"checkpoint step {step}: {self.directory / str(step) / 'meta'} cannot be read "
                              f"({first_line(e)})") from e

  def check_meta(self, expected: dict[str, Any], step: int | None = None) -> dict[str, Any]:
    """The meta; CheckpointError unless its model and class count are `expected`'s, SettingsChanged unless its
    settings are `expected`'s (where both record them)."""
    step = self._step(step)
    found = self.read_meta(step)
    for key in ("model", "num_classes"):
      if found.get(key) != expected[key]:
        raise CheckpointError(
            f"{self.directory} holds a checkpoint of model {found.get('model')!r} with "
            f"{found.get('num_classes')} classes, but config asks for model {expected['model']!r} with "
            f"{expected['num_classes']} classes (config key model.name / the dataset): use another "
            "--workdir, or the config that made this checkpoint")
    if "settings" in expected and "settings" in found:
      changes = settings_changes(found["settings"], expected["settings"])
      if changes:
        raise SettingsChanged(self.directory, step, changes)
    return found

  def has_opt_state(self, step: int | None = None) -> bool:
    return (self.directory / str(self._step(step)) / "opt_state").exists()

  def _restore(self, step: int, meta: dict[str, Any], **items: Any) -> dict[str, Any]:
    """The items at `step`, their arrays checked against the checksums in `meta` (where it has them)."""
    failure = None
    _RESTORED_FROM.add(str(self.directory))
    _mute_abandoned_reads()
    try:
      restored = self._manager.restore(
          step,
          args=ocp.args.Composite(**{name: ocp.args.StandardRestore(abstract) for name, abstract in items.items()}))
    except Exception as e:  # noqa: BLE001 - besides a mismatch, TensorStore, OCDBT and decompression errors
      mismatch = isinstance(e, KeyError) or isinstance(e, ValueError) and "shape" in str(e).lower()
      failure = (mismatch, first_line(e))
    if failure is not None:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine ... was never awaited"
        gc.collect()  # the abandoned reads, reported (and dropped) now rather than at a later step
      mismatch, cause = failure
      if mismatch:
        raise CheckpointError(f"the checkpoint at {self.directory / str(step)} does not match this model's "
                              f"parameters: {cause}")
      raise DamagedCheckpoint(f"checkpoint step {step} in {self.directory} cannot be read: {cause}")
    for name in items:
      expected = meta.get("checksums", {}).get(name)
      if expected is not None and checksum(restored[name]) != expected:
        raise DamagedCheckpoint(f"checkpoint step {step}: the arrays of {self.directory / str(step) / name} do not "
                                "match their checksum (damaged data)")
    return restored

  def restore_model(self, abstract: Variables, step: int | None = None, expected_meta: dict | None = None) -> Variables:
    """The `model` item at `step` (default latest), with the shapes and shardings of `abstract`."""
    step = self._step(step)
    meta = self.read_meta(step) if expected_meta is None else self.check_meta(expected_meta, step)
    return self._restore(step, meta, model=abstract)["model"]

  def restore_training(self, abstract: Variables, abstract_opt_state: Any,
                       expected_meta: dict) -> tuple[Variables, Any, dict[str, Any]] | None:
    """(model, opt_state, meta) of the newest readable checkpoint, to resume; None in an empty directory.

    A damaged newer checkpoint is reported and moved aside (to damaged-<step>, kept for inspection), so that
    training resumes from the one before it and saves that step anew. Every process agrees on the step and on
    whether it is readable (ltr_jax.parallel). A checkpoint without optimizer state (imported weights) gives
    opt_state None: training starts from it.
    """
    latest = parallel.same_on_all(self._manager.latest_step(), "the latest checkpoint step",
                                  f"the workdir must be one that every host shares ({self.directory})")
    if latest is None:
      return None
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        self._step(step)
        meta = self.check_meta(expected_meta, step)
        if self.has_opt_state(step):
          restored = self._restore(step, meta, model=abstract, opt_state=abstract_opt_state)
          result = restored["model"], restored["opt_state"], meta
        else:
          result = self._restore(step, meta, model=abstract)["model"], None, meta
        error = None
      except DamagedCheckpoint as e:
        error = e
      if parallel.all_true(error is None):
        return result
      print(
          f"warning: {error or 'another host could not read this checkpoint'}; moving it to "
          f"{self.directory / f'damaged-{step}'} and resuming from the checkpoint before it", file=sys.stderr)
      if jax.process_index() == 0:
        (self.directory / str(step)).rename(self.directory / f"damaged-{step}")
      parallel.barrier("checkpoint moved aside")
      self._manager.reload()
    raise CheckpointError(f"no readable checkpoint in {self.directory} (the damaged ones are in damaged-<step>): "
                          "remove the directory to start over, or use another --workdir")

  def save(self, step: int, variables: Variables, meta: dict[str, Any], opt_state: Any = None) -> None:
    """Saves the items with the checksums of their arrays in `meta`."""
    checksums = {"model": checksum(variables)}
    items = {"model": ocp.args.StandardSave(variables)}
    if opt_state is not None:
      checksums["opt_state"] = checksum(opt_state)
      items["opt_state"] = ocp.args.StandardSave(opt_state)
    items["meta"] = ocp.args.JsonSave({**meta, "step": step, "data_position": step, "checksums": checksums})
    self._manager.save(step, args=ocp.args.Composite(**items))

  def wait(self) -> None:
    self._manager.wait_until_finished()


def restore_stage1(config: ml_collections.ConfigDict, directory: str, num_classes: int, image_shape: tuple[int, ...],
                   mesh: Mesh) -> tuple[LTRModel, Variables]:
  """(model, variables) of the latest stage-1 checkpoint in `directory`, checked against the config; its head as its
  meta records it (an imported CLIP's zero-shot head, say)."""
  if not paths.is_dir(directory) or Manager(directory, read_only=True).latest_step() is None:
    raise CheckpointError(f"no stage-1 checkpoint in {directory}: run --mode=train (or --mode=all) "
                          "with this --workdir first")
  manager = Manager(directory, read_only=True)
  meta = manager.check_meta(model_meta(config, num_classes))
  model = models.from_config(config.model, num_classes, head_spec=head_spec_of(meta))
  return model, manager.restore_model(abstract_variables(model, image_shape, mesh))


def default_checkpoint(workdir: str) -> str:
  """The checkpoint of the best stage-2 method (by validation) of the workdir's last stage-2 run (its results.json),
  else its stage-1 checkpoint."""
  results = paths.join(workdir, "results.json")
  best = None
  if paths.exists(results):
    found = paths.read_json(results)
    best = found.get("exported", {}).get(found.get("best"))
  for directory in (best, paths.join(workdir, "checkpoints")):
    if directory and paths.is_dir(directory) and Manager(directory, read_only=True).latest_step() is not None:
      return directory
  raise CheckpointError(f"no stage-2 (the best method of {workdir}/results.json) or stage-1 ({workdir}/checkpoints) "
                        "checkpoint: pass --checkpoint=DIR or run --mode=train first")


def restore_for_inference(config: ml_collections.ConfigDict, directory: str, mesh: Mesh,
                          image_shape: tuple[int, ...] | None = None,
                          given_as: str = "--checkpoint") -> tuple[LTRModel, Variables, dict[str, Any]]:
  """(model, variables, meta) of the latest checkpoint in `directory`, any of ltr_jax's (stage 1, a stage-2 method's,
  imported weights), with the head and modules its meta records. The input's shape: `image_shape`, else the meta's,
  else config key data.image_size with 3 channels. `given_as` names where the directory came from, in errors."""
  if not paths.is_dir(directory):
    raise CheckpointError(f"{given_as}: {directory} is not a directory")
  manager = Manager(directory, read_only=True)
  meta = manager.read_meta()
  if meta["model"] != config.model.name:
    raise CheckpointError(f"{given_as}: {directory} holds model {meta['model']!r}, but config key model.name is "
                          f"{config.model.name!r}: use the config that made this checkpoint")
  shape = image_shape or tuple(meta.get("image_shape") or (config.data.image_size, config.data.image_size, 3))
  model = models.from_config(config.model, meta["num_classes"], head_spec=head_spec_of(meta),
                             peft=models.Peft.from_dict(meta.get("peft")))
  return model, manager.restore_model(abstract_variables(model, shape, mesh)), meta


def load_backbone(config: ml_collections.ConfigDict, directory: str, image_shape: tuple[int, ...],
                  mesh: Mesh) -> Variables:
  """{params: {backbone}, batch_stats} of the checkpoint in `directory` (config key train.init_from).

  E.g. ImageNet-pretrained weights imported with ltr_jax.import_torch, for Places-LT. The head is not
  loaded: the checkpoint may have another class count.
  """
  _, variables, _ = restore_for_inference(config, directory, mesh, image_shape, given_as="config key train.init_from")
  return {"params": {"backbone": variables["params"]["backbone"]}, "batch_stats": variables["batch_stats"]}
