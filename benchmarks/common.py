"""What every benchmark records beside its numbers: the machine it ran on."""
from __future__ import annotations

import os
import platform


def machine(*software: str) -> str:
  """CPU model, cores, memory, OS and Python, then `software` (e.g. 'numpy 2.4.6')."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  try:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  except (ValueError, OSError):
    mem = float("nan")
  return ", ".join([
      f"{cpu}", f"{os.cpu_count()} CPU cores", f"{mem:.0f} GiB RAM", f"{platform.system()} {platform.release()}",
      f"Python {platform.python_version()}", *software
  ])


def load_average() -> list[float]:
  """The 1-, 5- and 15-minute load averages, rounded: what a result records before and after its timing."""
  return [round(x, 2) for x in os.getloadavg()]


def status_kb(field: str) -> int:
  """A field of /proc/self/status in kB (VmRSS: resident memory now; VmHWM: its peak)."""
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak() -> int:
  """Resets the kernel's peak-RSS counter (VmHWM) to the current RSS; returns that RSS (kB)."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  return status_kb("VmRSS")


def write_json(path: str, result: dict) -> None:
  """Writes a benchmark's result file (creating its folder) and says where."""
  import json
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(f"\nwrote {path}")
