"""cRT and LWS re-balance a head on a synthetic long-tailed Gaussian mixture: few-shot accuracy goes up."""

import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import classifiers, metrics, rebalance
from ltr_jax.data.longtail import group_of_classes

C, D = 20, 16
TRAIN = dict(epochs=20, batch_size=64, lr=0.1, weight_decay=5e-4, progress=False)


@pytest.fixture(scope="module")
def mixture():
  """Overlapping Gaussian classes with 400..4 training samples (imbalance 100), 50 test samples each."""
  rng = np.random.default_rng(0)
  means = rng.standard_normal((C, D)) * 0.9
  counts = (400 * 100.0 ** (-np.arange(C) / (C - 1))).astype(int)
  def sample(per_class):
    labels = np.repeat(np.arange(C), per_class)
    return (means[labels] + rng.standard_normal((labels.size, D))).astype(np.float32), labels
  train, train_labels = sample(counts)
  test, test_labels = sample(50)
  joint = rebalance.train_crt(train, train_labels, C, sampling="instance", seed=1, **TRAIN)
  return dict(train=train, train_labels=train_labels, test=test, test_labels=test_labels, joint=joint,
              groups=group_of_classes(counts))


def _groups(mixture, logits):
  per_class = metrics.per_class_accuracy(np.asarray(metrics.top1_predictions(logits)), mixture["test_labels"], C)
  return metrics.group_accuracy(per_class, mixture["groups"])


def test_crt_raises_few_shot_accuracy(mixture):
  W, b = mixture["joint"]
  joint = _groups(mixture, mixture["test"] @ W + b)
  W_crt, b_crt = rebalance.train_crt(mixture["train"], mixture["train_labels"], C, seed=2, **TRAIN)
  assert W_crt.shape == (D, C) and b_crt.shape == (C,)
  crt = _groups(mixture, mixture["test"] @ W_crt + b_crt)
  assert crt["few"] > joint["few"] + 10.0, (crt, joint)
  assert crt["all"] > joint["all"], (crt, joint)
  # "C only": the same training started from the joint head instead of a fresh one.
  W_c, b_c = rebalance.train_crt(mixture["train"], mixture["train_labels"], C, seed=2, init=(W, b), **TRAIN)
  assert _groups(mixture, mixture["test"] @ W_c + b_c)["few"] > joint["few"] + 10.0


def test_lws_raises_few_shot_accuracy_of_its_head(mixture):
  W, b = mixture["joint"]
  joint = _groups(mixture, mixture["test"] @ W + b)
  scales = rebalance.train_lws(jnp.asarray(mixture["train"]), mixture["train_labels"], W, b, C, epochs=10,
                               batch_size=64, lr=0.1, seed=3, progress=False)
  assert scales.shape == (C,)
  lws = _groups(mixture, classifiers.lws_logits(mixture["test"], W, b, scales))
  assert lws["few"] > joint["few"] + 10.0, (lws, joint)
  # The learnt scales grow towards the tail: the few-shot classes get the larger ones.
  few = mixture["groups"] == "few"
  assert float(scales[few].mean()) > float(scales[mixture["groups"] == "many"].mean())
