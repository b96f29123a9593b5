"""Stage 2: freeze the representation, re-balance the classifier, evaluate every method side by side.

Features of the train / validation / test splits are extracted once (BatchNorm in inference mode, no
augmentation) and cached in the workdir; NCM, cRT, tau-normalisation, LWS and post-hoc logit
adjustment then run on the cache. Every choice (tau) is made on the validation split; the test split
is evaluated once per method. The best linear classifier on validation is exported with the backbone
as a stage-2 checkpoint that --mode=evaluate and the notebooks load.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from ltr_jax import checkpoints, classifiers, metrics, parallel, rebalance, report, train
from ltr_jax.data import datasets
from ltr_jax.errors import ConfigError, DataError

METHODS = ("joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust")
TAU_METHODS = ("tau_norm", "logit_adjust")


def _backbone_digest(state):
  """A hash of the exact backbone weights and BN statistics (computed once per extraction)."""
  digest = hashlib.sha1()
  for leaf in jax.tree.leaves((state.params["backbone"], state.batch_stats)):
    digest.update(np.asarray(leaf).tobytes())
  return digest


def _fingerprint(backbone, config: ml_collections.ConfigDict, split: str, num_samples: int) -> str:
  """Identifies a feature cache: the backbone digest, the data and transform, the split."""
  digest = backbone.copy()
  digest.update(json.dumps([split, num_samples, config.data.to_dict()], sort_keys=True,
                           default=str).encode())
  return digest.hexdigest()


def extract_features(model, state, splits: datasets.Splits, config: ml_collections.ConfigDict,
                     workdir: str, split_names: tuple[str, ...] = ("train", "val", "test")) -> dict[str, np.ndarray]:
  """{split: features [N, d]} of the splits that exist, from the cache when the checkpoint is the same."""
  mesh = parallel.data_mesh()
  parallel.check_batch_size(config.stage2.batch_size, "stage2.batch_size")
  predict = train.make_predict(model, config.data, mesh)
  cache_dir = os.path.join(workdir, "features")
  os.makedirs(cache_dir, exist_ok=True)
  features = {}
  backbone = _backbone_digest(state)
  for split in split_names:
    source = getattr(splits, split)
    if source is None:
      continue
    path = os.path.join(cache_dir, f"{split}.npy")
    key = _fingerprint(backbone, config, split, len(source))
    key_path = path + ".fingerprint"
    if os.path.exists(path) and os.path.exists(key_path) and open(key_path).read() == key:
      features[split] = np.load(path)
      continue
    _, features[split] = train.run_inference(predict, state.params, state.batch_stats, source, config,
                                             mesh, config.stage2.batch_size, f"features {split}")
    if jax.process_index() == 0:
      np.save(path, features[split])
      with open(key_path, "w") as f:
        f.write(key)
  return features


def _groups_of(predictions: np.ndarray, labels: np.ndarray, splits: datasets.Splits) -> dict:
  per_class = metrics.per_class_accuracy(predictions, labels, splits.num_classes)
  return metrics.group_accuracy(per_class, splits.groups)


def _tau_curve(predictions_per_tau: np.ndarray, labels: np.ndarray, splits: datasets.Splits) -> list[dict]:
  return [_groups_of(p, labels, splits) for p in predictions_per_tau]


def _linear_heads(methods, feats, splits, W, b, config) -> dict[str, Any]:
  """The linear head (kernel, bias) of each linear method, and the tau curves of the tau methods."""
  s2 = config.stage2
  taus = np.asarray(s2.taus, np.float32)
  val = splits.val
  prior = splits.class_counts / splits.class_counts.sum()
  heads, curves = {}, {}
  if "joint" in methods:
    heads["joint"] = (W, b)
  if "crt" in methods:
    heads["crt"] = rebalance.train_crt(feats["train"], splits.train.labels, splits.num_classes,
                                       epochs=s2.crt.epochs, batch_size=s2.crt.batch_size, lr=s2.crt.lr,
                                       weight_decay=s2.crt.weight_decay, seed=config.seed)
  if "lws" in methods:
    scales = np.asarray(rebalance.train_lws(feats["train"], splits.train.labels, W, b, splits.num_classes,
                                            epochs=s2.lws.epochs, batch_size=s2.lws.batch_size, lr=s2.lws.lr,
                                            weight_decay=s2.lws.weight_decay, seed=config.seed))
    heads["lws"] = (W * scales[None, :], b * scales)
  if any(m in methods for m in TAU_METHODS) and (val is None or len(val) == 0):
    raise DataError(f"tau for {', '.join(m for m in TAU_METHODS if m in methods)} is selected on the "
                    "validation split, and this dataset has none: set config key data.val_list / "
                    "data.val_split / data.val_per_class, or drop those methods from stage2.methods")
  if "tau_norm" in methods:
    val_preds = np.asarray(classifiers.tau_sweep_predictions(feats["val"], W, taus))
    test_preds = np.asarray(classifiers.tau_sweep_predictions(feats["test"], W, taus))
    curves["tau_norm"] = (_tau_curve(val_preds, val.labels, splits), _tau_curve(test_preds, splits.test.labels, splits))
    tau = float(s2.taus[int(np.argmax([c["all"] for c in curves["tau_norm"][0]]))])
    heads["tau_norm"] = (np.asarray(classifiers.tau_normalize(W, tau)), np.zeros_like(b), tau)
  if "logit_adjust" in methods:
    def sweep(z, labels):
      logits = z @ W + b
      return _tau_curve(np.stack([np.asarray(classifiers.logit_adjust(logits, prior, t)).argmax(-1)
                                  for t in taus]), labels, splits)
    curves["logit_adjust"] = (sweep(feats["val"], val.labels), sweep(feats["test"], splits.test.labels))
    tau = float(s2.taus[int(np.argmax([c["all"] for c in curves["logit_adjust"][0]]))])
    heads["logit_adjust"] = (W, b - tau * np.log(prior).astype(np.float32), tau)
  return heads, curves


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Stage 2 on the workdir's stage-1 checkpoint; writes results.json, results.md, plots, a checkpoint."""
  methods = tuple(config.stage2.methods)
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ConfigError(f"config key stage2.methods: unknown method(s) {unknown} (expected some of {METHODS})")
  splits = datasets.build_splits(config.data)
  image_shape = (config.data.image_size, config.data.image_size, splits.train[0].shape[-1])
  model, state = train.restore_stage1(config, os.path.join(workdir, "checkpoints"), splits.num_classes,
                                      image_shape)
  feats = extract_features(model, state, splits, config, workdir)
  W = np.asarray(state.params["head"]["kernel"], np.float32)
  b = np.asarray(state.params["head"]["bias"], np.float32)
  heads, curves = _linear_heads(methods, feats, splits, W, b, config)

  # method -> (predictions on each evaluated split, extra report fields)
  predictions: dict[str, tuple[dict[str, np.ndarray], dict]] = {}
  evaluated = [split for split in ("val", "test") if split in feats]
  for method in methods:
    if method == "ncm":
      centroids, mean = classifiers.ncm_centroids(feats["train"], splits.train.labels, splits.num_classes)
      predictions[method] = ({split: np.asarray(classifiers.ncm_logits(
          feats[split], centroids, mean, config.stage2.ncm_metric)).argmax(-1) for split in evaluated},
                             {"metric": config.stage2.ncm_metric})
    else:
      kernel, bias = heads[method][:2]
      predictions[method] = ({split: (feats[split] @ kernel + bias).argmax(-1) for split in evaluated},
                             {"tau": heads[method][2]} if len(heads[method]) > 2 else {})
  for variant in config.stage2.finetune.variants:  # Table 1: fine-tuning through the backbone
    tuned = train.train_and_evaluate(config, workdir, finetune=variant)
    tuned_feats = extract_features(model, tuned, splits, config, os.path.join(workdir, "finetune", variant),
                                   evaluated)
    kernel, bias = (np.asarray(tuned.params["head"][k], np.float32) for k in ("kernel", "bias"))
    predictions[f"finetune_{variant}"] = ({split: (tuned_feats[split] @ kernel + bias).argmax(-1)
                                           for split in evaluated}, {})

  results: dict[str, Any] = {"dataset": splits.name, "methods": {}, "class_counts": splits.class_counts.tolist(),
                             "groups": splits.groups.tolist()}
  for method, (preds, extra) in predictions.items():
    entry = {**extra, **_groups_of(preds["test"], splits.test.labels, splits)}
    entry["per_class"] = metrics.per_class_accuracy(preds["test"], splits.test.labels, splits.num_classes).tolist()
    if "val" in preds:
      entry["val"] = _groups_of(preds["val"], splits.val.labels, splits)
    results["methods"][method] = entry
  val_all = {m: results["methods"][m]["val"]["all"] for m in heads if "val" in results["methods"][m]}
  results["tau_curves"] = {m: {"taus": list(map(float, config.stage2.taus)), "val": v, "test": t}
                           for m, (v, t) in curves.items()}
  results["weight_norms"] = {m: np.linalg.norm(heads[m][0], axis=0).tolist()
                             for m in ("joint", "crt", "tau_norm", "lws") if m in heads}

  export = max(val_all, key=val_all.get) if val_all else next((m for m in methods if m in heads), None)
  if export is not None:  # every process takes part in an Orbax save
    kernel, bias = heads[export][:2]
    head = jax.device_put({"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32)},
                          parallel.replicated(parallel.data_mesh()))
    stage2_state = {"params": {**state.params, "head": head}, "batch_stats": state.batch_stats}
    manager = checkpoints.Manager(os.path.join(workdir, "stage2"), max_to_keep=1)
    manager.save(int(state.step), stage2_state, {**checkpoints.model_meta(config, splits.num_classes, "stage2"),
                                                 "method": export})
    manager.wait()
    results["exported_method"] = export
  if jax.process_index() == 0:
    results["files"] = report.write(results, workdir, config)
  return results
