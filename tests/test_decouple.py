"""Stage 2 on real Fashion-MNIST-LT features: the re-balanced classifiers beat joint on the tail,
features are cached per checkpoint, the exported model evaluates to its reported accuracy, fine-tuning
variants train only what they say, and user errors stop with one message."""
import json
import os
import types

import jax
import numpy as np
import pytest

from configs import quickstart
from ltr_jax import checkpoints, decouple, evaluate, finetune, parallel, train
from ltr_jax.data import datasets
from ltr_jax.errors import CheckpointError, DataError


def small_config():
  """The quickstart (IR 100, 1000 -> 10 images per class, every stage-2 method), 15 stage-1 epochs."""
  config = quickstart.get_config()
  config.train.update(dict(epochs=15))
  config.stage2.crt.update(dict(epochs=5))
  config.stage2.finetune.update(dict(epochs=3))
  return config


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("decouple"))
  config = small_config()
  train.train_and_evaluate(config, workdir)
  results = decouple.run(config, workdir)
  return config, workdir, results


def test_rebalanced_classifiers_raise_few_shot_accuracy(stage2):
  _, _, results = stage2
  methods = results["methods"]
  assert results["dataset"] == "fashion_mnist_lt"
  assert set(methods) == {"joint", "ncm", "crt", "crt_augmented", "tau_norm", "lws", "logit_adjust", "wb", "mislas"}
  for method in ("crt", "crt_augmented", "tau_norm", "lws", "wb", "mislas"):
    assert methods[method]["few"] > methods["joint"]["few"] + 5.0, (method, methods[method], methods["joint"])
  for method in ("crt", "crt_augmented", "wb", "mislas"):
    assert methods[method]["all"] > methods["joint"]["all"] + 1.0, (method, methods[method], methods["joint"])
  # Groups of the quickstart profile: 5 many, 3 medium, 2 few classes.
  assert sorted(results["groups"]) == sorted(["many"] * 5 + ["medium"] * 3 + ["few"] * 2)
  # tau was chosen on validation: it is the argmax of the validation curve, not of the test curve.
  curve = results["tau_curves"]["tau_norm"]
  best = curve["taus"][int(np.argmax([r["all"] for r in curve["val"]]))]
  assert methods["tau_norm"]["tau"] == best


def test_calibration_is_reported_and_mislas_is_better_calibrated_than_joint(stage2):
  config, _, results = stage2
  methods = results["methods"]
  for name, entry in methods.items():
    bins = entry["reliability"]
    assert sum(bins["count"]) == 10_000 and 0 < entry["ece"] < 100 and entry["nll"] > 0, name
    # The ECE is the count-weighted gap of the stored bins (recomputed here from them).
    filled = np.asarray(bins["count"]) > 0
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))[filled]
    assert entry["ece"] == pytest.approx(float((np.asarray(bins["count"])[filled] * gap).sum() / 10_000), abs=1e-9)
  assert methods["mislas"]["ece"] < methods["joint"]["ece"], (methods["mislas"]["ece"], methods["joint"]["ece"])
  assert methods["mislas"]["paper"] is False and methods["crt_augmented"]["paper"] is True


