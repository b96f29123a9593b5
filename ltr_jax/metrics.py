"""Top-1 accuracy, per-class accuracy and the many/medium/few-shot groups of the paper (Sec. 5), in percent.

A group's accuracy is the mean per-class accuracy of its classes (SPEC "Evaluation"); 'all' is the mean over
every evaluated class. On a balanced evaluation split (the long-tailed benchmarks' test sets) the mean of
per-class accuracies equals the plain top-1 accuracy; on an imbalanced split it weighs classes, not images.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ltr_jax.errors import DataError

GROUPS = ("many", "medium", "few")


def top1_predictions(logits: jax.Array) -> jax.Array:
  """Index of the largest logit per row, int32."""
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _checked(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.shape != labels.shape:
    raise DataError(f"predictions of shape {predictions.shape} for labels of shape {labels.shape}")
  return predictions, labels


def accuracy(predictions, labels) -> float:
  """Top-1 accuracy over images, in percent."""
  predictions, labels = _checked(predictions, labels)
  return float(100.0 * np.mean(predictions == labels))


def per_class_accuracy(predictions, labels, num_classes: int) -> np.ndarray:
  """Accuracy [C] in percent of each class's images; NaN for a class absent from the evaluated split."""
  predictions, labels = _checked(predictions, labels)
  outside = labels[(labels < 0) | (labels >= num_classes)]
  if outside.size:
    raise DataError(f"evaluation label {int(outside[0])} is outside 0..{num_classes - 1}")
  totals = np.bincount(labels, minlength=num_classes)
  correct = np.bincount(labels[predictions == labels], minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(totals > 0, 100.0 * correct / totals, np.nan)


def group_accuracy(per_class_acc: np.ndarray, groups: np.ndarray) -> dict[str, float | None]:
  """{'all', 'many', 'medium', 'few'}: mean per-class accuracy of each group's evaluated classes.

  `groups` names each class's group (see `ltr_jax.data.longtail.group_of_classes`). Classes absent from the
  evaluated split (NaN) are left out; a group without any evaluated class is None.
  """
  per_class_acc, groups = np.asarray(per_class_acc, np.float64), np.asarray(groups)
  if per_class_acc.shape != groups.shape:
    raise DataError(f"{per_class_acc.size} per-class accuracies for {groups.size} class groups")

  def mean(selected: np.ndarray) -> float | None:
    values = per_class_acc[selected & ~np.isnan(per_class_acc)]
    return float(values.mean()) if values.size else None

  result = {"all": mean(np.ones(groups.shape, bool))}
  result.update({name: mean(groups == name) for name in GROUPS})
  return result
