"""Stage 2: freeze the representation, re-balance the classifier, evaluate every method side by side.

Features of the train / validation / test splits are extracted once (BatchNorm in inference mode, no
augmentation) and cached in the workdir. Each method of `METHODS` is one function from those features and the
stage-1 (joint) head to a `Head`; the recipes of stage2.finetune train through the backbone instead
(ltr_jax.finetune). Every choice (tau) is made on the validation split; the test split is evaluated once per
method. The best linear classifier on validation is exported with the backbone as a stage-2 checkpoint that
--mode=evaluate and the notebooks load.

Adding a classifier: write `def my_method(features: Features, joint: Head, config) -> Head`, add one line to
`METHODS` (its name, report label, and whether it is the paper's), and test it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltr_jax import checkpoints, classifiers, evaluate, finetune, metrics, parallel, rebalance, report
from ltr_jax.checkpoints import Variables
from ltr_jax.data import datasets
from ltr_jax.errors import DataError
from ltr_jax.models import LTRModel


@dataclasses.dataclass(frozen=True)
class Head:
  """A classifier over features z: logits = t(z) @ kernel + bias.

  t(z) = z; with `center`, z - center; then, with `normalize`, divided by its L2 norm (NCM's cl2n transform
  centres and normalises, a cosine head normalises). `extras` holds what the method chose (e.g. tau and its
  validation / test curves), reported beside its accuracy.
  """
  kernel: np.ndarray  # [d, C]
  bias: np.ndarray  # [C]
  center: np.ndarray | None = None  # [d]
  normalize: bool = False
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def linear(self) -> bool:
    """Logits linear in the raw features (what a linear model head can hold)."""
    return self.center is None and not self.normalize

  def inputs(self, z: np.ndarray) -> np.ndarray:
    """t(z), float32."""
    z = np.asarray(z, np.float32)
    if self.center is not None:
      z = z - self.center
    if self.normalize:
      z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return z

  def logits(self, z: np.ndarray) -> np.ndarray:
    return self.inputs(z) @ self.kernel + self.bias

  def predict(self, z: np.ndarray) -> np.ndarray:
    return np.asarray(classifiers.linear_predictions(self.inputs(z), self.kernel, self.bias))

  def replace(self, **changes) -> "Head":
    return dataclasses.replace(self, **changes)


def head_of(model: ml_collections.ConfigDict, params: dict[str, Any]) -> Head:
  """A model's own classifier (config key `model`, its head parameters) as a Head over its features.

  linear: kernel W, bias b. cosine: s cos(z, w_j) = (z / ||z||) . (s w_j / ||w_j||), no bias. Learned logit
  scales (MiSLAS's stage 2), if the head has them, multiply each class's column and bias.
  """
  kernel = np.asarray(params["kernel"], np.float32)
  scales = np.asarray(params.get("lws", np.ones(kernel.shape[1])), np.float32)
  if model.head == "cosine":
    kernel = model.head_scale * kernel / np.maximum(np.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    return Head(kernel * scales, np.zeros(kernel.shape[1], np.float32), normalize=True)
  return Head(kernel * scales, np.asarray(params["bias"], np.float32) * scales)


@dataclasses.dataclass(frozen=True)
class Features:
  """What every method sees: the cached features of each split, with the splits' labels and class counts."""
  splits: datasets.Splits
  train: np.ndarray
  val: np.ndarray | None
  test: np.ndarray

  def labels(self, split: str) -> np.ndarray:
    return getattr(self.splits, split).labels


Method = Callable[[Features, Head, ml_collections.ConfigDict], Head]


def _backbone_digest(variables: Variables):
  """A hash of the exact backbone weights and BN statistics (computed once per extraction)."""
  digest = hashlib.sha1()
  for leaf in jax.tree.leaves((variables["params"]["backbone"], variables["batch_stats"])):
    digest.update(np.asarray(leaf).tobytes())
  return digest


def _fingerprint(backbone, config: ml_collections.ConfigDict, split: str, num_samples: int) -> str:
  """Identifies a feature cache: the backbone digest, the data and transform, the split."""
  digest = backbone.copy()
  digest.update(json.dumps([split, num_samples, config.data.to_dict()], sort_keys=True,
                           default=str).encode())
  return digest.hexdigest()


def extract_features(model: LTRModel, variables: Variables, splits: datasets.Splits, config: ml_collections.ConfigDict,
                     run_dir: str, mesh: Mesh, split_names: tuple[str, ...] = ("train", "val", "test")
                     ) -> dict[str, np.ndarray]:
  """{split: features [N, d]} of the splits that exist, from run_dir/features when the backbone is the same."""
  predict = evaluate.make_predict(model, config.data, mesh)
  cache_dir = os.path.join(run_dir, "features")
  os.makedirs(cache_dir, exist_ok=True)
  features = {}
  backbone = _backbone_digest(variables)
  for split in split_names:
    source = getattr(splits, split)
    if source is None:
      continue
    path = os.path.join(cache_dir, f"{split}.npy")
    key = _fingerprint(backbone, config, split, len(source))
    key_path = path + ".fingerprint"
    if os.path.exists(path) and os.path.exists(key_path) and open(key_path).read() == key:
      features[split] = np.load(path, mmap_mode="r")  # read as used; .npy data is 64-byte aligned
      continue
    _, features[split] = evaluate.run_inference(predict, variables, source, config, mesh, f"features {split}")
    if jax.process_index() == 0:  # a new file renamed over the old: arrays mapped from the old one stay intact
      np.save(path + ".tmp.npy", features[split])
      os.replace(path + ".tmp.npy", path)
      with open(key_path, "w") as f:
        f.write(key)
  return features


def _groups_of(predictions: np.ndarray, labels: np.ndarray, splits: datasets.Splits) -> dict:
  per_class = metrics.per_class_accuracy(predictions, labels, splits.num_classes)
  return metrics.group_accuracy(per_class, splits.groups)


def select_tau(features: Features, sweep: Callable[[np.ndarray], np.ndarray],
               config: ml_collections.ConfigDict) -> tuple[float, dict[str, Any]]:
  """The tau of config key stage2.taus with the best validation All (first on ties), never chosen on test.

  sweep(z) gives the predictions [T, N] of every tau for features z. Returns (tau, extras for the Head: the
  chosen tau and the whole validation and test curves).
  """
  if features.val is None:
    raise DataError("tau is selected on the validation split, and this dataset has none: set config key "
                    "data.val_list / data.val_split / data.val_per_class, or drop the tau methods from "
                    "stage2.methods")
  curves = {split: [_groups_of(p, features.labels(split), features.splits) for p in np.asarray(sweep(z))]
            for split, z in (("val", features.val), ("test", features.test))}
  tau = float(config.stage2.taus[int(np.argmax([c["all"] for c in curves["val"]]))])
  return tau, {"tau": tau, "tau_curve": {"taus": list(map(float, config.stage2.taus)), **curves}}


def joint(features: Features, head: Head, config: ml_collections.ConfigDict) -> Head:
  """The stage-1 classifier as it is."""
  return head


def ncm(features: Features, head: Head, config: ml_collections.ConfigDict) -> Head:
  """Nearest class mean over the cl2n transform x = (z - mean) / ||z - mean|| of the training features.

  stage2.ncm_metric: 'euclidean', argmin_j ||x - c_j||^2; 'cosine', the paper's cosine similarity
  x.c_j / ||c_j||; 'reference_cos', x.c_j with un-normalised centroids, which the reference KNNClassifier
  calls 'cos'. Each is linear in x: -||x - c_j||^2 = 2 x.c_j - ||c_j||^2 - ||x||^2, and ||x||^2 is the same for
  every class, so the softmax over classes equals that of the negative squared distances too. Independent of
  the stage-1 head's kind.
  """
  metric = config.stage2.ncm_metric
  centroids, mean = classifiers.ncm_centroids(features.train, features.labels("train"), features.splits.num_classes)
  kernel, bias = (np.asarray(a) for a in classifiers.ncm_head(centroids, metric))
  return Head(kernel, bias, center=np.asarray(mean), normalize=True, extras={"metric": metric})


def crt(features: Features, head: Head, config: ml_collections.ConfigDict) -> Head:
  """Classifier re-training on the cached (un-augmented) features, class-balanced sampling: a new classifier of
  the stage-1 head's kind (linear, or on a cosine head a cosine classifier with the same s)."""
  s2 = config.stage2.crt
  cosine = config.model.head_scale if head.normalize else None
  kernel, bias = rebalance.train_crt(head.inputs(features.train) if cosine else features.train,
                                     features.labels("train"), features.splits.num_classes, epochs=s2.epochs,
                                     batch_size=s2.batch_size, lr=s2.lr, weight_decay=s2.weight_decay,
                                     seed=config.seed, cosine_scale=cosine)
  return Head(np.asarray(kernel), np.asarray(bias), normalize=head.normalize)


def tau_norm(features: Features, head: Head, config: ml_collections.ConfigDict) -> Head:
  """w_j / ||w_j||^tau, bias dropped, tau chosen on validation. On a cosine head every column already has norm
  s, so every tau gives the joint classifier (the curve is flat and tau = the first of stage2.taus)."""
  tau, extras = select_tau(
      features, lambda z: classifiers.tau_sweep_predictions(head.inputs(z), head.kernel, config.stage2.taus), config)
  return head.replace(kernel=np.asarray(classifiers.tau_normalize(head.kernel, tau)), bias=np.zeros_like(head.bias),
                      extras=extras)


def lws(features: Features, head: Head, config: ml_collections.ConfigDict) -> Head:
  """Learnable weight scaling: s_j (w_j t(z) + b_j), only s trained, class-balanced sampling."""
  s2 = config.stage2.lws
  scales = np.asarray(rebalance.train_lws(head.inputs(features.train), features.labels("train"), head.kernel,
                                          head.bias, features.splits.num_classes, epochs=s2.epochs,
                                          batch_size=s2.batch_size, lr=s2.lr, weight_decay=s2.weight_decay,
                                          seed=config.seed))
  return head.replace(kernel=head.kernel * scales[None, :], bias=head.bias * scales)


def logit_adjust(features: Features, head: Head, config: ml_collections.ConfigDict) -> Head:
  """Post-hoc logit adjustment (Menon et al. 2021): logits - tau log prior_j, tau chosen on validation."""
  counts = features.splits.class_counts
  prior = counts / counts.sum()
  tau, extras = select_tau(features, lambda z: classifiers.logit_adjust_sweep_predictions(
      head.inputs(z), head.kernel, head.bias, prior, config.stage2.taus), config)
  return head.replace(bias=head.bias - np.float32(tau) * np.log(prior).astype(np.float32), extras=extras)


def wb(features: Features, head: Head, config: ml_collections.ConfigDict) -> Head:
  """Weight balancing's stage 2 (Alshammari et al. 2022): the joint head fine-tuned on the features with a
  class-balanced loss, weight decay and MaxNorm (ltr_jax.rebalance.train_wb). Linear heads only."""
  s2 = config.stage2.wb
  kernel, bias = rebalance.train_wb(features.train, features.labels("train"), head.kernel, head.bias,
                                    features.splits.num_classes, epochs=s2.epochs, batch_size=s2.batch_size,
                                    lr=s2.lr, weight_decay=s2.weight_decay, max_norm=s2.max_norm,
                                    cb_beta=s2.cb_beta, loss=s2.loss, seed=config.seed)
  return Head(np.asarray(kernel), np.asarray(bias))


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  fn: Method
  label: str  # in reports
  paper: bool  # a method of Kang et al. 2020 (else a later one)
  needs_val: bool = False  # chooses a hyper-parameter on the validation split
  linear_only: bool = False  # defined for a linear stage-1 head only (config key model.head)


METHODS: dict[str, MethodSpec] = {
    "joint": MethodSpec(joint, "Joint", paper=True),
    "ncm": MethodSpec(ncm, "NCM", paper=True),
    "crt": MethodSpec(crt, "cRT (cached features)", paper=True),
    "tau_norm": MethodSpec(tau_norm, "τ-norm", paper=True, needs_val=True),
    "lws": MethodSpec(lws, "LWS", paper=True),
    "logit_adjust": MethodSpec(logit_adjust, "Logit adj.", paper=False, needs_val=True),
    "wb": MethodSpec(wb, "WB", paper=False, linear_only=True),
}


def _entry(label: str, paper: bool, head: Head, feats: dict[str, np.ndarray], splits: datasets.Splits
           ) -> dict[str, Any]:
  """A method's results: label, test All / Many / Medium / Few, per-class test accuracy, calibration of its
  softmax on test (ECE over 15 bins and NLL, with the reliability bins), validation groups."""
  test = head.predict(feats["test"])
  logits = head.logits(feats["test"])
  bins = metrics.reliability_bins(logits, splits.test.labels)
  entry = {"label": label, "paper": paper, **{k: v for k, v in head.extras.items() if k != "tau_curve"},
           **_groups_of(test, splits.test.labels, splits),
           "ece": metrics.expected_calibration_error(logits, splits.test.labels),
           "nll": metrics.nll(logits, splits.test.labels),
           "reliability": {k: np.nan_to_num(v, nan=0.0).tolist() for k, v in bins.items()},
           "per_class": metrics.per_class_accuracy(test, splits.test.labels, splits.num_classes).tolist()}
  if feats.get("val") is not None:
    entry["val"] = _groups_of(head.predict(feats["val"]), splits.val.labels, splits)
  return entry


def _export(name: str, head: Head, variables: Variables, config: ml_collections.ConfigDict,
            splits: datasets.Splits, workdir: str, mesh: Mesh, step: int) -> None:
  """Writes the stage-1 backbone with `head` as the stage-2 checkpoint (every process takes part)."""
  params = jax.device_put({"kernel": head.kernel.astype(np.float32), "bias": head.bias.astype(np.float32)},
                          parallel.replicated(mesh))
  manager = checkpoints.Manager(os.path.join(workdir, "stage2"), max_to_keep=1)
  manager.save(step, {"params": {**variables["params"], "head": params}, "batch_stats": variables["batch_stats"]},
               {**checkpoints.model_meta(config, splits.num_classes, "stage2"), "method": name})
  manager.wait()


def run(config: ml_collections.ConfigDict, workdir: str, mesh: Mesh | None = None,
        splits: datasets.Splits | None = None) -> dict[str, Any]:
  """Stage 2 on the workdir's stage-1 checkpoint; writes results.json, results.md, plots, a checkpoint.

  mesh and splits default to every device and `datasets.build_splits(config.data)`. The exported checkpoint
  holds the linear classifier with the best validation All (a linear model head only: a cosine model exports
  none).
  """
  mesh = mesh or parallel.data_mesh()
  splits = splits or datasets.build_splits(config.data)
  stage1_dir = os.path.join(workdir, "checkpoints")
  model, variables = checkpoints.restore_stage1(config, stage1_dir, splits.num_classes, splits.image_shape, mesh)
  feats = extract_features(model, variables, splits, config, workdir, mesh)
  features = Features(splits, feats["train"], feats.get("val"), feats["test"])
  joint_head = head_of(config.model, variables["params"]["head"])

  results: dict[str, Any] = {"dataset": splits.name, "methods": {}, "class_counts": splits.class_counts.tolist(),
                             "groups": splits.groups.tolist(), "weight_norms": {}}
  heads: dict[str, Head] = {}
  for name in config.stage2.methods:
    if name in METHODS:
      spec = METHODS[name]
      head = heads[name] = spec.fn(features, joint_head, config)
      results["methods"][name] = _entry(spec.label, spec.paper, head, feats, splits)
    else:  # a recipe through the backbone
      recipe = config.stage2.finetune.recipes[name]
      tuned_model, tuned = finetune.run(config, workdir, name, variables, splits, mesh)
      tuned_feats = extract_features(tuned_model, tuned, splits, config, os.path.join(workdir, "finetune", name),
                                     mesh, ("val", "test"))
      results["methods"][name] = _entry(recipe.label, recipe.paper, head_of(config.model, tuned["params"]["head"]),
                                        tuned_feats, splits)
  results["tau_curves"] = {name: head.extras["tau_curve"] for name, head in heads.items() if "tau_curve" in head.extras}
  for name, head in heads.items():  # Fig. 2 (left): the norms of the linear heads that differ from joint's
    if head.linear and (name == "joint" or not np.array_equal(head.kernel, joint_head.kernel)):
      results["weight_norms"][name] = np.linalg.norm(head.kernel, axis=0).tolist()

  linear = {name: head for name, head in heads.items() if head.linear and config.model.head == "linear"}
  val_all = {name: results["methods"][name]["val"]["all"] for name in linear if "val" in results["methods"][name]}
  export = max(val_all, key=val_all.get) if val_all else next(iter(linear), None)
  if export is not None:
    step = checkpoints.Manager(stage1_dir, read_only=True).latest_step()
    _export(export, linear[export], variables, config, splits, workdir, mesh, step)
  results["exported_method"] = export
  if jax.process_index() == 0:
    results["files"] = report.write(results, workdir, config)
  return results
