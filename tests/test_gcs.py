"""A gs:// workdir end to end against a local GCS emulator: stage 1 killed and resumed, stage 2 (a method through the
backbone included), --mode=evaluate; every artefact lands in the bucket and nothing on local disk. A workdir whose
bucket is missing or cannot be reached stops in one line before any step."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from gcs_emulator import CLIENT_ENV, Emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The quickstart at 200 -> 2 images per class, 3 steps of 128 per epoch, 6 epochs.
SMALL = [
    "--config.data.n_max=200", "--config.data.val_per_class=20", "--config.train.epochs=6",
    "--config.train.log_every_steps=3", "--config.stage2.methods=('joint','ncm','crt','crt_cached','tau_norm')",
    "--config.stage2.crt.epochs=1", "--config.stage2.crt_cached.epochs=1"
]


@pytest.fixture(scope="module")
def emulator():
  server = Emulator().start()
  yield server
  server.stop()


def _main(workdir: str, cwd, env: dict, *args: str, wait: bool = True):
  """python -m ltr_jax.main on the quickstart config in `cwd`, with `env` added to the environment."""
  command = [
      sys.executable, "-m", "ltr_jax.main", f"--config={ROOT}/configs/quickstart.py", f"--workdir={workdir}", *SMALL,
      *args
  ]
  process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  if not wait:
    return process
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output[-3000:]
  return output


def _read(emulator: Emulator, bucket: str, name: str) -> bytes:
  url = f"{emulator.url}/storage/v1/b/{bucket}/o/{urllib.request.quote(name, safe='')}?alt=media"
  with urllib.request.urlopen(url, timeout=10) as response:
    return response.read()


def test_a_gs_workdir_holds_every_artefact_and_nothing_is_written_locally(emulator, tmp_path):
  bucket = f"run-{uuid.uuid4().hex[:8]}"
  emulator.create_bucket(bucket)
  workdir, cwd, env = f"gs://{bucket}/quickstart", tmp_path / "cwd", emulator.env()
  cwd.mkdir()
  # Stage 1, killed (SIGKILL) once its first checkpoint is in the bucket, then resumed to its end.
  first = _main(workdir, cwd, env, "--mode=train", wait=False)
  deadline = time.time() + 300
  while not any(
      re.fullmatch(r"quickstart/checkpoints/\d+/_CHECKPOINT_METADATA", name) for name in emulator.objects(bucket)):
    assert first.poll() is None, first.communicate()[0][-3000:]
    assert time.time() < deadline, "no checkpoint in the bucket after 300 s"
    time.sleep(0.2)
  first.send_signal(signal.SIGKILL)
  first.wait()
  _main(workdir, cwd, env, "--mode=train")
  _main(workdir, cwd, env, "--mode=decouple")
  _main(workdir, cwd, env, "--mode=evaluate")

  names = set(emulator.objects(bucket))
  steps = {int(m.group(1)) for name in names if (m := re.fullmatch(r"quickstart/checkpoints/(\d+)/.*", name))}
  assert len(steps) == 2 and max(steps) % 6 == 0, steps  # the last two epochs' checkpoints (6 epochs)
  expected = [
      "metrics.jsonl", "results.json", "results.md", "evaluate.json", "weight_norms.png", "tau_curves.png",
      "per_class_accuracy.png", "sampling_weights.png", "reliability.png",
      *(f"features/{split}.npy{suffix}" for split in ("train", "val", "test") for suffix in ("", ".fingerprint")),
      "stage2/crt/metrics.jsonl", "stage2/crt/features/test.npy"
  ]
  for name in expected:
    assert f"quickstart/{name}" in names, (name, sorted(names))
  assert any(name.startswith("quickstart/tensorboard/events.out.tfevents") for name in names)
  assert any(re.fullmatch(r"quickstart/stage2/crt/checkpoints/\d+/model/.*", name) for name in names)
  results = json.loads(_read(emulator, bucket, "quickstart/results.json"))
  assert results["exported"][results["best"]].startswith(f"gs://{bucket}/quickstart/stage2/")
  evaluated = json.loads(_read(emulator, bucket, "quickstart/evaluate.json"))
  assert evaluated["test"]["all"] == pytest.approx(results["methods"][results["best"]]["all"], abs=0.02)
  # The metrics of both stage-1 runs are kept (an object store has no append: the object is rewritten).
  logged = [json.loads(line)["step"] for line in _read(emulator, bucket, "quickstart/metrics.jsonl").splitlines()]
  assert logged[0] == 3 and logged[-1] == max(steps), logged  # the killed run's first line, the resumed run's last
  # Nothing on local disk: the working directory stays empty (no "gs:" folder).
  assert list(cwd.iterdir()) == []
  # The bucket's stage 1 as train.init_from of a local run (its backbone frozen, BatchNorm statistics included): the
  # path layer reads it where the config check looks for it, and the run's backbone is the bucket's, exactly.
  local = tmp_path / "from_bucket"
  _main(str(local), cwd, env, "--mode=train", f"--config.train.init_from={workdir}/checkpoints",
        "--config.train.epochs=1", "--config.train.frozen=('backbone/.*',)")
  code = ("import jax, numpy as np\n"
          "from configs import quickstart\n"
          "from ltr_jax import checkpoints, parallel\n"
          "config, mesh = quickstart.get_config(), parallel.data_mesh()\n"
          "a = checkpoints.load_backbone(config, sys.argv[1], (28, 28, 1), mesh)\n"
          "b = checkpoints.load_backbone(config, sys.argv[2], (28, 28, 1), mesh)\n"
          "print(max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in\n"
          "          zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)))\n")
  out = subprocess.run(
      [sys.executable, "-c", "import sys\n" + code, f"{workdir}/checkpoints",
       str(local / "checkpoints")], cwd=cwd, env={**os.environ, **env, "PYTHONPATH": ROOT}, capture_output=True,
      text=True, timeout=300)
  assert out.returncode == 0 and float(out.stdout.strip().splitlines()[-1]) == 0.0, out.stderr[-3000:]


def test_a_missing_bucket_stops_in_one_line_before_any_step(emulator, tmp_path):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  process = _main("gs://nobucket/x", cwd, emulator.env(), wait=False)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 1
  lines = output.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --workdir=gs://nobucket/x cannot be written"), output[-2000:]
  assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    "bucket, problem",
    [("hb", "2 characters, where 3 to 63 are allowed"),
     ("My_Runs", "only lowercase letters, digits, '-', '_' and '.', beginning and ending with a letter or digit"),
     ("google-runs", "begins with 'goog' or contains 'google'")])
def test_a_bucket_name_that_gcs_forbids_stops_in_one_line_before_any_step(tmp_path, bucket, problem):
  """Checked by its name, without any request: the run would otherwise train until its first checkpoint."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  process = _main(f"gs://{bucket}/run", cwd, CLIENT_ENV, wait=False)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 1
  assert output.strip().splitlines() == [
      f"error: --workdir=gs://{bucket}/run: {bucket!r} is not a Cloud Storage "
      f"bucket name ({problem})"
  ], output[-2000:]
  assert list(cwd.iterdir()) == []


def test_an_unreachable_bucket_stops_in_one_line_before_any_step(tmp_path):
  """Without an emulator or credentials (and no network here), within the workdir check's 20 s."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  start = time.time()
  process = _main("gs://nobucket/x", cwd, CLIENT_ENV, wait=False)
  output, _ = process.communicate(timeout=120)
  assert process.returncode == 1 and time.time() - start < 60
  lines = output.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: --workdir=gs://nobucket/x cannot be "), output[-2000:]
  assert list(cwd.iterdir()) == []
