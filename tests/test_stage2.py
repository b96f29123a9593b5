"""Stage 2 on real Fashion-MNIST-LT: the re-balanced classifiers beat joint on the tail; the reference's cRT
re-estimates the backbone's BatchNorm statistics on class-balanced batches while its frozen-statistics variant
leaves them bit-identical; features are cached per backbone; every method's head exports and evaluates to its
reported accuracy; fine-tuning variants train only what they say; user errors stop with one message."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import synthetic
from configs import quickstart
from ltr_jax import checkpoints, evaluate, models, parallel, train
from ltr_jax.data import datasets, pipeline, sampling, transforms
from ltr_jax.errors import CheckpointError, DataError
from ltr_jax.stage2 import backbone, features as features_lib, on_features, registry, run
from ltr_jax.stage2.features import Features

METHODS = ("joint", "ncm", "crt", "crt_frozen_bn", "crt_cached", "tau_norm", "lws", "lws_cached", "logit_adjust", "wb",
           "wb_cached", "mislas")


def small_config():
  """The quickstart (IR 100, 1000 -> 10 images per class, every stage-2 method), 15 stage-1 epochs, short
  stage-2 schedules through the backbone."""
  config = quickstart.get_config()
  config.train.update(dict(epochs=15))
  for name in ("crt", "crt_frozen_bn", "crt_cached", "lws", "mislas"):
    config.stage2[name].epochs = 3
  config.stage2.wb.epochs = 2
  return config


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("stage2"))
  config = small_config()
  train.train_and_evaluate(config, workdir)
  results = run.run(config, workdir)
  return config, workdir, results


def test_rebalanced_classifiers_raise_few_shot_accuracy(stage2):
  _, _, results = stage2
  methods = results["methods"]
  assert results["dataset"] == "fashion_mnist_lt"
  assert tuple(methods) == METHODS
  for method in ("crt", "crt_frozen_bn", "crt_cached", "tau_norm", "lws", "lws_cached", "wb", "wb_cached", "mislas"):
    assert methods[method]["few"] > methods["joint"]["few"] + 5.0, (method, methods[method], methods["joint"])
  for method in ("crt", "crt_frozen_bn", "crt_cached", "wb", "wb_cached", "mislas"):
    assert methods[method]["all"] > methods["joint"]["all"] + 1.0, (method, methods[method], methods["joint"])
  # Groups of the quickstart profile: 5 many, 3 medium, 2 few classes.
  assert sorted(results["groups"]) == sorted(["many"] * 5 + ["medium"] * 3 + ["few"] * 2)
  # tau was chosen on validation: it is the argmax of the validation curve, not of the test curve.
  curve = results["tau_curves"]["tau_norm"]
  best = curve["taus"][int(np.argmax([r["all"] for r in curve["val"]]))]
  assert methods["tau_norm"]["tau"] == best


def test_results_say_where_each_method_ran_and_with_what(stage2):
  config, _, results = stage2
  for name, entry in results["methods"].items():
    hyper = config.stage2[name]
    assert entry["runs_on"] == registry.method_of(config, name).runs_on
    assert entry["label"] == hyper.label and entry["paper"] == hyper.paper and entry["variant"] == hyper.variant
    assert entry["hyper"] == hyper.to_dict()
    assert bool(entry["variant"]) == (name in ("crt_frozen_bn", "crt_cached", "lws_cached", "wb_cached"))
  assert [m for m, e in results["methods"].items() if e["runs_on"] == "backbone"
         ] == ["crt", "crt_frozen_bn", "lws", "wb", "mislas"]
  # The paper's rows are the reference's procedures; every variant is labelled as one.
  assert results["methods"]["crt"]["label"] == "cRT" and results["methods"]["lws"]["label"] == "LWS"
  assert results["methods"]["wb"]["label"] == "WB" and results["methods"]["wb_cached"]["label"] == "WB (cached features)"


def test_calibration_is_reported_and_mislas_is_better_calibrated_than_joint(stage2):
  _, _, results = stage2
  methods = results["methods"]
  for name, entry in methods.items():
    bins = entry["reliability"]
    assert sum(bins["count"]) == 10_000 and 0 < entry["ece"] < 100 and entry["nll"] > 0, name
    # The ECE is the count-weighted gap of the stored bins (recomputed here from them).
    filled = np.asarray(bins["count"]) > 0
    gap = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))[filled]
    assert entry["ece"] == pytest.approx(float((np.asarray(bins["count"])[filled] * gap).sum() / 10_000), abs=1e-9)
  assert methods["mislas"]["ece"] < methods["joint"]["ece"], (methods["mislas"]["ece"], methods["joint"]["ece"])
  assert methods["mislas"]["paper"] is False and methods["crt"]["paper"] is True
  # Every method is also scored after temperature scaling (T fit on validation): NCM's distances, whose scale
  # nothing fits, are badly calibrated as is and much better after; the arbitrary scales are marked.
  for name, entry in methods.items():
    assert entry["temperature"] > 0 and 0 <= entry["ece_ts"] < 100 and entry["nll_ts"] > 0, name
    assert entry["nll_ts"] <= entry["nll"] + 0.05, name  # T minimises the validation NLL; test follows closely
    assert entry["arbitrary_logit_scale"] == (name in ("ncm", "tau_norm")), name
  assert methods["ncm"]["ece_ts"] < 0.5 * methods["ncm"]["ece"], methods["ncm"]


def test_report_files_are_written(stage2):
  _, workdir, results = stage2
  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk["methods"]["crt"]["all"] == pytest.approx(results["methods"]["crt"]["all"])
  table = open(os.path.join(workdir, "results.md")).read()
  assert "| cRT |" in table and "| cRT (cached features) ‡ |" in table and "| LWS |" in table
  assert "| MiSLAS † |" in table and "| WB (cached features) † ‡ |" in table
  assert "‡ a variant, not its source's recipe: cRT (frozen BN statistics): " in table
  assert "| ECE | ECE (T) | NLL |" in table and "§ an arbitrary logit scale" in table
  assert sum(" § |" in line for line in table.splitlines()) == 2  # NCM and tau-norm
  # Fig. 2 (left): every linear head that differs from joint's, those trained through the backbone included.
  assert {"joint", "crt", "crt_cached", "tau_norm", "lws", "lws_cached", "wb", "mislas"} <= set(on_disk["weight_norms"])
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


def _restore(directory, config, splits, mesh):
  """The variables of the latest checkpoint in `directory`, with the head its meta records."""
  manager = checkpoints.Manager(directory, read_only=True)
  model = models.from_config(config.model, splits.num_classes, head_spec=checkpoints.head_spec_of(manager.read_meta()))
  return jax.device_get(manager.restore_model(checkpoints.abstract_variables(model, splits.image_shape, mesh)))


def _class_balanced_statistics(config, splits, mesh, stage1, num_batches=20):
  """The mean over `num_batches` class-balanced, augmented batches of each BatchNorm layer's batch mean, with the
  frozen backbone in training mode (as the reference's cRT sees them): from one step of the running average,
  new = 0.9 old + 0.1 batch_mean."""
  model = models.from_config(config.model, splits.num_classes, (config.stage2.crt.frozen[0],))
  sampler = sampling.IndexSampler(splits.train.labels, splits.num_classes, "class", seed=123, num_epochs=1)
  batches = pipeline.train_batches(
      splits.train, sampler,
      transforms.train_transform(config.data.train_transform, config.data.image_size, config.data.color_jitter),
      global_batch=128, start_step=0, num_steps=num_batches, seed=123)
  apply = jax.jit(
      lambda v, images: model.apply(v, models.normalize(images, config.data.mean, config.data.std, jnp.float32), train=
                                    True, mutable=["batch_stats"])[1]["batch_stats"])
  means = []
  for batch in batches:
    new = apply(stage1, batch["image"])
    means.append(jax.tree.map(lambda n, o: (n - 0.9 * o) / 0.1, new, stage1["batch_stats"]))
  return jax.tree.map(lambda *m: np.mean(m, axis=0), *means)


def _distance(stats, target):
  """Root of the summed squared differences of every BatchNorm running mean."""
  pairs = zip(jax.tree_util.tree_leaves_with_path(stats), jax.tree.leaves(target))
  return float(np.sqrt(sum(np.sum((np.asarray(a) - b)**2) for (path, a), b in pairs if "mean" in str(path[-1]))))


def test_reference_crt_reestimates_batchnorm_statistics_and_the_frozen_variant_does_not(stage2):
  """In the paper's cRT row (the reference: backbone parameters frozen, BatchNorm in training mode) the stage-2
  checkpoint's BatchNorm running statistics moved towards those of class-balanced augmented batches; in the
  frozen-statistics variant they are bit-identical to stage 1's; the backbone parameters are bit-identical in
  both, and both trained a new head."""
  config, workdir, _ = stage2
  splits, mesh, _, stage1 = _stage1(config, workdir)
  stage1 = jax.device_get(stage1)
  tuned = {
      name: _restore(os.path.join(workdir, "stage2", name, "checkpoints"), config, splits, mesh)
      for name in ("crt", "crt_frozen_bn")
  }
  for name, variables in tuned.items():
    for a, b in zip(jax.tree.leaves(variables["params"]["backbone"]), jax.tree.leaves(stage1["params"]["backbone"]),
                    strict=True):
      np.testing.assert_array_equal(a, b, err_msg=name)
    assert not np.allclose(variables["params"]["head"]["kernel"], stage1["params"]["head"]["kernel"])
  for a, b in zip(jax.tree.leaves(tuned["crt_frozen_bn"]["batch_stats"]), jax.tree.leaves(stage1["batch_stats"]),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  moved = [
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(tuned["crt"]["batch_stats"]), jax.tree.leaves(stage1["batch_stats"]))
  ]
  assert all(moved)
  target = _class_balanced_statistics(config, splits, mesh, stage1)
  before, after = _distance(stage1["batch_stats"], target), _distance(tuned["crt"]["batch_stats"], target)
  assert after < 0.5 * before, (after, before)


def test_features_are_cached_per_backbone(stage2):
  config, workdir, _ = stage2
  splits, mesh, model, variables = _stage1(config, workdir)
  path = os.path.join(workdir, "features", "test.npy")
  before = os.stat(path).st_mtime_ns
  cached = features_lib.extract(model, variables, splits, config, workdir, mesh, ("test",))
  assert os.stat(path).st_mtime_ns == before  # reused
  # Another checkpoint (a perturbed backbone) gives other features and rewrites the cache.
  params = variables["params"]
  other = {**variables, "params": {**params, "backbone": jax.tree.map(lambda p: p * 1.01, params["backbone"])}}
  fresh = features_lib.extract(model, other, splits, config, workdir, mesh, ("test",))
  assert os.stat(path).st_mtime_ns != before
  assert not np.allclose(fresh["test"], cached["test"])
  features_lib.extract(model, variables, splits, config, workdir, mesh, ("test",))  # restore the cache
  # A method through the backbone that moved the BatchNorm statistics has features of its own; the
  # frozen-statistics variant reuses stage 1's.
  assert os.path.exists(os.path.join(workdir, "stage2", "crt", "features", "test.npy"))
  assert not os.path.exists(os.path.join(workdir, "stage2", "crt_frozen_bn", "features"))


def test_the_best_method_is_exported_and_evaluates_to_its_reported_accuracy(stage2):
  config, workdir, results = stage2
  best = results["best"]
  val_all = {name: r["val"]["all"] for name, r in results["methods"].items()}
  assert val_all[best] == max(val_all.values())
  assert results["exported"][best] == os.path.join(workdir, "stage2", best, "checkpoints")
  out = evaluate.run(config, workdir, parallel.data_mesh(), datasets.build_splits(config.data))
  assert out["stage"] == f"stage2/{best}" and out["method"] == best
  assert out["test"]["all"] == pytest.approx(results["methods"][best]["all"], abs=0.02)


@pytest.mark.parametrize("name", ["ncm", "lws"])
def test_any_head_exports_and_evaluates_to_its_reported_accuracy(stage2, tmp_path, name):
  """NCM's head (a centred, normalised transform of the features) and LWS's (learned scales, through the
  backbone) each evaluate from their checkpoints as stage 2 reported them."""
  config, workdir, results = stage2
  splits, mesh, model, stage1 = _stage1(config, workdir)
  directory = os.path.join(workdir, "stage2", name, "checkpoints")
  if name == "ncm":
    feats = features_lib.extract(model, stage1, splits, config, workdir, mesh)
    head = on_features.ncm(Features(splits, feats["train"], feats["val"], feats["test"]), None, config.stage2.ncm,
                           config)
    assert run.export(name, head, stage1, config, splits, str(tmp_path), mesh,
                      1) == str(tmp_path / "stage2" / name / "checkpoints")
    directory = str(tmp_path / "stage2" / name / "checkpoints")
  out = evaluate.run(config, str(tmp_path), mesh, splits, directory)
  assert out["method"] == name
  assert out["test"]["all"] == pytest.approx(results["methods"][name]["all"], abs=0.02)


def test_finetune_variants_train_only_their_part(stage2):
  """LB+C (Table 1): the parameters of every stage but the last are bit-identical, the last stage's moved; every
  BatchNorm layer ran in training mode (the reference's model.train()), so their statistics all moved."""
  config, workdir, _ = stage2
  splits, mesh, _, stage1 = _stage1(config, workdir)
  hyper = config.stage2.last_block_classifier.copy_and_resolve_references()
  hyper.epochs = 1
  setup = backbone.finetune(stage1, None, hyper, config, splits)
  _, last = backbone.run("last_block_classifier", setup, hyper, config, workdir, stage1,
                         models.HeadSpec.of_config(config.model), splits, mesh)
  last, stage1 = jax.device_get((last, stage1))
  for stage in ("stem_conv", "stem_bn", "stage1", "stage2"):
    for a, b in zip(jax.tree.leaves(last["params"]["backbone"].get(stage)),
                    jax.tree.leaves(stage1["params"]["backbone"].get(stage)), strict=True):
      np.testing.assert_array_equal(a, b)
  assert not np.allclose(
      jax.tree.leaves(last["params"]["backbone"]["stage3"])[0],
      jax.tree.leaves(stage1["params"]["backbone"]["stage3"])[0])
  for a, b in zip(jax.tree.leaves(last["batch_stats"]), jax.tree.leaves(stage1["batch_stats"]), strict=True):
    assert not np.array_equal(a, b)


def test_missing_stage1_checkpoint(tmp_path):
  with pytest.raises(CheckpointError, match="no stage-1 checkpoint in .*: run --mode=train"):
    run.run(small_config(), str(tmp_path))


def test_tau_selection_needs_a_validation_split(stage2):
  config, workdir, _ = stage2
  no_val = small_config()
  no_val.data.val_per_class = 0
  no_val.stage2.methods = ("joint", "tau_norm")
  with pytest.raises(DataError, match="tau is selected on the validation split, and this dataset has none"):
    run.run(no_val, workdir)


def test_every_method_on_a_cosine_head(tmp_path):
  """Stage 2 on a cosine head (s cos(z, w_j)): tau-norm is the joint classifier for every tau (its class vectors
  all have norm s); cRT re-trains a cosine classifier; the re-balancing methods still raise Few; weight
  balancing is refused (a linear-head method); the best head exports and evaluates as reported."""
  config = small_config()
  config.model.head = "cosine"
  config.train.epochs = 5
  config.stage2.mislas.epochs = 1
  config.stage2.methods = ("joint", "ncm", "crt_cached", "tau_norm", "lws_cached", "logit_adjust", "mislas")
  train.train_and_evaluate(config, str(tmp_path))
  results = run.run(config, str(tmp_path))
  methods = results["methods"]
  assert methods["tau_norm"]["per_class"] == methods["joint"]["per_class"]
  assert {r["all"] for r in results["tau_curves"]["tau_norm"]["val"]} == {methods["joint"]["val"]["all"]}
  for name in ("crt_cached", "lws_cached", "logit_adjust", "mislas"):
    assert methods[name]["few"] > methods["joint"]["few"], (name, methods[name], methods["joint"])
  out = evaluate.run(config, str(tmp_path), parallel.data_mesh(), datasets.build_splits(config.data))
  assert out["method"] == results["best"]
  assert out["test"]["all"] == pytest.approx(methods[results["best"]]["all"], abs=0.02)
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
  reference KNNClassifier's 'cos', x.c_j / d with un-normalised centroids (its scale matters to the softmax).
  Checked against numpy on synthetic features whose class means have very different norms (so the two cosines
  disagree)."""
  feats = synthetic.features(counts=(50, 30, 20, 10), dim=16, spread=2.0)
  config = quickstart.get_config()
  config.stage2.ncm.metric = metric
  head = on_features.ncm(feats, None, config.stage2.ncm, config)
  train, labels = feats.train, feats.labels("train")

  def cl2n(z):
    z = z - train.mean(0)
    return z / np.linalg.norm(z, axis=1, keepdims=True)

  c = np.stack([cl2n(train)[labels == j].mean(0) for j in range(4)])
  x = cl2n(feats.test)
  expected = {
      "euclidean": -((x[:, None] - c[None])**2).sum(-1), "cosine": x @ c.T / np.linalg.norm(c, axis=1),
      "reference_cos": x @ c.T / 16
  }[metric]
  np.testing.assert_array_equal(head.predict(feats.test), expected.argmax(-1))
  if metric == "reference_cos":
    np.testing.assert_allclose(head.logits(feats.test), expected, rtol=1e-4, atol=1e-6)
    cosine = (x @ c.T / np.linalg.norm(c, axis=1)).argmax(-1)
    assert (cosine != expected.argmax(-1)).mean() > 0.02  # the two cosines are different classifiers here


def test_a_rerun_follows_its_settings(stage2, tmp_path, capfd):
  """In one workdir: stage 2 again with WB's projection once per epoch instead of after every step starts WB afresh,
  says so in one line, keeps the old run, and gives another WB row; the same command again reuses that run (the
  same numbers, no step trained). Stage 1 with another train.epochs stops in one line naming it."""
  import shutil
  import subprocess
  import sys
  config, workdir, first = stage2
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  config = config.copy_and_resolve_references()
  config.stage2.methods = ("joint", "wb")
  capfd.readouterr()
  config.stage2.wb.project_every = "epoch"
  second = run.run(config, str(copy))
  err = capfd.readouterr().err
  afresh = [line for line in err.splitlines() if "starting afresh" in line]
  assert len(afresh) == 1 and afresh[0].startswith(f"stage2/wb: {copy}/stage2/wb/checkpoints holds step ")
  assert "stage2.wb.project_every = 'step' there, 'epoch' now" in afresh[0]
  assert (copy / "stage2" / "wb-previous" / "checkpoints").is_dir()
  assert second["methods"]["wb"]["per_class"] != first["methods"]["wb"]["per_class"]
  assert second["methods"]["joint"] == first["methods"]["joint"]
  logged = (copy / "stage2" / "wb" / "metrics.jsonl").read_text()
  third = run.run(config, str(copy))
  assert "starting afresh" not in capfd.readouterr().err
  assert third["methods"]["wb"] == second["methods"]["wb"]
  assert (copy / "stage2" / "wb" / "metrics.jsonl").read_text() == logged  # no step trained
  out = subprocess.run([
      sys.executable, "-m", "ltr_jax.main", "--config=configs/quickstart.py", f"--workdir={copy}", "--mode=train",
      "--config.train.epochs=31"
  ], cwd=os.path.dirname(os.path.dirname(__file__)), capture_output=True, text=True, timeout=300)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 1 and len(lines) == 1, out.stderr[-2000:]
  assert lines[0].startswith("error: config key train.epochs: ") and "train.epochs = 15 there, 31 now" in lines[0]
  assert "--config.train.resume_changed=True" in lines[0]
