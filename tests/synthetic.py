"""Synthetic stage-2 inputs without training: long-tailed Gaussian class clusters as `Features`, with their splits.

A test of a method on features calls it directly: `method(features(...), joint_head(...), hyper, config)`.
"""
from __future__ import annotations

import types

import numpy as np

from ltr_jax.data import datasets, longtail
from ltr_jax.models import Classifier
from ltr_jax.stage2 import rebalance
from ltr_jax.stage2.features import Features


def features(counts=(400, 160, 60, 25, 10, 4), dim: int = 16, val_per_class: int = 20, test_per_class: int = 50,
             spread: float = 1.5, seed: int = 0) -> Features:
  """Features of len(counts) overlapping Gaussian classes: counts[j] training samples of class j, a balanced
  validation and test split; class means of different norms (so that cosine and Euclidean rules differ)."""
  rng = np.random.default_rng(seed)
  num_classes = len(counts)
  means = rng.standard_normal((num_classes, dim)) * rng.uniform(0.5, 2.0, (num_classes, 1))

  def split(per_class):
    labels = np.repeat(np.arange(num_classes), per_class)
    z = (means[labels] + spread * rng.standard_normal((labels.size, dim))).astype(np.float32)
    return z, types.SimpleNamespace(labels=labels)

  (train, train_src), (val, val_src), (test, test_src) = (split(counts), split(val_per_class), split(test_per_class))
  counts = np.asarray(counts)
  splits = datasets.Splits("synthetic", num_classes, train_src, val_src if val_per_class else None, test_src, counts,
                           longtail.group_of_classes(counts), (1, 1, 1))
  return Features(splits, train, val if val_per_class else None, test)


def joint_head(feats: Features, seed: int = 0) -> Classifier:
  """A joint classifier of these features, biased to the head classes as joint training leaves one: softmax
  regression with instance-balanced batches (ltr_jax.stage2.rebalance, a few seconds)."""
  kernel, bias = rebalance.train_crt(feats.train, feats.labels("train"), feats.splits.num_classes, epochs=20,
                                     batch_size=64, lr=0.1, weight_decay=5e-4, sampling="instance", seed=seed,
                                     progress=False)
  return Classifier(np.asarray(kernel), np.asarray(bias))
