"""Progress of long work: a tqdm bar on a terminal, a plain line every so often otherwise.

Under a batch system or on a pod worker, output goes to a file (stderr is no terminal and no notebook), where a
redrawn bar would fill the log with carriage returns; there each bar prints one line per `every` seconds (and one
at the end): count, rate, ETA and the latest postfix (loss, images/s).
"""
from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm

LINE_EVERY_SECONDS = 60.0


class _Lines:
  """tqdm's update / set_postfix / close, as periodic plain lines."""

  def __init__(self, total: int, desc: str, initial: int, unit: str, every: float, leave: bool):
    self._total, self._desc, self._unit, self._every, self._leave = total, desc, unit, every, leave
    self._printed = False
    self._n = self._start_n = initial
    self._start = self._last = time.monotonic()
    self._postfix = ""

  def update(self, n: int = 1) -> None:
    self._n += n
    if time.monotonic() - self._last >= self._every:
      self._print()

  def set_postfix(self, **values: Any) -> None:
    self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

  def _print(self) -> None:
    self._printed = True
    self._last = now = time.monotonic()
    rate = (self._n - self._start_n) / max(now - self._start, 1e-9)
    left = (self._total - self._n) / rate if rate > 0 else float("inf")
    eta = time.strftime("%H:%M:%S", time.gmtime(left)) if left != float("inf") else "?"
    percent = 100.0 * self._n / self._total if self._total else 100.0
    print(
        f"{self._desc}: {self._n}/{self._total} ({percent:.0f}%), {rate:.2f} {self._unit}/s, "
        f"ETA {eta}" + (f", {self._postfix}" if self._postfix else ""), file=sys.stderr, flush=True)

  def close(self) -> None:
    """A last line, for a bar that stays (leave) or one that already printed (it ran long)."""
    if (self._leave or self._printed) and (self._n != self._start_n or self._total == 0):
      self._print()

  def __enter__(self) -> "_Lines":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _notebook() -> bool:
  """Whether this process is a Jupyter / Colab kernel (not merely one that imported ipykernel)."""
  ipython = sys.modules.get("IPython")
  shell = ipython.get_ipython() if ipython is not None else None
  return shell is not None and "IPKernelApp" in shell.config


def bar(total: int, desc: str, initial: int = 0, unit: str = "step", disable: bool = False, leave: bool = True,
        every: float = LINE_EVERY_SECONDS):
  """A progress bar of `total` units: tqdm on a terminal, else periodic lines; nothing when `disable`."""
  if disable:
    return tqdm(total=total, disable=True)
  if sys.stderr.isatty() or _notebook():  # a terminal, or a notebook's widget
    return tqdm(total=total, initial=initial, unit=unit, desc=desc, leave=leave)
  return _Lines(total, desc, initial, unit, every, leave)
