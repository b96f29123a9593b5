"""Parameter-path patterns -> pytrees: what is frozen, and each parameter's learning-rate group.

A parameter's path is its keys joined by '/', e.g. 'backbone/stage1/block0/conv1/kernel' or 'head/bias';
a BatchNorm statistic's path is its batch_stats path, e.g. 'backbone/stage1/block0/bn1/mean'. A pattern is a
regular expression that must match a whole path (re.fullmatch). The same patterns (config key train.frozen)
decide three things, so they never disagree:
- the optimizer leaves a matched parameter untouched (no update, no weight decay: optax.set_to_zero);
- a BatchNorm layer whose statistics are matched runs in inference mode, in training as at test: it normalises
  with its running statistics and never updates them (ltr_jax.models);
- the rest trains, each parameter at the base learning rate times the multiplier of the first pattern of
  train.lr_mults that matches it (1 if none does).
'{last_stage}' in a pattern stands for the backbone's last stage (the paper's "last block"): stage4 for the
ImageNet ResNets, stage3 for the CIFAR ones, so one pattern serves every model.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import jax

from ltr_jax.errors import ConfigError

FROZEN = 0.0  # the learning-rate multiplier of frozen parameters in `lr_groups`


def path_of(keypath: Sequence[Any]) -> str:
  """'a/b/c' for a jax key path of dict keys."""
  return "/".join(str(getattr(k, "key", k)) for k in keypath)


def paths(tree: Any) -> list[str]:
  """The path of every leaf of a nested dict."""
  return [path_of(keypath) for keypath, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def resolve(patterns: Iterable[str], last_stage: str) -> tuple[str, ...]:
  """The patterns with '{last_stage}' replaced by the model's last stage name."""
  return tuple(p.replace("{last_stage}", last_stage) for p in patterns)


def matches(path: str, patterns: Iterable[str]) -> bool:
  return any(re.fullmatch(p, path) for p in patterns)


def match_tree(tree: Any, patterns: Sequence[str]) -> Any:
  """A bool pytree like `tree`: True where a pattern matches the leaf's path."""
  return jax.tree_util.tree_map_with_path(lambda keypath, _: matches(path_of(keypath), patterns), tree)


def check_patterns(patterns: Iterable[str], trees: Iterable[Any], key: str) -> None:
  """ConfigError naming the config key and the first pattern that is not a regex or matches no leaf."""
  every = [p for tree in trees for p in paths(tree)]
  for pattern in patterns:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f"config key {key}: {pattern!r} is not a regular expression ({e})") from e
    if not any(re.fullmatch(pattern, p) for p in every):
      raise ConfigError(f"config key {key}: pattern {pattern!r} matches no parameter (paths look like "
                        f"{every[0]!r}, {every[-1]!r})")


def lr_groups(params: Any, frozen: Sequence[str], lr_mults: Sequence[tuple[str, float]]) -> Any:
  """A pytree like `params` of each parameter's learning-rate multiplier: FROZEN (0), or that of the first
  (pattern, multiplier) of `lr_mults` that matches it, or 1."""

  def label(keypath, _):
    path = path_of(keypath)
    if matches(path, frozen):
      return FROZEN
    return next((float(m) for pattern, m in lr_mults if re.fullmatch(pattern, path)), 1.0)

  return jax.tree_util.tree_map_with_path(label, params)
