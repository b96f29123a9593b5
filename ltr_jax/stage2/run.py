"""Stage 2, the run: every method of config key stage2.methods on the workdir's stage-1 model, side by side.

Each method (ltr_jax.stage2.registry) gives a head over the features of its backbone: stage 1's (methods on the
cached features, and methods through the backbone that leave it bit-identical) or its own (a method through the
backbone whose BatchNorm statistics moved). Each is reported alike (test All / Many / Medium / Few, calibration,
validation groups, where it ran and its hyper-parameters), its weight norms plotted if it is a linear head, and it
can be exported: workdir/stage2/<name>/checkpoints holds the backbone with the method's head, which --mode=evaluate
and the notebooks load (a method through the backbone runs there anyway; config key stage2.export picks the
others, by default the best on validation).
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltr_jax import checkpoints, metrics, parallel, paths, report
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets
from ltr_jax.models import Classifier
from ltr_jax.stage2 import backbone, features as features_lib
from ltr_jax.stage2.registry import ON_FEATURES, Method, hyper_of, method_of

FIVE_CROP = "_five_crop"  # results["methods"] key of a method's five-crop row: <name>_five_crop


def validation(head: Classifier, val_features: np.ndarray | None, splits: datasets.Splits) -> dict[str, Any]:
  """What a head's results take from validation: the temperature T of its softmax fit there and its validation
  groups ({} without a validation split)."""
  if val_features is None:
    return {}
  return {
      "temperature": metrics.fit_temperature(head.logits(val_features), splits.val.labels),
      "val": metrics.groups_of(head.predict(val_features), splits.val.labels, splits)
  }


def entry(method: Method, hyper: ml_collections.ConfigDict, head: Classifier, feats: dict[str, np.ndarray],
          splits: datasets.Splits, validated: dict[str, Any] | None = None) -> dict[str, Any]:
  """A method's results: label, paper, variant (from its config entry `hyper`), where it ran and its
  hyper-parameters; test All / Many / Medium / Few (on test features [N, d], or on the mean logits of K crops of
  each image, [N, K, d]), per-class test accuracy, calibration of its softmax on test (ECE over 15 bins and NLL, with the
  reliability bins; and both after temperature scaling with T fit on validation, comparable across methods whose
  logit scales are arbitrary, which it marks); validation groups. `validated`: the head's `validation`, where the
  caller has it (a five-crop row: its method's)."""
  test_features = feats["test"]
  if test_features.ndim == 3:  # crops of each test image [N, K, d]: their logits averaged (test-time ensembling)
    flat = head.logits(test_features.reshape(-1, test_features.shape[-1]))
    logits = flat.reshape(*test_features.shape[:2], -1).mean(axis=1)
    test = logits.argmax(axis=1)
  else:
    test, logits = head.predict(test_features), head.logits(test_features)
  bins = metrics.reliability_bins(logits, splits.test.labels)
  validated = validation(head, feats.get("val"), splits) if validated is None else validated
  scaled = {"temperature": None, "ece_ts": None, "nll_ts": None}
  if validated:
    temperature = validated["temperature"]
    scaled = {
        "temperature": temperature, "ece_ts": metrics.expected_calibration_error(logits / np.float32(temperature),
                                                                                 splits.test.labels),
        "nll_ts": metrics.nll(logits / np.float32(temperature), splits.test.labels)
    }
  result = {
      "label": hyper.label, "paper": hyper.paper, "variant": hyper.variant, "runs_on": method.runs_on,
      "hyper": hyper.to_dict(), **{k: v for k, v in head.extras.items() if k != "tau_curve"}, **metrics.groups_of(
          test, splits.test.labels, splits), "ece": metrics.expected_calibration_error(logits, splits.test.labels),
      "nll": metrics.nll(logits, splits.test.labels),
      **scaled, "arbitrary_logit_scale": method.arbitrary_logit_scale or head.normalize,
      "reliability": {k: np.nan_to_num(v, nan=0.0).tolist() for k, v in bins.items()
                     }, "per_class": metrics.per_class_accuracy(test, splits.test.labels, splits.num_classes).tolist()
  }
  if validated:
    result["val"] = validated["val"]
  return result


def export(name: str, head: Classifier, variables: Variables, config: ml_collections.ConfigDict,
           splits: datasets.Splits, workdir: str, mesh: Mesh, step: int) -> str:
  """Writes `variables`' backbone with `head` as workdir/stage2/<name>/checkpoints (every process takes part)."""
  params = jax.device_put(head.params(), parallel.replicated(mesh))
  directory = paths.join(backbone.run_dir(workdir, name), "checkpoints")
  manager = checkpoints.Manager(directory, max_to_keep=1)
  manager.save(
      step, {"params": {**variables["params"], "head": params}, "batch_stats": variables["batch_stats"]},
      checkpoints.model_meta(config, splits.num_classes, f"stage2/{name}", head.spec(), class_names=splits.names,
                             image_shape=splits.image_shape))
  manager.wait()
  return directory


def _exported(config: ml_collections.ConfigDict, results: dict[str, Any]) -> list[str]:
  """The methods to export (config key stage2.export: names, 'best' (by validation All) or 'all')."""
  if "all" in config.stage2.export:
    return list(config.stage2.methods)
  names = [name for name in config.stage2.export if name != "best"]
  if "best" in config.stage2.export and results["best"] is not None:
    names.append(results["best"])
  return list(dict.fromkeys(names))


def best(results: dict[str, Any]) -> str | None:
  """The method with the best validation All (the first on ties; test is never looked at; a five-crop row is its
  method's), None without one."""
  val_all = {
      name: r["val"]["all"]
      for name, r in results["methods"].items()
      if r.get("val", {}).get("all") is not None and not name.endswith(FIVE_CROP)
  }
  return max(val_all, key=val_all.get) if val_all else None


def run(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh | None = None,
        splits: datasets.Splits | None = None) -> dict[str, Any]:
  """Stage 2 on the workdir's stage-1 checkpoint; writes results.json, results.md, plots and the exported
  checkpoints. mesh and splits default to every device and `datasets.build_splits(config.data)`."""
  mesh = mesh or parallel.data_mesh()
  splits = splits or datasets.build_splits(config.data)
  stage1_dir = paths.join(workdir, "checkpoints")
  model, stage1 = checkpoints.restore_stage1(config, stage1_dir, splits.num_classes, splits.image_shape, mesh)
  step = checkpoints.Manager(stage1_dir, read_only=True).latest_step()
  stage1_digest = features_lib.backbone_digest(stage1)
  feats = features_lib.extract(model, stage1, splits, config, workdir, mesh, digest=stage1_digest)
  features = features_lib.Features(splits, feats["train"], feats.get("val"), feats["test"])
  joint = Classifier.of_model(stage1["params"]["head"], model.head_spec)

  results: dict[str, Any] = {
      "dataset": splits.name, "methods": {}, "class_names": splits.names, "class_counts": splits.class_counts.tolist(),
      "groups": splits.groups.tolist(), "weight_norms": {}, "tau_curves": {}
  }
  heads: dict[str, tuple[Classifier, Variables]] = {}
  stage1_checksum = None  # of the whole stage-1 model, for the settings of the methods through the backbone
  for name in config.stage2.methods:
    method, hyper = method_of(config, name), hyper_of(config, name)
    method_model, run_dir, digest = model, workdir, stage1_digest
    if method.runs_on == ON_FEATURES:
      head, variables, method_feats = method.resolve()(features, joint, hyper, config), stage1, feats
    else:
      setup = method.resolve()(stage1, joint, hyper, config, splits)
      stage1_checksum = stage1_checksum or checkpoints.checksum(stage1)
      method_model, variables = backbone.run(name, setup, hyper, config, workdir, stage1, model.head_spec, splits, mesh,
                                             stage1_checksum)
      head = Classifier.of_model(variables["params"]["head"], method_model.head_spec)
      digest = features_lib.backbone_digest(variables)
      if digest == stage1_digest:
        method_feats = feats
      else:
        run_dir = backbone.run_dir(workdir, name)
        method_feats = features_lib.extract(method_model, variables, splits, config, run_dir, mesh, ("val", "test"),
                                            digest=digest)
    heads[name] = head, variables
    validated = validation(head, method_feats.get("val"), splits)
    results["methods"][name] = entry(method, hyper, head, method_feats, splits, validated)
    if "tau_curve" in head.extras:
      results["tau_curves"][name] = head.extras["tau_curve"]
    if head.linear and (name == "joint" or not np.array_equal(head.kernel, joint.kernel)):  # Fig. 2 (left)
      results["weight_norms"][name] = np.linalg.norm(head.kernel, axis=0).tolist()
    if name in config.stage2.five_crop:  # its own row: the same head on five crops of each test image
      crops = features_lib.extract(method_model, variables, splits, config, run_dir, mesh, ("test",), five_crop=True,
                                   digest=digest)
      five = hyper.copy_and_resolve_references()
      five.label = f"{hyper.label}, five-crop test"
      results["methods"][f"{name}{FIVE_CROP}"] = entry(method, five, head, {**method_feats, **crops}, splits, validated)

  results["best"] = best(results)
  results["exported"] = {}
  for name in _exported(config, results):
    head, variables = heads[name]
    if method_of(config, name).runs_on == ON_FEATURES:
      results["exported"][name] = export(name, head, variables, config, splits, workdir, mesh, step)
    else:
      results["exported"][name] = paths.join(backbone.run_dir(workdir, name), "checkpoints")
  if jax.process_index() == 0:
    results["files"] = report.write(results, workdir, config)
  parallel.barrier("stage-2 report written")
  return results
