"""Stage 1: data parallelism is exact, multi-host equals single-host, a killed run resumes exactly,
training learns, and user errors stop with one message while the checkpoints stay loadable."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import quickstart
from ltr_jax import checkpoints, models, parallel, train
from ltr_jax.errors import CheckpointError, TrainingError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "train_script.py")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from train_script import tiny_config  # noqa: E402

# Fashion-MNIST-LT 40 -> 4 images per class: 4 steps of batch 32 per epoch. Few steps keep the
# comparison of float32 runs meaningful (SGD amplifies summation-order differences step by step).
SMALL = ("--data.n_max=40",)


def _run_script(workdir, out, devices, *extra, wait=True):
  cmd = [sys.executable, SCRIPT, str(workdir), str(out), str(devices), *map(str, extra)]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  if not wait:
    return proc
  output, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, output[-3000:]
  return dict(np.load(out))


def _assert_same_params(a, b, rtol=1e-5, atol=1e-6):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


def test_train_step_on_8_devices_equals_1_device():
  code = f"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
sys.path.insert(0, {ROOT!r})
import jax, numpy as np
from ltr_jax import losses, masks, models, parallel, train
from ltr_jax.data import sources
from configs import quickstart
config = quickstart.get_config()
data = sources.fashion_mnist("train")
batch = {{"image": data.images[:64], "label": data.labels[:64].astype(np.int32)}}
model = models.from_config(config.model, 10)
results = []
for devices in (jax.devices()[:1], jax.devices()):
  mesh = parallel.data_mesh(devices)
  variables = train.initial_variables(model, config, (28, 28, 1), mesh)
  tx = train.make_optimizer(config.train, 100, masks.lr_groups(variables["params"], (), ()))
  state = train.new_state(variables, tx, mesh)
  step = train.make_train_step(model, tx, losses.cross_entropy, config.data, mesh)
  for _ in range(2):
    state, metrics = step(state, parallel.global_batch(batch, mesh))
  results.append((float(metrics["loss"]), jax.tree.leaves(jax.device_get((state.params, state.batch_stats)))))
assert len(jax.devices()) == 8
(loss1, leaves1), (loss8, leaves8) = results
print("losses", loss1, loss8)
np.testing.assert_allclose(loss1, loss8, rtol=1e-5)
for a, b in zip(leaves1, leaves8):
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
print("EQUAL")
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert "EQUAL" in out.stdout, out.stdout + out.stderr[-3000:]


def _multi_process(tmp_path, name, devices, *extra, processes=2):
  """Starts `processes` train_script processes (jax.distributed over gloo on localhost), each with `devices`."""
  port = 20000 + (os.getpid() * 7 + len(name)) % 20000
  return [
      _run_script(tmp_path / name, tmp_path / f"{name}.npz", devices, f"127.0.0.1:{port}", processes, p, *extra,
                  wait=False) for p in range(processes)
  ]


def _finish(procs, timeout=600):
  outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  return [p.returncode for p in procs], outputs


def test_two_processes_equal_one_process(tmp_path):
  """2 processes x 1 device (jax.distributed over gloo on localhost) train bit for bit as 1 process x 2 devices.

  Each device computes the same program on the same rows in both runs, and every cross-device reduction (the
  gradient, the loss, the BatchNorm statistics) sums two operands: a + b has one order, so the results are
  exact on any CPU. (With more devices the all-reduce may associate its terms differently per process layout,
  and float32 results then differ in their last bits; tests/test_multihost_eval.py covers 2 x 2 meshes.)"""
  single = _run_script(tmp_path / "single", tmp_path / "single.npz", 2, *SMALL)
  codes, outputs = _finish(_multi_process(tmp_path, "multi", 1, *SMALL))
  assert codes == [0, 0], "\n".join(o[-3000:] for o in outputs)
  _assert_same_params(single, dict(np.load(tmp_path / "multi.npz")), rtol=0, atol=0)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
  steps = 16
  args = (*SMALL, "--train.epochs=4")
  uninterrupted = _run_script(tmp_path / "a", tmp_path / "a.npz", 1, *args)
  workdir = tmp_path / "b"
  proc = _run_script(workdir, tmp_path / "b.npz", 1, *args, wait=False)
  ckpt_dir = workdir / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = checkpoints.Manager(str(ckpt_dir), read_only=True).latest_step()
  assert done is not None and done < steps, f"the kill came too late (latest checkpoint {done})"
  resumed = _run_script(workdir, tmp_path / "b.npz", 1, *args)
  _assert_same_params(uninterrupted, resumed, rtol=0, atol=0)


def _wait_for(path, proc, timeout=300):
  """Waits until `path` has content (or the process ends); fails the test after `timeout` seconds."""
  deadline = time.time() + timeout
  while not (path.exists() and path.stat().st_size):
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert time.time() < deadline, f"{path} did not appear within {timeout} s"
    time.sleep(0.05)


def test_sigterm_saves_a_checkpoint_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
  """SIGTERM (a preemption notice) mid-run: the loop saves at the next step (checkpoints are otherwise written only
  at the end here), exits 143 with one line, and the rerun ends bit-equal to a run never interrupted. Output to a
  file shows progress as plain lines, not redrawn bars."""
  args = (*SMALL, "--train.epochs=150", "--train.checkpoint_every_epochs=1000")  # 600 steps, one checkpoint
  uninterrupted = _run_script(tmp_path / "a", tmp_path / "a.npz", 1, *args)
  proc = _run_script(tmp_path / "b", tmp_path / "b.npz", 1, *args, wait=False)
  _wait_for(tmp_path / "b" / "metrics.jsonl", proc)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode == 143, output[-3000:]
  last = output.strip().splitlines()[-1]
  assert last.startswith("stopped: stage 1 got SIGTERM and saved its checkpoint at step "), output[-3000:]
  assert "Traceback" not in output and "\r" not in output and "ETA" in output, output[-3000:]
  saved = checkpoints.Manager(str(tmp_path / "b" / "checkpoints"), read_only=True).latest_step()
  assert saved is not None and 5 <= saved < 600 and f"at step {saved} of 600" in last
  resumed = _run_script(tmp_path / "b", tmp_path / "b.npz", 1, *args)
  _assert_same_params(uninterrupted, resumed, rtol=0, atol=0)


def test_a_damaged_latest_checkpoint_is_skipped_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
  """The latest checkpoint's data overwritten (a failing disk): the rerun says so in one line, resumes from the
  checkpoint before it, and ends bit-equal to a run never interrupted."""
  from test_checkpoints import _damage
  args = (*SMALL, "--train.epochs=3")  # checkpoints at steps 4, 8, 12; the last two kept
  uninterrupted = _run_script(tmp_path / "a", tmp_path / "a.npz", 1, *args)
  _damage(tmp_path / "a" / "checkpoints" / "12" / "model", "garbage")
  proc = _run_script(tmp_path / "a", tmp_path / "b.npz", 1, *args, wait=False)
  output, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, output[-3000:]
  warnings = [line for line in output.splitlines() if line.startswith("warning: checkpoint step 12")]
  assert len(warnings) == 1 and "resuming from the checkpoint before it" in warnings[0], output[-3000:]
  assert "Traceback" not in output and "Exception ignored" not in output, output[-3000:]
  assert "See full TensorStore details" not in warnings[0] and len(warnings[0]) < 400, warnings[0]
  _assert_same_params(uninterrupted, dict(np.load(tmp_path / "b.npz")), rtol=0, atol=0)
  # The same damage read by stage 2 or --mode=evaluate, which have no checkpoint to fall back to: the one line
  # (the first line of the cause, without TensorStore's spec) and nothing else on stderr.
  _damage(tmp_path / "a" / "checkpoints" / "12" / "model", "garbage")
  for mode in ("decouple", "evaluate"):
    out = subprocess.run([
        sys.executable, "-m", "ltr_jax.main", "--config=configs/quickstart.py", f"--workdir={tmp_path / 'a'}",
        f"--mode={mode}"
    ], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, (mode, out.stderr[-3000:])
    assert lines[0].startswith(f"error: checkpoint step 12 in {tmp_path / 'a' / 'checkpoints'} cannot be read: ")
    assert "See full TensorStore details" not in lines[0] and len(lines[0]) < 400, lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A short real training on Fashion-MNIST-LT (shared by the tests below)."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  config = tiny_config()
  config.data.update(dict(n_max=400, imbalance_ratio=10.0, val_per_class=50))
  config.train.update(dict(epochs=6, batch_size=64, base_lr=0.4))
  state = train.train_and_evaluate(config, workdir)
  return config, workdir, state


def test_short_training_learns(trained):
  import json
  _, workdir, _ = trained
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  val = [l for l in lines if "val/all" in l][-1]
  assert val["val/all"] > 50.0, val  # chance is 10%
  assert val["val/many"] > val["val/medium"]  # long-tailed: the head classes are learned best


def test_checkpoint_of_another_model_or_class_count_is_refused(trained):
  config, workdir, state = trained
  other = tiny_config()
  other.model.name = "resnet32"
  with pytest.raises(CheckpointError, match="holds a checkpoint of model 'resnet_mini' with 10 classes"):
    train.train_and_evaluate(other, workdir)
  # The checkpoint is intact: it restores, equal to the trained state.
  manager = checkpoints.Manager(os.path.join(workdir, "checkpoints"), read_only=True)
  model = models.from_config(config.model, 10)
  restored = manager.restore_model(checkpoints.abstract_variables(model, (28, 28, 1), parallel.data_mesh()))
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state.variables)):
    np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(trained, tmp_path):
  config, workdir, _ = trained
  import shutil
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  manager = checkpoints.Manager(os.path.join(copy, "checkpoints"), read_only=True)
  before = manager.latest_step()
  diverging = tiny_config()
  diverging.data.update(config.data.to_dict())
  # Continued on purpose under another schedule (without train.resume_changed this stops before any step).
  diverging.train.update(dict(config.train.to_dict(), epochs=config.train.epochs + 2, base_lr=1e12,
                              resume_changed=True))
  with pytest.raises(TrainingError, match=r"the loss is nan at step \d+"):
    train.train_and_evaluate(diverging, copy)
  manager = checkpoints.Manager(os.path.join(copy, "checkpoints"), read_only=True)
  assert manager.latest_step() == before
  assert manager.read_meta()["model"] == "resnet_mini"


def test_unknown_config_key_is_an_error():
  out = subprocess.run([
      sys.executable, "-m", "ltr_jax.main", "--config=configs/quickstart.py", "--workdir=/tmp/unused",
      "--config.train.lr_base=0.1"
  ], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "lr_base" in out.stderr and "Traceback" not in out.stderr[-2000:], out.stderr[-2000:]


def test_a_key_of_evaluation_alone_does_not_stop_a_stage_1_rerun():
  """data.five_crop_resize shapes stage 2's five-crop test rows only: another value leaves stage 1's settings (what a
  rerun in the same workdir compares) as they are; a key that shapes the model changes them."""
  config = quickstart.get_config()
  before = train.stage1_settings(config)
  config.data.five_crop_resize += 8
  assert train.stage1_settings(config) == before
  config.data.image_size += 4
  assert train.stage1_settings(config) != before
