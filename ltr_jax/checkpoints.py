"""Orbax checkpoints: one step directory holds the state pytree and a JSON 'meta' item.

meta = {model, num_classes, stage, step, data_position, config}: enough to refuse a checkpoint of
another architecture or class count before touching the arrays, and to rebuild the model for
evaluation. The data-iterator position is the global step (the pipeline is a pure function of it).
Saves are atomic (Orbax writes a temporary directory and renames it), so a crash mid-save never
corrupts the checkpoints already there.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from ltr_jax.errors import CheckpointError


def model_meta(config: ml_collections.ConfigDict, num_classes: int, stage: str = "stage1") -> dict[str, Any]:
  return {"model": config.model.name, "num_classes": int(num_classes), "stage": stage,
          "config": config.to_json()}


class Manager:
  """A CheckpointManager over `directory` that checks the meta of what it restores."""

  def __init__(self, directory: str, max_to_keep: int | None = 2, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, read_only=read_only,
                                                             create=not read_only))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def read_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def check_meta(self, expected: dict[str, Any], step: int | None = None) -> dict[str, Any]:
    """Raises CheckpointError unless the checkpoint's model and class count are `expected`'s."""
    found = self.read_meta(step)
    for key in ("model", "num_classes"):
      if found.get(key) != expected[key]:
        raise CheckpointError(
            f"{self.directory} holds a checkpoint of model {found.get('model')!r} with "
            f"{found.get('num_classes')} classes, but config asks for model {expected['model']!r} with "
            f"{expected['num_classes']} classes (config key model.name / the dataset): use another "
            "--workdir, or the config that made this checkpoint")
    return found

  def restore(self, template: Any, step: int | None = None, expected_meta: dict | None = None) -> Any:
    """The state at `step` (default latest), with the shardings and structure of `template`."""
    step = self._manager.latest_step() if step is None else step
    if expected_meta is not None:
      self.check_meta(expected_meta, step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      return self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except (ValueError, KeyError) as e:
      raise CheckpointError(f"the checkpoint at {self.directory}/{step} does not match this model's "
                            f"parameters: {str(e).splitlines()[0]}") from e

  def restore_latest(self, template: Any, expected_meta: dict) -> Any | None:
    """Resumes from the latest checkpoint if there is one; None in an empty directory."""
    if self._manager.latest_step() is None:
      return None
    return self.restore(template, None, expected_meta)

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({**meta, "step": step,
                                                                    "data_position": step})))

  def wait(self) -> None:
    self._manager.wait_until_finished()
