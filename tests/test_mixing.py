"""MiSLAS: mixup on real Fashion-MNIST images and its loss; label-aware smoothing against the paper's formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ltr_jax import losses, mixing
from ltr_jax.data.sources import fashion_mnist
from ltr_jax.errors import ConfigError


@pytest.fixture(scope="module")
def batch(fashion_mnist_dir):
  """32 normalised Fashion-MNIST training images [32, 28, 28, 1] and their labels."""
  source = fashion_mnist("train", data_dir=fashion_mnist_dir)
  images = source.images[:32].astype(np.float32) / 255.0
  return (images - 0.286) / 0.353, source.labels[:32].astype(np.int32)


def _log_softmax(z):
  shifted = np.asarray(z, np.float64) - np.max(z, axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def test_mixup_is_one_convex_combination_with_one_permutation(batch):
  images, labels = batch
  mix = jax.jit(mixing.mixup, static_argnums=3)
  mixed, labels_a, labels_b, lam = mix(jax.random.key(7), jnp.asarray(images), jnp.asarray(labels), 1.0)
  mixed, lam = np.asarray(mixed, np.float64), float(lam)
  assert 0.0 < lam < 1.0 and mixed.shape == images.shape
  assert np.array_equal(labels_a, labels)
  # Recover each row's partner x[j] = (x'_i - lam x_i) / (1 - lam) and find it among the batch's images.
  flat = images.reshape(len(images), -1).astype(np.float64)
  partners = (mixed.reshape(len(images), -1) - lam * flat) / (1.0 - lam)
  distances = ((partners[:, None, :] - flat[None, :, :])**2).sum(-1)
  perm = distances.argmin(axis=1)
  np.testing.assert_allclose(partners, flat[perm], atol=1e-4)  # Every row is lam x_i + (1 - lam) x_perm(i).
  assert sorted(perm.tolist()) == list(range(len(images)))  # One permutation of the batch.
  assert not np.array_equal(perm, np.arange(len(images)))
  np.testing.assert_array_equal(labels_b, labels[perm])
  # The key alone decides the draw (the pipeline derives it from the step).
  again = mix(jax.random.key(7), jnp.asarray(images), jnp.asarray(labels), 1.0)
  np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(mixed, np.float32))
  # alpha = 0: mixup off, lam = 1, the batch unchanged.
  off, _, _, lam_off = mixing.mixup(jax.random.key(7), jnp.asarray(images), jnp.asarray(labels), 0.0)
  assert float(lam_off) == 1.0 and np.array_equal(np.asarray(off), images)
  with pytest.raises(ConfigError, match="train.mixup_alpha"):
    mixing.mixup(jax.random.key(7), jnp.asarray(images), jnp.asarray(labels), -0.5)


def test_mixup_lambda_is_beta_distributed():
  x, y = jnp.zeros((4, 2)), jnp.arange(4)
  for alpha in (0.2, 1.0):
    draw = jax.jit(jax.vmap(lambda k: mixing.mixup(k, x, y, alpha)[3]))
    lams = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_mixup_loss_is_the_mixed_cross_entropy(batch):
  _, labels = batch
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((32, 10)).astype(np.float32) * 3
  labels_b = labels[rng.permutation(32)]
  got = mixing.mixup_loss(losses.cross_entropy, jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(labels_b),
                          jnp.float32(0.3))
  log_p = _log_softmax(logits)
  rows = np.arange(32)
  expected = 0.3 * np.mean(-log_p[rows, labels]) + 0.7 * np.mean(-log_p[rows, labels_b])
  assert float(got) == pytest.approx(expected, rel=1e-5)


COUNTS = np.array([500, 200, 50, 10])  # n_1 = 500, n_K = 10: x_j = (n_j - 10) / 490 = 1, 19/49, 4/49, 0.


@pytest.mark.parametrize(
    "mapping, expected",
    [
        # The paper's (and MiSLAS's code's) formulas, eps_1 = 0.4 (head), eps_K = 0.1 (tail):
        # concave eps_K + (eps_1 - eps_K) sin(pi (n_y - n_K) / (2 (n_1 - n_K)))
        ("concave", [0.4, 0.1 + 0.3 * np.sin(np.pi * 190 / 980), 0.1 + 0.3 * np.sin(np.pi * 40 / 980), 0.1]),
        # linear eps_K + (eps_1 - eps_K) (n_y - n_K) / (n_1 - n_K): 0.1 + 0.3 * 19/49 = 0.21632653...
        ("linear", [0.4, 0.21632653061224488, 0.12448979591836735, 0.1]),
        # convex eps_1 + (eps_1 - eps_K) sin(3 pi / 2 + pi (n_y - n_K) / (2 (n_1 - n_K)))
        ("convex", [0.4 + 0.3 * np.sin(1.5 * np.pi + np.pi * n / 980) for n in (490, 190, 40, 0)]),
    ])
def test_label_aware_smoothing_follows_the_paper(mapping, expected):
  eps = mixing.label_aware_epsilons(COUNTS, eps_head=0.4, eps_tail=0.1, mapping=mapping)
  np.testing.assert_allclose(eps, expected, rtol=1e-12, atol=1e-15)
  labels = np.array([0, 1, 2, 3, 1, 3])
  targets = np.asarray(mixing.las_targets(jnp.asarray(labels), eps, 4), np.float64)
  expected_eps = np.asarray(expected)[labels]
  for row, (y, e) in enumerate(zip(labels, expected_eps)):
    want = np.full(4, e / 4)
    want[y] += 1 - e
    np.testing.assert_allclose(targets[row], want, rtol=1e-6)
  # The LAS loss: mean of (1 - eps_y)(-log p_y) + eps_y * mean_j(-log p_j), MiSLAS's LabelAwareSmoothing.
  logits = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32) * 2
  log_p = _log_softmax(logits)
  by_formula = np.mean((1 - expected_eps) * -log_p[np.arange(6), labels] + expected_eps * -log_p.mean(axis=1))
  loss = mixing.las_loss(COUNTS, 0.4, 0.1, mapping)
  assert float(loss(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(by_formula, rel=1e-5)


def test_label_aware_smoothing_orders_and_limits():
  counts = np.array([1000, 400, 100, 30, 10, 5])
  concave, linear, convex = (mixing.label_aware_epsilons(counts, 0.3, 0.0, m) for m in mixing.SMOOTHING_MAPPINGS)
  assert (concave[1:-1] > linear[1:-1]).all() and (linear[1:-1] > convex[1:-1]).all()
  assert (np.diff(concave) <= 0).all()  # Fewer images, less smoothing.
  np.testing.assert_allclose(mixing.label_aware_epsilons(np.full(3, 7), 0.3, 0.1), 0.3)  # Balanced: all head.
  with pytest.raises(ConfigError, match="mapping 'cubic'"):
    mixing.label_aware_epsilons(counts, 0.3, 0.0, "cubic")
  with pytest.raises(ConfigError, match="eps_head must be in"):
    mixing.label_aware_epsilons(counts, 1.3, 0.0)
