"""Top-1, per-class and many/medium/few accuracy on hand-made predictions."""

import numpy as np
import pytest

from ltr_jax import metrics
from ltr_jax.data.longtail import group_of_classes
from ltr_jax.errors import DataError


def test_top1_predictions():
  logits = np.array([[0.1, 0.9, 0.0], [2.0, -1.0, 2.0]], np.float32)
  assert np.asarray(metrics.top1_predictions(logits)).tolist() == [1, 0]  # Ties: the first index.


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
