"""Top-1, per-class and many/medium/few accuracy on hand-made predictions."""

import numpy as np
import pytest

from ltr_jax import metrics
from ltr_jax.data.longtail import group_of_classes
from ltr_jax.errors import DataError


def test_per_class_and_groups_by_hand():
  # Training counts: class 0 many (500), 1 many (101), 2 medium (100), 3 medium (20), 4 few (19), 5 few (3).
  groups = group_of_classes(np.array([500, 101, 100, 20, 19, 3]))
  assert groups.tolist() == ["many", "many", "medium", "medium", "few", "few"]
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 4, 4])  # Class 5 absent from this split.
  preds = np.array([0, 0, 0, 1, 1, 0, 2, 0, 3, 4, 0, 0])
  per_class = metrics.per_class_accuracy(preds, labels, 6)
  np.testing.assert_allclose(per_class[:5], [75.0, 50.0, 50.0, 100.0, 100.0 / 3])
  assert np.isnan(per_class[5])
  result = metrics.group_accuracy(per_class, groups)
  assert result["many"] == pytest.approx(62.5)
  assert result["medium"] == pytest.approx(75.0)
  assert result["few"] == pytest.approx(100.0 / 3)  # Class 5 is not evaluated, so it is left out.
  assert result["all"] == pytest.approx((75 + 50 + 50 + 100 + 100 / 3) / 5)
  assert metrics.accuracy(preds, labels) == pytest.approx(100.0 * 7 / 12)


def test_group_without_class_is_none_and_balanced_all_is_top1():
  labels = np.repeat(np.arange(4), 5)
  preds = labels.copy()
  preds[[0, 1, 7, 19]] = (labels[[0, 1, 7, 19]] + 1) % 4
  per_class = metrics.per_class_accuracy(preds, labels, 4)
  result = metrics.group_accuracy(per_class, np.array(["many", "many", "medium", "medium"]))
  assert result["few"] is None
  assert result["all"] == pytest.approx(metrics.accuracy(preds, labels)) == pytest.approx(80.0)


def test_label_out_of_range():
  with pytest.raises(DataError, match="evaluation label 7 is outside 0..3"):
    metrics.per_class_accuracy(np.array([0, 1]), np.array([0, 7]), 4)


def _hand_example():
  """Six softmax outputs over 3 classes (rows of probabilities) with their labels.

  confidence: .90 .85 .70 .45 .50 .65; prediction: 0 0 1 2 0 2; labels: 0 1 1 0 0 2; correct: 1 0 1 0 1 1.
  """
  probs = np.array([[0.90, 0.05, 0.05], [0.85, 0.10, 0.05], [0.10, 0.70, 0.20], [0.25, 0.30, 0.45], [0.50, 0.45, 0.05],
                    [0.20, 0.15, 0.65]])
  # Logits are log-probabilities plus a different constant per row: the softmax is unchanged.
  logits = (np.log(probs) + 3.0 * np.arange(6)[:, None]).astype(np.float32)
  return logits, np.array([0, 1, 1, 0, 0, 2])


def test_ece_by_hand():
  logits, labels = _hand_example()
  # 5 bins (.2 wide): (.8, 1] holds .90 (right) and .85 (wrong): acc .5, conf .875, gap .375;
  # (.6, .8] holds .70 and .65, both right: gap |1 - .675| = .325; (.4, .6] holds .45 (wrong) and .50
  # (right): gap |.5 - .475| = .025. ECE = (2 * .375 + 2 * .325 + 2 * .025) / 6 = 1.45 / 6.
  assert metrics.expected_calibration_error(logits, labels, num_bins=5) == pytest.approx(100 * 1.45 / 6)
  bins = metrics.reliability_bins(logits, labels, num_bins=5)
  np.testing.assert_allclose(bins["edges"], [0, .2, .4, .6, .8, 1])
  assert bins["count"].tolist() == [0, 0, 2, 2, 2]
  np.testing.assert_allclose(bins["accuracy"][2:], [50, 100, 50])
  np.testing.assert_allclose(bins["confidence"][2:], [47.5, 67.5, 87.5], rtol=1e-6)
  assert np.isnan(bins["accuracy"][:2]).all() and np.isnan(bins["confidence"][:2]).all()
  # 15 bins (1/15 wide): every image sits alone in its bin, so ECE = mean |correct - confidence|
  # = (.10 + .85 + .30 + .45 + .50 + .35) / 6 = 2.55 / 6.
  assert metrics.expected_calibration_error(logits, labels) == pytest.approx(100 * 2.55 / 6)
  assert metrics.reliability_bins(logits, labels)["count"].sum() == 6


def test_nll_equals_numpy_across_chunks_and_stays_finite():
  rng = np.random.default_rng(0)
  logits = (rng.standard_normal((700, 8142)) * 3).astype(np.float32)  # iNaturalist's C: two chunks of rows.
  labels = rng.integers(0, 8142, 700)
  z = logits.astype(np.float64)
  expected = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(700), labels])
  assert metrics.nll(logits, labels) == pytest.approx(expected, rel=1e-12)
  # Hand example: mean of -log p_y = -log(.90, .10, .70, .25, .50, .65) / 6.
  logits6, labels6 = _hand_example()
  assert metrics.nll(logits6, labels6) == pytest.approx(-np.mean(np.log([.9, .1, .7, .25, .5, .65])), rel=1e-6)
  # Logits of 1e4 would overflow a plain exp: the NLL is the margin, the ECE is 0 (confident and right).
  big = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 5e3]], np.float32)
  assert metrics.nll(big, np.array([0, 2])) == pytest.approx(0.5 * 5e3)
  assert metrics.expected_calibration_error(big, np.array([0, 1])) == pytest.approx(0.0)


def test_calibration_rejects_bad_labels():
  with pytest.raises(DataError, match="evaluation label 3 is outside 0..2"):
    metrics.nll(np.zeros((2, 3), np.float32), np.array([0, 3]))
  with pytest.raises(DataError, match="logits of shape"):
    metrics.expected_calibration_error(np.zeros((2, 3), np.float32), np.array([0, 1, 2]))


def test_temperature_scaling_minimises_the_nll_and_lowers_the_ece():
  """T from fit_temperature is the minimiser of the mean NLL of softmax(z / T) over a fine grid (numpy), and on
  over-confident logits (drawn at temperature 2, shown at 1) it finds T near 2 and lowers the ECE."""
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(4000, 10)) * 3
  p = np.exp(scores / 2) / np.exp(scores / 2).sum(1, keepdims=True)
  labels = (p.cumsum(1) > rng.random((4000, 1))).argmax(1)
  temperature = metrics.fit_temperature(scores, labels)
  grid = np.linspace(1.0, 3.0, 2001)
  nll = [np.mean(np.log(np.exp(scores / t).sum(1)) - scores[np.arange(4000), labels] / t) for t in grid]
  assert temperature == pytest.approx(grid[int(np.argmin(nll))], abs=2e-3)
  assert temperature == pytest.approx(2.0, abs=0.15)
  assert metrics.expected_calibration_error(scores / temperature, labels) < \
      0.5 * metrics.expected_calibration_error(scores, labels)
