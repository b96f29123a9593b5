"""Domains of config values: what each key may hold, declared once and checked before any work.

A `Domain` says whether a value belongs to it (`error(value)`: None, or what is wrong) and describes itself in words
for the one-line message that names the key, the value and the domain. `outside()` gives values that do not belong
(negative, zero, NaN, infinity, an empty tuple, a name not in the set, ...): the test that walks every key of every
config sets each of them and expects that one line. Choices that come from a registry (losses, dataset kinds) are
named as 'module:attribute' and read when checked, so that declaring them imports nothing heavy.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
import re
from collections.abc import Callable
from typing import Any

NAN, INF = float("nan"), float("inf")


class Domain:
  """A set of values: `error(value)` is None for a member, else a short reason; str() describes the set."""

  def error(self, value: Any) -> str | None:
    raise NotImplementedError

  def outside(self) -> tuple[Any, ...]:
    """Values of the config's type (and a few of others) that are not members."""
    raise NotImplementedError


def _number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Int(Domain):
  """An integer in [lo, hi] (either bound may be None)."""
  lo: int | None = None
  hi: int | None = None

  def __str__(self) -> str:
    return "an integer" + _bounds(self.lo, self.hi, False, False)

  def error(self, value: Any) -> str | None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
      return "not an integer"
    return _out_of_bounds(value, self.lo, self.hi, False, False)

  def outside(self) -> tuple[Any, ...]:
    return tuple(v for v in (-1, 0, -(10**6), 10**9) if self.error(v)) + (1.5,)


@dataclasses.dataclass(frozen=True)
class Real(Domain):
  """A finite number in the interval from lo to hi, each end open or closed (None: unbounded)."""
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False

  def __str__(self) -> str:
    return "a finite number" + _bounds(self.lo, self.hi, self.lo_open, self.hi_open)

  def error(self, value: Any) -> str | None:
    if not _number(value):
      return "not a number"
    if not math.isfinite(value):
      return "not finite"
    return _out_of_bounds(value, self.lo, self.hi, self.lo_open, self.hi_open)

  def outside(self) -> tuple[Any, ...]:
    return tuple(v for v in (-1.0, 0.0, 1.0, 1e9, -1e9) if self.error(v)) + (NAN, INF, -INF)


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
  if lo is not None and hi is not None:
    return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
  if lo is not None:
    return f" {'>' if lo_open else '>='} {lo:g}"
  if hi is not None:
    return f" {'<' if hi_open else '<='} {hi:g}"
  return ""


def _out_of_bounds(value, lo, hi, lo_open: bool, hi_open: bool) -> str | None:
  if lo is not None and (value <= lo if lo_open else value < lo) or \
      hi is not None and (value >= hi if hi_open else value > hi):
    return "out of range"
  return None


@dataclasses.dataclass(frozen=True)
class Flag(Domain):
  """True or False."""

  def __str__(self) -> str:
    return "True or False"

  def error(self, value: Any) -> str | None:
    return None if isinstance(value, bool) else "not True or False"

  def outside(self) -> tuple[Any, ...]:
    return ("yes",)


@dataclasses.dataclass(frozen=True)
class OneOf(Domain):
  """One of `choices`: a tuple, or 'module:attribute' naming a registry (its keys) read when checked."""
  choices: tuple[Any, ...] | str

  def values(self) -> tuple[Any, ...]:
    if isinstance(self.choices, str):
      module, name = self.choices.split(":")
      return tuple(getattr(importlib.import_module(module), name))
    return self.choices

  def __str__(self) -> str:
    return "one of " + ", ".join(map(repr, self.values()))

  def error(self, value: Any) -> str | None:
    return None if any(value == c and type(value) is type(c) for c in self.values()) else "not one of the choices"

  def outside(self) -> tuple[Any, ...]:
    return ("no_such_choice", "")


@dataclasses.dataclass(frozen=True)
class Text(Domain):
  """A string; with `nonempty`, not ''. `what` names its meaning in messages (a path, a name)."""
  what: str = "a string"
  nonempty: bool = False

  def __str__(self) -> str:
    return self.what + (" (not empty)" if self.nonempty else "")

  def error(self, value: Any) -> str | None:
    if not isinstance(value, str):
      return "not a string"
    return "empty" if self.nonempty and not value else None

  def outside(self) -> tuple[Any, ...]:
    return (("",) if self.nonempty else ()) + (7,)


