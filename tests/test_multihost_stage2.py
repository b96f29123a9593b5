"""Stage 2 on several hosts that share nothing: 2 processes (jax.distributed over gloo on localhost), each with its
own workdir, one of which holds a feature cache and the other not, finish (a timeout fails the test instead of a
hang) and report what 1 process reports. Every decision that changes which collectives a process runs (here the
cache hit) is agreed by all processes. Writing a checkpoint needs a folder every host shares: asked to export one,
they all stop with one line instead of waiting for ever."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from ltr_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "stage2_script.py")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from stage2_script import stage2_config  # noqa: E402
from test_multihost_eval import _free_port  # noqa: E402


def _start(workdir, devices: int, *distributed) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, SCRIPT, str(workdir), str(devices), *map(str, distributed)], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def _finish(procs, timeout=300, returncode=0):
  """Waits for every process; kills all and fails the test if any takes longer than `timeout` seconds. Returns
  their outputs."""
  try:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"stage 2 on several processes did not finish within {timeout} s (a hang)")
  assert all(p.returncode == returncode for p in procs), "\n".join(o[-3000:] for o in outputs)
  return outputs


def test_two_hosts_with_their_own_workdirs_equal_one_host(tmp_path):
  stage1 = tmp_path / "stage1"
  train.train_and_evaluate(stage2_config(), str(stage1))
  # 1 process x 2 devices; each of the 2 processes below has 1 device, so every device computes the same program on
  # the same rows and the features, hence the results, are equal bit for bit.
  shutil.copytree(stage1, tmp_path / "single")
  _finish([_start(tmp_path / "single", 2)])
  for p in range(2):
    shutil.copytree(stage1, tmp_path / f"host{p}")
  shutil.copytree(tmp_path / "single" / "features", tmp_path / "host0" / "features")  # a cache on host 0 only
  port = _free_port()
  _finish([_start(tmp_path / f"host{p}", 1, f"127.0.0.1:{port}", 2, p) for p in range(2)])
  single = json.loads((tmp_path / "single" / "results.json").read_text())
  multi = json.loads((tmp_path / "host0" / "results.json").read_text())
  assert multi["methods"] == single["methods"]
  assert not (tmp_path / "host1" / "results.json").exists()  # process 0 writes the report
  port = _free_port()
  outputs = _finish([_start(tmp_path / f"host{p}", 1, f"127.0.0.1:{port}", 2, p, "--export") for p in range(2)],
                    returncode=1)
  for output in outputs:
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "needs a folder that every host shares" in last, output[-2000:]