def test_report_files_are_written(stage2):
  _, workdir, results = stage2
  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk["methods"]["crt"]["all"] == pytest.approx(results["methods"]["crt"]["all"])
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| cRT (cached features) |" in table and "| Method | Many | Medium | Few | All |" in table
  assert "| MiSLAS † |" in table and "| ECE | NLL |" in table
  for name in ("weight_norms.png", "tau_curves.png", "per_class_accuracy.png", "sampling_weights.png",
               "reliability.png"):
    with open(os.path.join(workdir, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _stage1(config, workdir):
  """(splits, mesh, model, variables) of the workdir's stage-1 checkpoint."""
  splits = datasets.build_splits(config.data)
  mesh = parallel.data_mesh()
  model, variables = checkpoints.restore_stage1(config, os.path.join(workdir, "checkpoints"), splits.num_classes,
                                                splits.image_shape, mesh)
  return splits, mesh, model, variables


def test_features_are_cached_per_checkpoint(stage2):
  config, workdir, _ = stage2
  splits, mesh, model, variables = _stage1(config, workdir)
  path = os.path.join(workdir, "features", "test.npy")
  before = os.stat(path).st_mtime_ns
  cached = decouple.extract_features(model, variables, splits, config, workdir, mesh, ("test",))
  assert os.stat(path).st_mtime_ns == before  # reused
  # Another checkpoint (a perturbed backbone) gives other features and rewrites the cache.
  params = variables["params"]
  other = {**variables, "params": {**params, "backbone": jax.tree.map(lambda p: p * 1.01, params["backbone"])}}
  fresh = decouple.extract_features(model, other, splits, config, workdir, mesh, ("test",))
  assert os.stat(path).st_mtime_ns != before
  assert not np.allclose(fresh["test"], cached["test"])
  decouple.extract_features(model, variables, splits, config, workdir, mesh, ("test",))  # restore the cache


def test_exported_stage2_checkpoint_evaluates_to_the_reported_accuracy(stage2):
  config, workdir, results = stage2
  exported = results["exported_method"]
  assert exported in ("joint", "crt", "tau_norm", "lws", "logit_adjust", "wb")  # linear heads on the stage-1 backbone
  out = evaluate.run(config, workdir, parallel.data_mesh(), datasets.build_splits(config.data))
  assert out["stage"] == "stage2" and out["method"] == exported
  assert out["test"]["all"] == pytest.approx(results["methods"][exported]["all"], abs=0.02)


def test_finetune_recipes_train_only_their_part(stage2):
  config, workdir, _ = stage2
  splits, mesh, _, stage1 = _stage1(config, workdir)
  _, last = finetune.run(config, workdir, "last_block_classifier", stage1, splits, mesh)
  for stage in ("stem_conv", "stem_bn", "stage1", "stage2"):
    frozen = lambda v: (v["params"]["backbone"].get(stage), v["batch_stats"]["backbone"].get(stage))  # noqa: E731
    for a, b in zip(jax.tree.leaves(frozen(last)), jax.tree.leaves(frozen(stage1))):
      np.testing.assert_array_equal(a, b)
  assert not np.allclose(jax.tree.leaves(last["params"]["backbone"]["stage3"])[0],
                         jax.tree.leaves(stage1["params"]["backbone"]["stage3"])[0])
  _, crt = finetune.run(config, workdir, "crt_augmented", stage1, splits, mesh)
  # The reference let BatchNorm statistics drift during cRT; here the frozen backbone is untouched.
  for a, b in zip(jax.tree.leaves((crt["params"]["backbone"], crt["batch_stats"])),
                  jax.tree.leaves((stage1["params"]["backbone"], stage1["batch_stats"]))):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(crt["params"]["head"]["kernel"], stage1["params"]["head"]["kernel"])


def test_missing_stage1_checkpoint(tmp_path):
  with pytest.raises(CheckpointError, match="no stage-1 checkpoint in .*: run --mode=train"):
    decouple.run(small_config(), str(tmp_path))


def test_tau_selection_needs_a_validation_split(stage2, tmp_path):
  config, workdir, _ = stage2
  no_val = small_config()
  no_val.data.val_per_class = 0
  with pytest.raises(DataError, match="selected on the validation split, and this dataset has none"):
    decouple.run(no_val, workdir)


def test_every_method_on_a_cosine_head(tmp_path):
  """Stage 2 on a cosine head (s cos(z, w_j)): tau-norm is the joint classifier for every tau (its class vectors
  all have norm s); cRT re-trains a cosine classifier; the re-balancing methods still raise Few; weight
  balancing is refused (a linear-head method); no stage-2 checkpoint is exported (not a linear head)."""
  config = small_config()
  config.model.head = "cosine"
  config.train.epochs = 5
  config.stage2.finetune.epochs = 1
  config.stage2.methods = ("joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust", "mislas")
  train.train_and_evaluate(config, str(tmp_path))
  results = decouple.run(config, str(tmp_path))
  methods = results["methods"]
  assert methods["tau_norm"]["per_class"] == methods["joint"]["per_class"]
  assert {r["all"] for r in results["tau_curves"]["tau_norm"]["val"]} == {methods["joint"]["val"]["all"]}
  for name in ("crt", "lws", "logit_adjust", "mislas"):
    assert methods[name]["few"] > methods["joint"]["few"], (name, methods[name], methods["joint"])
  assert results["exported_method"] is None and not os.path.isdir(tmp_path / "stage2")
  from ltr_jax import validate
  from ltr_jax.errors import ConfigError
  config.stage2.methods = ("joint", "wb")
  with pytest.raises(ConfigError, match="'wb' needs a linear head"):
    validate.validate(config)
  config.model.head = "linear"
  config.train.loss = "ldam_drw"
  with pytest.raises(ConfigError, match="train.loss: 'ldam_drw' puts its margins on cosine logits"):
    validate.validate(config)


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "reference_cos"])
def test_ncm_metrics_are_what_their_names_say(metric):
  """euclidean: the nearest cl2n class mean; cosine: the paper's cosine similarity to it; reference_cos: the
  reference KNNClassifier's 'cos', x.c_j with un-normalised centroids. Checked against numpy on features whose
  class means have very different norms (so the two cosines disagree)."""
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), [50, 30, 20, 10])
  centers = rng.normal(size=(4, 16)) * np.array([[1.0], [3.0], [0.3], [2.0]])
  train = (centers[labels] + rng.normal(size=(len(labels), 16))).astype(np.float32)
  test = (centers[rng.integers(0, 4, 400)] + 2 * rng.normal(size=(400, 16))).astype(np.float32)
  counts = np.bincount(labels)
  splits = datasets.Splits("toy", 4, types.SimpleNamespace(labels=labels), None, None, counts,
                           np.array(["many"] * 4), (1, 1, 1))
  config = quickstart.get_config()
  config.stage2.ncm_metric = metric
  head = decouple.ncm(decouple.Features(splits, train, None, test), None, config)

  def cl2n(z):
    z = z - train.mean(0)
    return z / np.linalg.norm(z, axis=1, keepdims=True)
  c = np.stack([cl2n(train)[labels == j].mean(0) for j in range(4)])
  x = cl2n(test)
  expected = {"euclidean": -((x[:, None] - c[None]) ** 2).sum(-1), "cosine": x @ c.T / np.linalg.norm(c, axis=1),
              "reference_cos": x @ c.T}[metric].argmax(-1)
  np.testing.assert_array_equal(head.predict(test), expected)
  if metric == "reference_cos":
    cosine = (x @ c.T / np.linalg.norm(c, axis=1)).argmax(-1)
    assert (cosine != expected).mean() > 0.02  # the two cosines are different classifiers here
