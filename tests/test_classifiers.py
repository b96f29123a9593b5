"""ops.top1 and linear predictions, and the stage-2 classifiers (tau-normalisation, the factored tau sweep, NCM, LWS,
logit adjustment), against direct numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import ops
from ltr_jax.stage2 import classifiers
from ltr_jax.errors import ConfigError, DataError

BLOCK = ops.TOP1_BLOCK


def _assert_top1_is_argmax(scores, block=BLOCK):
  expected = np.asarray(jnp.argmax(scores, axis=-1))
  got = np.asarray(jax.jit(ops.top1, static_argnums=1)(scores, block))
  assert got.dtype == np.int32 and got.shape == expected.shape
  np.testing.assert_array_equal(got, expected)
  # numpy's argmax (first maximum, first NaN) is the independent reference for float32.
  if scores.dtype == jnp.float32:
    np.testing.assert_array_equal(got, np.argmax(np.asarray(scores), axis=-1))
  if not np.isnan(np.asarray(jnp.sum(scores), np.float32)):  # top1 took its block path: check that path itself.
    fast = jax.jit(lambda s: ops._top1_no_nan(s, block=block))(scores)
    np.testing.assert_array_equal(np.asarray(fast), expected)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("c", [1, 7, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 3 * BLOCK + 5, 8142])
def test_top1_equals_argmax_random_and_ties(c, dtype):
  rng = np.random.default_rng(c)
  _assert_top1_is_argmax(jnp.asarray(rng.standard_normal((64, c)), dtype))
  # Scores from {0, 1, 2}: each row has many equal maxima, within one block and across blocks.
  _assert_top1_is_argmax(jnp.asarray(rng.integers(0, 3, (64, c)), dtype))
  # Rows of one repeated value: every class ties; the answer is class 0.
  _assert_top1_is_argmax(jnp.full((3, c), 0.5, dtype))
  # A NaN in some rows, anywhere: its row's answer is its first NaN; the other rows are unchanged.
  with_nan = rng.standard_normal((64, c))
  with_nan[rng.integers(0, 64, 8), rng.integers(0, c, 8)] = np.nan
  _assert_top1_is_argmax(jnp.asarray(with_nan, dtype))


def test_top1_ties_at_block_edges_inf_nan_and_leading_axes():
  c = 3 * BLOCK + 5  # The last block is ragged: 5 real classes.
  rows = np.zeros((7, c), np.float32)
  rows[0, [BLOCK - 1, BLOCK]] = 1  # Tie across the first block boundary.
  rows[1, [BLOCK + 3, 2 * BLOCK]] = 1  # Tie between two later blocks.
  rows[2, [c - 1]] = 1  # The maximum is the last class of the ragged block (clipped gather repeats it).
  rows[3] = -1.0
  rows[3, [2, BLOCK + 2]] = [-0.0, 0.0]  # -0 and +0 are equal maxima: the first.
  rows[4] = -np.arange(c)  # Strictly decreasing: class 0.
  rows[5] = -2.0
  rows[5, 2 * BLOCK + 1] = -1.0  # All negative: a block maximum must not start from 0.
  rows[6, [BLOCK + 1, 2 * BLOCK + 1]] = [np.inf, np.inf]  # Tied +inf (a sum of +inf: still the block path).
  all_minus_inf = np.full((12, c), -np.inf, np.float32)  # Class 0: the -inf padding of the last block never wins.
  nan = np.zeros((12, c), np.float32)  # XLA:CPU's vectorised max drops NaN from 11 rows on: the fallback.
  nan[0, [5, BLOCK + 7, c - 2]] = np.nan  # The first NaN, as jnp.argmax.
  nan[1, c - 1] = np.nan
  nan[2, [3, BLOCK + 3]] = [np.inf, np.nan]  # NaN beats +inf.
  nan[3, [2 * BLOCK, 2 * BLOCK + 1]] = [-np.inf, np.inf]  # No NaN, but +inf - inf makes the sum NaN.
  for scores in (rows, all_minus_inf, nan):
    _assert_top1_is_argmax(jnp.asarray(scores))
    _assert_top1_is_argmax(jnp.asarray(scores, jnp.bfloat16))
  rng = np.random.default_rng(0)
  stacked = rng.integers(0, 4, (3, 5, c)).astype(np.float32)  # [T, B, C], as in the tau sweep.
  _assert_top1_is_argmax(jnp.asarray(stacked))
  for block in (1, 2, 4, 6, 8):  # Other blocks, small enough to be ragged or exact on 7..24 classes.
    for cc in (7, 8, 24):
      _assert_top1_is_argmax(jnp.asarray(rng.integers(0, 3, (20, cc)), jnp.float32), block)


def test_top1_does_not_copy_the_scores():
  """No [N, C] (or padded [N, C']) buffer besides the input in the compiled top1: the scores are not padded."""
  scores = jnp.zeros((600, 8142), jnp.float32)
  compiled = jax.jit(ops.top1).lower(scores).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < scores.size * scores.dtype.itemsize // 10


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


@pytest.mark.parametrize("as_jax,c", [(False, 37), (True, 37), (False, 300)])
def test_tau_sweep_equals_direct_per_tau(as_jax, c):
  """The sweep's prediction for every tau is the argmax of the exact (float64) logits (z . w_j) ||w_j||^-tau,
  wherever the top two logits are further apart than float32 can blur them: a d-term dot product in float32 is off
  by at most (d + 1) eps sum_i |z_i w_ij| (Higham's bound on recursive summation, any order) and the scale by a few
  eps, so two classes can swap only within twice that. Closer rows are near-ties whose order depends on the CPU's
  summation order (AVX2 or AVX-512 dot kernels); there the sweep must still pick one of the near-tied classes."""
  z, W, _ = _head(c=c)
  taus = np.linspace(0, 2, 21)
  features = jnp.asarray(z) if as_jax else z
  # chunk_size 64 does not divide N = 203: the padded last chunk must not leak into the result.
  sweep = np.asarray(classifiers.tau_sweep_predictions(features, W, taus, chunk_size=64))
  assert sweep.shape == (21, 203) and sweep.dtype == np.int32
  eps, d = np.finfo(np.float32).eps, z.shape[1]
  z64, W64 = z.astype(np.float64), W.astype(np.float64)
  clear_rows = 0
  for tau, predictions in zip(taus, sweep):
    scale = np.linalg.norm(W64, axis=0)**-tau
    logits = (z64 @ W64) * scale
    tolerance = 2 * ((d + 8) * eps * (np.abs(z64) @ np.abs(W64)) * scale).max(axis=1)
    best = logits.max(axis=1)
    clear = best - np.sort(logits, axis=1)[:, -2] > tolerance
    np.testing.assert_array_equal(predictions[clear], logits.argmax(axis=1)[clear])
    assert (logits[np.arange(len(z)), predictions] >= best - tolerance).all()  # near-ties: one of the tied
    clear_rows += clear.sum()
  assert clear_rows > 0.97 * sweep.size  # the exact comparison covers nearly every row
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
  euclid = -((q[:, None] - expected[None])**2).sum(-1)
  cosine = q @ expected.T / np.linalg.norm(expected, axis=1)
  np.testing.assert_allclose(np.asarray(classifiers.ncm_logits(query, centroids, mean)), euclid, atol=1e-5)
  np.testing.assert_allclose(np.asarray(classifiers.ncm_logits(query, centroids, mean, "cosine")), cosine, atol=1e-5)


def test_ncm_empty_class_and_bad_metric():
  train = np.ones((4, 3), np.float32)
  with pytest.raises(DataError, match="class 2 has no training feature"):
    classifiers.ncm_centroids(train, np.array([0, 1, 1, 3]), 4)
  with pytest.raises(ConfigError, match="NCM metric 'manhattan'"):
    classifiers.ncm_logits(train, jnp.ones((2, 3)), jnp.zeros(3), "manhattan")


def test_lws_with_unit_scales_is_joint():
  z, W, b = _head()
  np.testing.assert_allclose(np.asarray(classifiers.lws_logits(z, W, b, jnp.ones(W.shape[1]))), z @ W + b, rtol=1e-5,
                             atol=1e-5)
  scales = np.linspace(0.5, 2.0, W.shape[1]).astype(np.float32)
  np.testing.assert_allclose(np.asarray(classifiers.lws_logits(z, W, b, scales)), scales * (z @ W + b), rtol=1e-5,
                             atol=1e-5)


def test_logit_adjust_numbers():
  logits = np.array([[2.0, 1.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
  prior = np.array([0.7, 0.2, 0.1], np.float32)
  adjusted = np.asarray(classifiers.logit_adjust(logits, prior, 1.0))
  np.testing.assert_allclose(adjusted, logits - np.log(prior), rtol=1e-6)
  # The rare class overtakes: 0.5 - ln 0.1 = 2.80 > 2 - ln 0.7 = 2.36.
  assert adjusted.argmax(1).tolist() == [2, 2]
  np.testing.assert_allclose(np.asarray(classifiers.logit_adjust(logits, prior, 0.0)), logits)


def test_linear_ncm_and_logit_adjust_predictions_equal_argmax_of_their_logits():
  # 300 classes (more than one block, a ragged last one); 203 rows in chunks of 64 (a padded last chunk). Exact
  # argmax equality is safe across summation orders (AVX2 or AVX-512): on these rows the smallest gap between the top
  # two logits is 7x float32's worst-case error of their 16-term dot products, (d + 1) eps sum_i |z_i w_ij| (Higham).
  z, W, b = _head(c=300)
  np.testing.assert_array_equal(np.asarray(ops.linear_predictions(z, W, b, chunk_size=64)),
                                np.argmax(np.asarray(jnp.asarray(z) @ W + b), axis=1))
  np.testing.assert_array_equal(np.asarray(ops.linear_predictions(jnp.asarray(z), W, chunk_size=64)),
                                np.argmax(z @ W, axis=1))
  labels = np.arange(600) % 300
  train = np.random.default_rng(3).standard_normal((600, 16)).astype(np.float32)
  centroids, mean = classifiers.ncm_centroids(train, labels, 300)
  for metric in classifiers.NCM_METRICS:
    np.testing.assert_array_equal(np.asarray(classifiers.ncm_predictions(z, centroids, mean, metric, chunk_size=64)),
                                  np.argmax(np.asarray(classifiers.ncm_logits(z, centroids, mean, metric)), axis=1))
  prior = np.random.default_rng(4).dirichlet(np.ones(300)).astype(np.float32)
  taus = np.linspace(0, 2, 5)
  sweep = np.asarray(classifiers.logit_adjust_sweep_predictions(z, W, b, prior, taus, chunk_size=64))
  logits = jnp.asarray(z) @ W + b
  direct = np.stack([np.argmax(np.asarray(classifiers.logit_adjust(logits, prior, t)), axis=1) for t in taus])
  np.testing.assert_array_equal(sweep, direct)
  assert len({tuple(p) for p in sweep}) == len(taus)  # tau moves predictions towards rare classes.


def test_tau_sweep_with_a_zero_column_takes_the_exact_fallback():
  """A zero column has norm 0: its scale ||w||^-tau is inf for tau > 0 and its logits 0 * inf = NaN, so the
  sweep's finite check fails and every tau goes through top1's NaN handling: the NaN class, as argmax."""
  z, W, _ = _head(c=300)
  W[:, 5] = 0.0
  taus = np.array([0.0, 0.5, 1.0])
  sweep = np.asarray(classifiers.tau_sweep_predictions(z, W, taus, chunk_size=64))
  with np.errstate(invalid="ignore", divide="ignore"):
    direct = np.stack([np.argmax(z @ np.asarray(classifiers.tau_normalize(W, t)), axis=1) for t in taus])
  np.testing.assert_array_equal(sweep, direct)
  assert (sweep[1:] == 5).all() and (sweep[0] != 5).any()
