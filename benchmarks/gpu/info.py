"""Part info: the machine and its load average, package versions, `nvidia-smi`, JAX's and PyTorch's devices and
precision settings, and the bf16 matrix rate measured on the card (an 8192^3 product through PyTorch, random data)."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys

PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax",
            "optax", "orbax-checkpoint", "chex", "numpy", "scipy", "ml-dtypes", "grain", "array-record",
            "tensorflow-datasets", "ml-collections", "tensorboardX", "pillow", "simplejpeg", "torch", "torchvision",
            "triton", "timm", "protobuf", "etils")
ENV = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_COMPILATION_CACHE_DIR",
       "PYTHONPATH", "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")
SMI_QUERY = ("name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,"
             "temperature.gpu,utilization.gpu,compute_mode,mig.mode.current")
SMI_QUERY_AFTER = "clocks.sm,clocks.max.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active"


def cmd_info(args) -> None:
  """Writes the machine's description to `args.json`."""
  import importlib.metadata as md
  from common import machine
  out: dict = {
      "machine": machine(), "python": platform.python_version(), "executable": sys.executable,
      "cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
      "load_average": [round(x, 2) for x in os.getloadavg()], "versions": {}, "env": {k: os.environ.get(k) for k in ENV}
  }
  for name in PACKAGES:
    try:
      out["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
      pass
  try:
    import ltr_jax
    out["ltr_jax_path"] = os.path.dirname(ltr_jax.__file__)
  except Exception as e:  # noqa: BLE001
    out["ltr_jax_path"] = f"not importable: {e}"
  if shutil.which("nvidia-smi"):
    out["nvidia_smi"] = nvidia_smi()
    out["nvidia_smi_query"] = nvidia_smi(f"--query-gpu={SMI_QUERY}", "--format=csv")
  try:
    out["torch"] = _torch_info()
  except Exception as e:  # noqa: BLE001
    out["torch"] = {"error": f"{type(e).__name__}: {e}"}
  try:
    out["jax"] = _jax_info()
  except Exception as e:  # noqa: BLE001
    out["jax"] = {"error": f"{type(e).__name__}: {e}"}
  with open(args.json, "w") as f:
    json.dump(out, f, indent=2, default=str)


def _torch_info() -> dict:
  import torch
  t = {
      "version": torch.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
      "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
      "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
      "float32_matmul_precision": torch.get_float32_matmul_precision(), "threads": torch.get_num_threads()
  }
  if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    t.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
             multiprocessors=p.multi_processor_count, memory_gb=p.total_memory / 2**30)
    t["bf16_matmul_tflops"] = _torch_matmul_rate(torch)
  return t


def _jax_info() -> dict:
  import jax
  devices = jax.devices()
  j = {
      "version": jax.__version__, "backend": jax.default_backend(), "devices": [str(d) for d in devices],
      "device_kind": devices[0].device_kind,
      "default_matmul_precision": str(getattr(jax.config, "jax_default_matmul_precision", "?")),
      "compilation_cache_dir": str(getattr(jax.config, "jax_compilation_cache_dir", "?"))
  }
  stats = devices[0].memory_stats() or {}
  if "bytes_limit" in stats:
    j["memory_limit_gb"] = stats["bytes_limit"] / 2**30
  return j


def _torch_matmul_rate(torch) -> float:
  """TFLOP/s of an 8192^3 bf16 product on random data (mean of 10 after 3 warm-ups), timed with CUDA events."""
  n = 8192
  a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
  b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
  for _ in range(3):
    a @ b
  start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
  start.record()
  for _ in range(10):
    a @ b
  end.record()
  torch.cuda.synchronize()
  return 2 * n**3 * 10 / (start.elapsed_time(end) / 1e3) / 1e12


def nvidia_smi(*args: str) -> str | None:
  """`nvidia-smi args` output, None where there is no nvidia-smi, or why it failed."""
  smi = shutil.which("nvidia-smi")
  if not smi:
    return None
  try:
    return subprocess.run([smi, *args], capture_output=True, text=True, timeout=30).stdout
  except (OSError, subprocess.TimeoutExpired) as e:
    return f"failed: {e}"


def on_gpu(info: dict) -> bool:
  """Whether the run has an NVIDIA GPU: PyTorch sees CUDA, or `nvidia-smi -L` lists a GPU."""
  if (info.get("torch") or {}).get("cuda_available"):
    return True
  listed = nvidia_smi("-L")
  return bool(listed) and not listed.startswith("failed:") and "GPU" in listed


def clocks_after() -> str | None:
  """Clocks, power, temperature and throttle reasons at the end of the run (`nvidia-smi`)."""
  return nvidia_smi(f"--query-gpu={SMI_QUERY_AFTER}", "--format=csv")
