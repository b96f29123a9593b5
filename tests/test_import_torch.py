"""PyTorch import: torchvision-layout weights give the PyTorch logits in Flax; a classifier-balancing
checkpoint becomes an Orbax stage-1 checkpoint; bad keys and shapes stop with the key in the message."""
import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ltr_jax import checkpoints, import_torch, models, parallel
from ltr_jax.errors import CheckpointError, ConfigError
from ltr_jax.models import create_model

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import quickstart  # noqa: E402

# name -> (input side, input channels)
INPUTS = {"resnet_mini": (28, 1), "resnet32": (32, 3)}


def _build_torch_model(name: str, num_classes: int = 10):
  """The PyTorch twin in eval mode, with random BatchNorm running statistics (so that they matter)."""
  spec = importlib.util.spec_from_file_location("torch_models", os.path.join(ROOT, "benchmarks", "torch_models.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  torch.manual_seed(0)
  net = module.build_torch_model(name, num_classes, in_channels=INPUTS[name][1])
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_()
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0, 0.1)
  return net.eval()


def _torch_logits(net, x: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


def _flax_logits(model, variables, x: np.ndarray) -> np.ndarray:
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(variables, x))


def _inputs(name: str) -> np.ndarray:
  side, channels = INPUTS[name]
  return np.random.default_rng(0).normal(size=(4, side, side, channels)).astype(np.float32)


@pytest.mark.parametrize("name", ["resnet_mini", "resnet32"])
def test_logits_match_pytorch(name):
  net = _build_torch_model(name)
  x = _inputs(name)
  model = create_model(name, 10)
  variables = import_torch.torch_state_dict_to_variables(net.state_dict(), model, x.shape[1:])
  np.testing.assert_allclose(_flax_logits(model, variables, x), _torch_logits(net, x), atol=1e-4, rtol=1e-4)


def test_without_head_skips_fc():
  net = _build_torch_model("resnet_mini")
  state = net.state_dict()
  state["fc.weight"] = torch.zeros(1000, 64)  # another class count: ignored
  variables = import_torch.torch_state_dict_to_variables(state, create_model("resnet_mini", 10), (28, 28, 1),
                                                         head=False)
  assert set(variables["params"]) == {"backbone"}


def test_missing_key():
  state = _build_torch_model("resnet_mini").state_dict()
  del state["layer2.0.bn1.running_var"]
  with pytest.raises(CheckpointError, match=r"missing key 'layer2\.0\.bn1\.running_var'"):
    import_torch.torch_state_dict_to_variables(state, create_model("resnet_mini", 10), (28, 28, 1))


def test_unexpected_key():
  state = _build_torch_model("resnet_mini").state_dict()
  state["layer4.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
  with pytest.raises(CheckpointError, match=r"unexpected key 'layer4\.0\.conv1\.weight'"):
    import_torch.torch_state_dict_to_variables(state, create_model("resnet_mini", 10), (28, 28, 1))


def test_wrong_shape():
  state = _build_torch_model("resnet_mini").state_dict()
  state["layer1.0.conv2.weight"] = torch.zeros(16, 16, 5, 5)
  with pytest.raises(
      CheckpointError, match=r"'layer1\.0\.conv2\.weight' has shape \(16, 16, 5, 5\), but the "
      r"model expects \(16, 16, 3, 3\)"):
    import_torch.torch_state_dict_to_variables(state, create_model("resnet_mini", 10), (28, 28, 1))


def _save_reference(net, path) -> None:
  """The layout of classifier-balancing's final_model_checkpoint.pth (networks wrapped in DataParallel)."""
  state = net.state_dict()
  feat = {f"module.{k}": v for k, v in state.items() if not k.startswith("fc.")}
  classifier = {f"module.{k}": v for k, v in state.items() if k.startswith("fc.")}
  torch.save(
      {
          "epoch": 3, "best_epoch": 2, "best_acc": 0.5, "centroids": None,
          "state_dict_best": {"feat_model": feat, "classifier": classifier}
      }, path)


def test_reference_checkpoint_round_trip(tmp_path):
  net = _build_torch_model("resnet_mini")
  path = str(tmp_path / "final_model_checkpoint.pth")
  _save_reference(net, path)
  config = quickstart.get_config()
  directory = import_torch.import_checkpoint(path, config, str(tmp_path / "work"))

  model = models.from_config(config.model, 10)
  manager = checkpoints.Manager(directory, read_only=True)
  variables = manager.restore_model(checkpoints.abstract_variables(model, (28, 28, 1), parallel.data_mesh()),
                                    expected_meta=checkpoints.model_meta(config, 10))
  assert manager.read_meta()["stage"] == "stage1" and manager.read_meta()["step"] == 0
  assert not manager.has_opt_state()  # a later --mode=train starts a fresh optimizer
  x = _inputs("resnet_mini")
  logits = _flax_logits(model, variables, x)
  np.testing.assert_allclose(logits, _torch_logits(net, x), atol=1e-4, rtol=1e-4)

  with pytest.raises(CheckpointError, match="already holds a checkpoint"):  # never overwritten
    import_torch.import_checkpoint(path, config, str(tmp_path / "work"))


def test_reference_checkpoint_errors(tmp_path):
  config = quickstart.get_config()
  net = _build_torch_model("resnet32")  # 3 stages of 5 blocks: not resnet_mini
  path = str(tmp_path / "resnet32.pth")
  _save_reference(net, path)
  with pytest.raises(CheckpointError, match=r"resnet32\.pth as model 'resnet_mini': missing key "
                     r"'layer2\.0\.downsample\.0\.weight'"):
    import_torch.import_checkpoint(path, config, str(tmp_path / "work"))
  assert not os.path.exists(tmp_path / "work" / "checkpoints")

  config.data.num_classes = 7
  with pytest.raises(CheckpointError, match="'fc.weight' has 10 classes, but config key data.num_classes is 7"):
    import_torch.import_checkpoint(path, config, str(tmp_path / "work"))

  torch.save({"state_dict_best": {}, "best_acc": np.float64(0.5)}, tmp_path / "numpy.pth")
  with pytest.raises(CheckpointError, match="numpy.pth: holds Python objects .* --allow_pickle"):
    import_torch.import_checkpoint(str(tmp_path / "numpy.pth"), config, str(tmp_path / "work"))

  torch.save(net.state_dict(), tmp_path / "plain.pth")
  with pytest.raises(CheckpointError, match="no 'state_dict_best' or 'state_dict' entry"):
    import_torch.import_checkpoint(str(tmp_path / "plain.pth"), config, str(tmp_path / "work"))


def test_cli_torchvision_without_head(tmp_path):
  """An ImageNet-style backbone (1000-way fc) under a 10-class config: the head stays freshly initialised."""
  net = _build_torch_model("resnet_mini", num_classes=1000)
  path = tmp_path / "backbone.pth"
  torch.save(net.state_dict(), path)
  config = quickstart.get_config()
  with pytest.raises(ConfigError, match="config key data.num_classes"):
    import_torch.import_checkpoint(str(path), config, str(tmp_path / "work"), "torchvision", head=False)

  cmd = [
      sys.executable, "-m", "ltr_jax.import_torch", "--config=configs/quickstart.py", f"--checkpoint={path}",
      f"--workdir={tmp_path / 'work'}", "--kind=torchvision", "--no_head", "--config.data.num_classes=10"
  ]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  model = models.from_config(config.model, 10)
  config.data.num_classes = 10
  variables = checkpoints.Manager(str(tmp_path / "work" / "checkpoints"), read_only=True).restore_model(
      checkpoints.abstract_variables(model, (28, 28, 1), parallel.data_mesh()),
      expected_meta=checkpoints.model_meta(config, 10))
  with torch.no_grad():
    torch_features = net.features(torch.from_numpy(_inputs("resnet_mini").transpose(0, 3, 1, 2))).numpy()
  features = model.apply(variables, _inputs("resnet_mini"), method="features")
  np.testing.assert_allclose(features, torch_features, atol=1e-4, rtol=1e-4)
  assert variables["params"]["head"]["kernel"].shape == (64, 10)


def _trained_twin():
  """The resnet_mini twin trained one epoch on 6,000 real Fashion-MNIST images, and its test accuracy (%)."""
  from ltr_jax.data import sources
  config = quickstart.get_config()
  mean, std = (torch.tensor(v).view(1, -1, 1, 1) * 255 for v in (config.data.mean, config.data.std))
  to_input = lambda images: (torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() - mean) / std  # noqa: E731
  train, test = sources.fashion_mnist("train"), sources.fashion_mnist("test")
  net = _build_torch_model("resnet_mini").train()
  optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
  torch.manual_seed(0)
  for batch in torch.randperm(6000).view(-1, 100):
    loss = torch.nn.functional.cross_entropy(net(to_input(train.images[batch.numpy()])),
                                             torch.from_numpy(train.labels[batch.numpy()]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
  net.eval()
  with torch.no_grad():
    predictions = torch.cat([net(to_input(test.images[i:i + 1000])).argmax(-1) for i in range(0, 10000, 1000)])
  return net, 100.0 * float((predictions.numpy() == test.labels).mean())


def test_import_then_decouple_then_evaluate_with_a_last_block_config(tmp_path):
  """Imported weights under a config that trains only the last block: stage 2 and --mode=evaluate restore the
  model alone, so no optimizer of that config is needed, and both score the imported model as PyTorch does."""
  net, torch_accuracy = _trained_twin()
  assert torch_accuracy > 60.0
  torch.save(net.state_dict(), tmp_path / "mini.pth")
  common = [
      "--config=configs/quickstart.py", f"--workdir={tmp_path / 'W'}",
      "--config.train.frozen=('backbone/(?!{last_stage}/).*',)"
  ]
  steps = [("ltr_jax.import_torch", "--kind=torchvision", f"--checkpoint={tmp_path / 'mini.pth'}"),
           ("ltr_jax.main", "--mode=decouple", "--config.stage2.methods=('joint','ncm')"),
           ("ltr_jax.main", "--mode=evaluate")]
  for module, *args in steps:
    out = subprocess.run([sys.executable, "-m", module, *common, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
  import json
  decoupled = json.load(open(tmp_path / "W" / "results.json"))["methods"]["joint"]
  evaluated = json.load(open(tmp_path / "W" / "evaluate.json"))
  assert evaluated["stage"] == "stage2/joint" and evaluated["method"] == "joint"
  assert evaluated["test"]["all"] == pytest.approx(decoupled["all"], abs=0.011)  # at most one image apart
  assert decoupled["all"] == pytest.approx(torch_accuracy, abs=0.05)
