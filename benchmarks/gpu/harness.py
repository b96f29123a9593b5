"""What the parts share: the run's JSON (rewritten after every change, so that a run stopped early keeps what it had),
commands run in their own process group under a time limit, and the log line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from benchmarks.gpu import ROOT


def log(message: str) -> None:
  print(f"[gpu {time.strftime('%H:%M:%S')}] {message}", flush=True)


def tail(text: str, n: int = 3000) -> str:
  return text[-n:]


def read_json(path: str):
  """The JSON at `path`, or None if there is none (a process that failed before writing it)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def harness_command(*args: str) -> list[str]:
  """This harness's sub-command `args` as a fresh process (run with cwd ROOT)."""
  return [sys.executable, "-m", "benchmarks.gpu", *args]


class Results:
  """The JSON of the run at `path`, rewritten atomically after every change, with a copy in the folder `out`."""

  def __init__(self, path: str, out: str):
    self.path = os.path.abspath(path)
    self.targets = list(dict.fromkeys([self.path, os.path.join(os.path.abspath(out), os.path.basename(self.path))]))
    self.data: dict = {}

  def set(self, key: str, value) -> None:
    self.data[key] = value
    self.write()

  def write(self) -> None:
    for target in self.targets:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      tmp = target + ".tmp"
      with open(tmp, "w") as f:
        json.dump(self.data, f, indent=2, default=str)
      os.replace(tmp, target)


def time_left(deadline: float, entries: dict, key: str, res: Results) -> float | None:
  """Seconds left before `deadline` (time.monotonic()); under 10, None, with entries[key] recorded as skipped."""
  left = deadline - time.monotonic()
  if left < 10:
    entries[key] = {"skipped": f"time: {left:.0f} s left"}
    res.write()
    return None
  return left


def with_outcome(entry: dict, r: dict) -> dict:
  """`entry` with the outcome of the process run_command ran (its record `r`): the record, and where it failed, why
  and the tail of its output."""
  entry["process"] = {k: v for k, v in r.items() if k != "output_tail"}
  if r["rc"] != 0:
    entry["error"] = "timed out" if r["timed_out"] else f"exit {r['rc']}"
    entry["output_tail"] = r["output_tail"][-1500:]
  return entry


def kill_group(pgid: int) -> None:
  try:
    os.killpg(pgid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def run_command(cmd: list[str], timeout: float, log_file: str, env: dict | None = None, cwd: str = ROOT) -> dict:
  """Runs `cmd` in its own process group, its output appended to `log_file`; past `timeout` seconds the whole group
  is stopped (SIGTERM, then SIGKILL). Returns rc, seconds, timed_out and the output's tail."""
  start = time.monotonic()
  with open(log_file, "a") as out:
    out.write(f"\n===== {' '.join(cmd)} (limit {timeout:.0f} s)\n")
    out.flush()
    begin = out.tell()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    timed_out = False
    try:
      proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
      timed_out = True
      for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
          os.killpg(proc.pid, sig)
        except ProcessLookupError:
          break
        try:
          proc.wait(timeout=5)
          break
        except subprocess.TimeoutExpired:
          continue
    kill_group(proc.pid)  # what the command left behind (grain workers, compile workers)
  with open(log_file, errors="replace") as f:
    f.seek(begin)
    text = f.read()
  return {
      "rc": proc.returncode, "seconds": round(time.monotonic() - start, 2), "timed_out": timed_out,
      "output_tail": tail(text)
  }
