"""Stage 2 on real Fashion-MNIST-LT features: the re-balanced classifiers beat joint on the tail,
features are cached per checkpoint, the exported model evaluates to its reported accuracy, fine-tuning
variants train only what they say, and user errors stop with one message."""
import json
import os

import jax
import numpy as np
import pytest

from configs import quickstart
from ltr_jax import checkpoints, decouple, evaluate, finetune, parallel, train
from ltr_jax.data import datasets
from ltr_jax.errors import CheckpointError, DataError


def small_config():
  """The quickstart data (IR 100, 1000 -> 10 images per class), 10 stage-1 epochs."""
  config = quickstart.get_config()
  config.train.update(dict(epochs=10))
  config.stage2.crt.update(dict(epochs=5))
  config.stage2.finetune.update(dict(epochs=1))
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
  assert set(methods) == {"joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust"}
  for method in ("crt", "tau_norm", "lws"):
    assert methods[method]["few"] > methods["joint"]["few"] + 5.0, (method, methods[method], methods["joint"])
  assert methods["crt"]["all"] > methods["joint"]["all"]
  # Groups of the quickstart profile: 5 many, 3 medium, 2 few classes.
  assert sorted(results["groups"]) == sorted(["many"] * 5 + ["medium"] * 3 + ["few"] * 2)
  # tau was chosen on validation: it is the argmax of the validation curve, not of the test curve.
  curve = results["tau_curves"]["tau_norm"]
  best = curve["taus"][int(np.argmax([r["all"] for r in curve["val"]]))]
  assert methods["tau_norm"]["tau"] == best


def test_report_files_are_written(stage2):
  _, workdir, results = stage2
  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk["methods"]["crt"]["all"] == pytest.approx(results["methods"]["crt"]["all"])
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| cRT |" in table and "| Method | Many | Medium | Few | All |" in table
  for name in ("weight_norms.png", "tau_curves.png", "per_class_accuracy.png", "sampling_weights.png"):
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
  assert exported in ("joint", "crt", "tau_norm", "lws", "logit_adjust")
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