@dataclasses.dataclass(frozen=True)
class Pattern(Domain):
  """A regular expression over parameter paths (ltr_jax.masks)."""

  def __str__(self) -> str:
    return "a regular expression"

  def error(self, value: Any) -> str | None:
    if not isinstance(value, str):
      return "not a string"
    try:
      re.compile(value)
    except re.error as e:
      return f"not a regular expression ({e})"
    return None

  def outside(self) -> tuple[Any, ...]:
    return ("backbone/(",)


@dataclasses.dataclass(frozen=True)
class Maybe(Domain):
  """None, or a member of `inner`."""
  inner: Domain

  def __str__(self) -> str:
    return f"None or {self.inner}"

  def error(self, value: Any) -> str | None:
    return None if value is None else self.inner.error(value)

  def outside(self) -> tuple[Any, ...]:
    return self.inner.outside()


@dataclasses.dataclass(frozen=True)
class Seq(Domain):
  """A tuple (or list) of members of `item`, at least `min_len` long."""
  item: Domain
  min_len: int = 0

  def __str__(self) -> str:
    length = f" of at least {self.min_len}" if self.min_len else ""
    return f"a tuple{length} of ({self.item})"

  def error(self, value: Any) -> str | None:
    if not isinstance(value, (tuple, list)):
      return "not a tuple"
    if len(value) < self.min_len:
      return "too short" if value else "empty"
    for i, v in enumerate(value):
      problem = self.item.error(v)
      if problem:
        return f"item {i} ({v!r}) is {problem}"
    return None

  def outside(self) -> tuple[Any, ...]:
    return ((),) * bool(self.min_len) + tuple((v,) for v in self.item.outside()[:3])


@dataclasses.dataclass(frozen=True)
class Pair(Domain):
  """A (first, second) pair."""
  first: Domain
  second: Domain

  def __str__(self) -> str:
    return f"a pair ({self.first}, {self.second})"

  def error(self, value: Any) -> str | None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
      return "not a pair"
    for i, (domain, v) in enumerate(zip((self.first, self.second), value)):
      problem = domain.error(v)
      if problem:
        return f"its {('first', 'second')[i]} item ({v!r}) is {problem}"
    return None

  def outside(self) -> tuple[Any, ...]:
    return ((),) + tuple((v, v) for v in self.first.outside()[:1])


@dataclasses.dataclass(frozen=True)
class Custom(Domain):
  """A domain given by a check function (value -> None or a reason), a description and out-of-domain examples."""
  description: str
  check: Callable[[Any], str | None]
  examples: tuple[Any, ...] = ()

  def __str__(self) -> str:
    return self.description

  def error(self, value: Any) -> str | None:
    return self.check(value)

  def outside(self) -> tuple[Any, ...]:
    return self.examples


POSITIVE_INT = Int(1)
COUNT = Int(0)
POSITIVE = Real(0, lo_open=True)
NON_NEGATIVE = Real(0)
PROBABILITY = Real(0, 1)
PATH = Text("a path, or '' for none")
NAME = Text("a name")
PATTERNS = Seq(Pattern())
LR_MULTS = Seq(Pair(Pattern(), POSITIVE))


def message(key: str, value: Any, domain: Domain, problem: str) -> str:
  """The one line of a value outside its domain: the key, the value, what is wrong and the domain."""
  shown = repr(value)
  shown = shown if len(shown) <= 80 else shown[:77] + "..."
  return f"config key {key} = {shown}: {problem}; it must be {domain}"


def check_items(items: dict[str, Any], declared: dict[str, Domain], prefix: str, undeclared: Callable[[str],
                                                                                                      str]) -> None:
  """Checks every (field, value) of `items`, a config section (key `prefix`) or part of one, against `declared`
  (field -> Domain), in order: raises ConfigError naming the key, the value and the domain of the first value outside
  its domain, and `undeclared(key)` for a field without a declaration."""
  from ltr_jax.errors import ConfigError
  for field, value in items.items():
    key = f"{prefix}.{field}" if prefix else field
    if field not in declared:
      raise ConfigError(undeclared(key))
    problem = declared[field].error(value)
    if problem:
      raise ConfigError(message(key, value, declared[field], problem))
