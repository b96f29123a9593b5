"""tau-normalisation, the factored tau sweep, NCM, LWS and logit adjustment against direct numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import classifiers
from ltr_jax.errors import ConfigError, DataError


def _head(seed=0, n=203, d=16, c=37):
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, d)).astype(np.float32)
  # Column norms spread over 0.1..3 so that tau changes the predictions.
  W = (rng.standard_normal((d, c)) * rng.uniform(0.1, 3.0, c)).astype(np.float32)
  b = rng.standard_normal(c).astype(np.float32)
  return z, W, b


def test_tau_zero_is_joint_without_bias_and_tau_one_is_l2_normalised():
  z, W, b = _head()
  np.testing.assert_allclose(np.asarray(z @ classifiers.tau_normalize(W, 0.0)), z @ W, rtol=1e-5, atol=1e-5)
  W1 = np.asarray(classifiers.tau_normalize(W, 1.0))
  np.testing.assert_allclose(np.linalg.norm(W1, axis=0), 1.0, rtol=1e-5)
  np.testing.assert_allclose(W1, W / np.linalg.norm(W, axis=0), rtol=1e-5)


@pytest.mark.parametrize("as_jax", [False, True])
def test_tau_sweep_equals_direct_per_tau(as_jax):
  z, W, _ = _head()
  taus = np.linspace(0, 2, 21)
  features = jnp.asarray(z) if as_jax else z
  # chunk_size 64 does not divide N = 203: the padded last chunk must not leak into the result.
  sweep = np.asarray(classifiers.tau_sweep_predictions(features, W, taus, chunk_size=64))
  direct = np.stack([np.argmax(z @ np.asarray(classifiers.tau_normalize(W, t)), axis=1) for t in taus])
  assert sweep.shape == (21, 203) and sweep.dtype == np.int32
  np.testing.assert_array_equal(sweep, direct)
  assert len({tuple(p) for p in sweep}) > 3  # tau really changes the predictions on this head.


def _clusters(seed, per_class, num_classes=6, d=10, noise=0.15):
  """Clusters around orthogonal unit directions, offset by a common shift that cl2n removes."""
  rng = np.random.default_rng(seed)
  centres = np.eye(d)[:num_classes] * 3.0 + 5.0
  labels = np.repeat(np.arange(num_classes), per_class)
  features = centres[labels] + noise * rng.standard_normal((labels.size, d))
  return features.astype(np.float32), labels


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_ncm_separable_clusters_exact(metric):
  train, train_labels = _clusters(0, 20)
  test, test_labels = _clusters(1, 40)
  centroids, mean = classifiers.ncm_centroids(train, train_labels, 6, chunk_size=7)
  predictions = np.argmax(np.asarray(classifiers.ncm_logits(test, centroids, mean, metric)), axis=1)
  np.testing.assert_array_equal(predictions, test_labels)


def test_ncm_centroids_and_logits_match_numpy():
  rng = np.random.default_rng(2)
  train = rng.standard_normal((101, 8)).astype(np.float32)
  labels = rng.integers(0, 5, 101)
  centroids, mean = classifiers.ncm_centroids(train, labels, 5, chunk_size=16)
  x = train - train.mean(0)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  expected = np.stack([x[labels == j].mean(0) for j in range(5)])
  np.testing.assert_allclose(np.asarray(mean), train.mean(0), atol=1e-5)
  np.testing.assert_allclose(np.asarray(centroids), expected, atol=1e-5)
  query = rng.standard_normal((9, 8)).astype(np.float32)
  q = query - train.mean(0)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  euclid = -((q[:, None] - expected[None]) ** 2).sum(-1)
  cosine = q @ expected.T / np.linalg.norm(expected, axis=1)
  np.testing.assert_allclose(np.asarray(classifiers.ncm_logits(query, centroids, mean)), euclid, atol=1e-5)
  np.testing.assert_allclose(np.asarray(classifiers.ncm_logits(query, centroids, mean, "cosine")), cosine,
                             atol=1e-5)


def test_ncm_empty_class_and_bad_metric():
  train = np.ones((4, 3), np.float32)
  with pytest.raises(DataError, match="class 2 has no training feature"):
    classifiers.ncm_centroids(train, np.array([0, 1, 1, 3]), 4)
  with pytest.raises(ConfigError, match="NCM metric 'manhattan'"):
    classifiers.ncm_logits(train, jnp.ones((2, 3)), jnp.zeros(3), "manhattan")


def test_lws_with_unit_scales_is_joint():
  z, W, b = _head()
  np.testing.assert_allclose(np.asarray(classifiers.lws_logits(z, W, b, jnp.ones(W.shape[1]))), z @ W + b,
                             rtol=1e-5, atol=1e-5)
  scales = np.linspace(0.5, 2.0, W.shape[1]).astype(np.float32)
  np.testing.assert_allclose(np.asarray(classifiers.lws_logits(z, W, b, scales)), scales * (z @ W + b),
                             rtol=1e-5, atol=1e-5)


def test_logit_adjust_numbers():
  logits = np.array([[2.0, 1.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
  prior = np.array([0.7, 0.2, 0.1], np.float32)
  adjusted = np.asarray(classifiers.logit_adjust(logits, prior, 1.0))
  np.testing.assert_allclose(adjusted, logits - np.log(prior), rtol=1e-6)
  # The rare class overtakes: 0.5 - ln 0.1 = 2.80 > 2 - ln 0.7 = 2.36.
  assert adjusted.argmax(1).tolist() == [2, 2]
  np.testing.assert_allclose(np.asarray(classifiers.logit_adjust(logits, prior, 0.0)), logits)
