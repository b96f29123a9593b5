"""Stage-2 methods on the cached features: each `fn(features, joint, hyper, config) -> Classifier`.

joint: the stage-1 classifier as a models.Classifier; hyper: the method's config entry stage2.<name>; config: the
experiment (its seed, its model's head). Every choice (tau) is made on the validation split, never on test.
"""
from __future__ import annotations

from typing import Any, Callable

import ml_collections
import numpy as np

from ltr_jax import losses, metrics
from ltr_jax.errors import DataError
from ltr_jax.models import Classifier
from ltr_jax.stage2 import classifiers, rebalance
from ltr_jax.stage2.features import Features


def select_tau(features: Features, sweep: Callable[[np.ndarray], np.ndarray], taus) -> tuple[float, dict[str, Any]]:
  """The tau of `taus` with the best validation All (first on ties), never chosen on test.

  sweep(z) gives the predictions [T, N] of every tau for features z. Returns (tau, extras for the Classifier: the
  chosen tau and the whole validation and test curves).
  """
  if features.val is None:
    raise DataError("tau is selected on the validation split, and this dataset has none: set config key "
                    "data.val_list / data.val_split / data.val_per_class, or drop the method from stage2.methods")
  curves = {
      split: [metrics.groups_of(p, features.labels(split), features.splits) for p in np.asarray(sweep(z))]
      for split, z in (("val", features.val), ("test", features.test))
  }
  tau = float(taus[int(np.argmax([c["all"] for c in curves["val"]]))])
  return tau, {"tau": tau, "tau_curve": {"taus": list(map(float, taus)), **curves}}


def joint(features: Features, head: Classifier, hyper: ml_collections.ConfigDict,
          config: ml_collections.ConfigDict) -> Classifier:
  """The stage-1 classifier as it is."""
  return head


def ncm(features: Features, head: Classifier, hyper: ml_collections.ConfigDict,
        config: ml_collections.ConfigDict) -> Classifier:
  """Nearest class mean over the cl2n transform x = (z - mean) / ||z - mean|| of the training features.

  hyper.metric: 'euclidean', argmin_j ||x - c_j||^2; 'cosine', the paper's cosine similarity x.c_j / ||c_j||;
  'reference_cos', x.c_j / d with un-normalised centroids, which the reference KNNClassifier calls 'cos'. Each is
  linear in x: -||x - c_j||^2 = 2 x.c_j - ||c_j||^2 - ||x||^2, and ||x||^2 is the same for every class, so the
  softmax over classes equals that of the negative squared distances too. Independent of the stage-1 head.
  """
  centroids, mean = classifiers.ncm_centroids(features.train, features.labels("train"), features.splits.num_classes)
  kernel, bias = (np.asarray(a) for a in classifiers.ncm_head(centroids, hyper.metric))
  return Classifier(kernel, bias, center=np.asarray(mean), normalize=True, extras={"metric": hyper.metric})


def crt(features: Features, head: Classifier, hyper: ml_collections.ConfigDict,
        config: ml_collections.ConfigDict) -> Classifier:
  """cRT on the cached features: a new classifier of config key model.head's kind (linear, or a cosine classifier
  with s = model.head_scale) trained with hyper.sampling (class-balanced: the method; instance-balanced: a linear
  probe)."""
  cosine = config.model.head_scale if config.model.head == "cosine" else None
  kernel, bias = rebalance.train_crt(
      head.inputs(features.train) if cosine else features.train, features.labels("train"), features.splits.num_classes,
      epochs=hyper.epochs, batch_size=hyper.batch_size, lr=hyper.lr, weight_decay=hyper.weight_decay,
      sampling=hyper.sampling, seed=config.seed, cosine_scale=cosine)
  return Classifier(np.asarray(kernel), np.asarray(bias), normalize=cosine is not None)


def tau_norm(features: Features, head: Classifier, hyper: ml_collections.ConfigDict,
             config: ml_collections.ConfigDict) -> Classifier:
  """w_j / ||w_j||^tau, bias dropped, tau of hyper.taus chosen on validation. On a cosine head every column already
  has norm s, so every tau gives the joint classifier (the curve is flat and tau = the first of hyper.taus)."""
  tau, extras = select_tau(features,
                           lambda z: classifiers.tau_sweep_predictions(head.inputs(z), head.kernel, hyper.taus),
                           hyper.taus)
  return head.replace(kernel=np.asarray(classifiers.tau_normalize(head.kernel, tau)), bias=np.zeros_like(head.bias),
                      extras=extras)


def lws(features: Features, head: Classifier, hyper: ml_collections.ConfigDict,
        config: ml_collections.ConfigDict) -> Classifier:
  """Learnable weight scaling on the cached features: s_j (w_j t(z) + b_j), only s trained, class-balanced."""
  scales = np.asarray(
      rebalance.train_lws(head.inputs(features.train), features.labels("train"), head.kernel, head.bias,
                          features.splits.num_classes, epochs=hyper.epochs, batch_size=hyper.batch_size, lr=hyper.lr,
                          weight_decay=hyper.weight_decay, seed=config.seed))
  return head.replace(kernel=head.kernel * scales[None, :], bias=head.bias * scales)


def logit_adjust(features: Features, head: Classifier, hyper: ml_collections.ConfigDict,
                 config: ml_collections.ConfigDict) -> Classifier:
  """Post-hoc logit adjustment (Menon et al. 2021): logits - tau log prior_j, tau of hyper.taus chosen on
  validation."""
  counts = features.splits.class_counts
  prior = counts / counts.sum()
  tau, extras = select_tau(
      features,
      lambda z: classifiers.logit_adjust_sweep_predictions(head.inputs(z), head.kernel, head.bias, prior, hyper.taus),
      hyper.taus)
  return head.replace(bias=head.bias - np.float32(tau) * np.log(prior).astype(np.float32), extras=extras)


def wb(features: Features, head: Classifier, hyper: ml_collections.ConfigDict,
       config: ml_collections.ConfigDict) -> Classifier:
  """Weight balancing's stage 2 (Alshammari et al. 2022) on the cached features: the joint head fine-tuned with a
  class-balanced loss, weight decay and MaxNorm (ltr_jax.stage2.rebalance.train_wb), the loss built from the keys of
  `hyper` as the stage-1 loop builds it for WB through the backbone. Linear heads only (config key model.head),
  over the joint head's inputs t(z) (CLIP's zero-shot head: the projected, normalised features)."""
  kernel, bias = rebalance.train_wb(head.inputs(features.train), features.labels("train"), head.kernel, head.bias,
                                    features.splits.num_classes, epochs=hyper.epochs, batch_size=hyper.batch_size,
                                    lr=hyper.lr, weight_decay=hyper.weight_decay, max_norm=hyper.max_norm,
                                    loss=hyper.loss, loss_hyper=losses.LossHyper.of(hyper), sampling=hyper.sampling,
                                    project_every=hyper.project_every, seed=config.seed)
  return head.replace(kernel=np.asarray(kernel), bias=np.asarray(bias))
