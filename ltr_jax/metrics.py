"""Top-1 accuracy, per-class accuracy and the many/medium/few-shot groups of the paper (Sec. 5), in percent.

A group's accuracy is the mean per-class accuracy of its classes (SPEC "Evaluation"); 'all' is the mean over
every evaluated class. On a balanced evaluation split (the long-tailed benchmarks' test sets) the mean of
per-class accuracies equals the plain top-1 accuracy; on an imbalanced split it weighs classes, not images.

Calibration of the softmax over logits [N, C]: expected calibration error (Guo et al. 2017, 15 equal-width
confidence bins as in MiSLAS), the per-bin data of a reliability diagram, and the mean negative log-likelihood.
They run on host logits in float64 chunks of rows, so no float64 copy of a large [N, C] matrix is made.
"""
from __future__ import annotations

import numpy as np

from ltr_jax.errors import DataError

GROUPS = ("many", "medium", "few")


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


def confusion_matrix(predictions, labels, num_classes: int) -> np.ndarray:
  """Counts [C, C]: row = true class, column = predicted class."""
  predictions, labels = _checked(predictions, labels)
  return np.bincount(labels * num_classes + predictions,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


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


def groups_of(predictions, labels, splits) -> dict[str, float | None]:
  """Top-1 All / Many / Medium / Few (percent) of `predictions` over the classes of `splits` (its num_classes and
  groups: a datasets.Splits)."""
  return group_accuracy(per_class_accuracy(predictions, labels, splits.num_classes), splits.groups)


def _softmax_rows(logits, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(confidence max_j p_j, prediction argmax_j p_j, -log p_y) per row, in float64, chunks of ~4M entries."""
  labels = np.asarray(labels)
  if logits.ndim != 2 or labels.shape != (logits.shape[0],):
    raise DataError(f"logits of shape {logits.shape} for labels of shape {labels.shape}")
  outside = labels[(labels < 0) | (labels >= logits.shape[1])]
  if outside.size:
    raise DataError(f"evaluation label {int(outside[0])} is outside 0..{logits.shape[1] - 1}")
  n, chunk_rows = logits.shape[0], max(1, (1 << 22) // max(1, logits.shape[1]))
  confidence, prediction, nll_rows = np.empty(n), np.empty(n, np.int64), np.empty(n)
  for start in range(0, n, chunk_rows):
    z = np.asarray(logits[start:start + chunk_rows], np.float64)
    rows, part = np.arange(len(z)), slice(start, start + len(z))
    top = z.argmax(axis=1)
    # log sum_j exp(z_j) - z_max, summed after the shift: the largest term is exp(0) = 1.
    log_normaliser = np.log(np.exp(z - z[rows, top][:, None]).sum(axis=1))
    prediction[part] = top
    confidence[part] = np.exp(-log_normaliser)
    nll_rows[part] = z[rows, top] + log_normaliser - z[rows, labels[part]]
  return confidence, prediction, nll_rows


def reliability_bins(logits, labels, num_bins: int = 15) -> dict[str, np.ndarray]:
  """Per-bin data of a reliability diagram of the softmax of `logits` [N, C] (numpy or jax).

  Bin b holds the images whose confidence max_j p_j lies in (b / B, (b + 1) / B] (right-closed, as Guo et al.
  and MiSLAS's np.digitize(right=True)). Returns 'edges' [B + 1], 'count' [B], and 'accuracy' and
  'confidence' [B] in percent: the top-1 accuracy and the mean confidence of each bin, NaN for an empty bin.
  """
  if num_bins < 1:
    raise DataError(f"{num_bins} calibration bins; need at least 1")
  confidence, prediction, _ = _softmax_rows(logits, labels)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  bins = np.digitize(confidence, edges[1:-1], right=True)
  count = np.bincount(bins, minlength=num_bins)
  correct = np.bincount(bins, weights=prediction == np.asarray(labels), minlength=num_bins)
  total_confidence = np.bincount(bins, weights=confidence, minlength=num_bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
        "edges": edges, "count": count, "accuracy": 100.0 * correct / count,
        "confidence": 100.0 * total_confidence / count
    }


def expected_calibration_error(logits, labels, num_bins: int = 15) -> float:
  """ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)| over the bins of `reliability_bins`, in percent."""
  bins = reliability_bins(logits, labels, num_bins)
  filled = bins["count"] > 0
  gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
  return float(np.sum(bins["count"][filled] * gaps) / np.sum(bins["count"]))


def nll(logits, labels) -> float:
  """Mean negative log-likelihood -log softmax(z)_y over the images, in nats."""
  return float(np.mean(_softmax_rows(logits, labels)[2]))


def _temperature_moments(logits, labels, beta: float) -> tuple[float, float, float]:
  """Mean NLL of softmax(beta z) and its first two derivatives in beta, in float64 chunks of ~4M entries.

  d/dbeta = E_p[z] - z_y and d2/dbeta2 = Var_p[z] >= 0 per row: the NLL is convex in beta = 1 / T.
  """
  labels = np.asarray(labels)
  n, chunk_rows = logits.shape[0], max(1, (1 << 22) // max(1, logits.shape[1]))
  total = np.zeros(3)
  for start in range(0, n, chunk_rows):
    z = np.asarray(logits[start:start + chunk_rows], np.float64)
    rows = np.arange(len(z))
    s = beta * z
    s -= s.max(axis=1, keepdims=True)
    p = np.exp(s)
    normaliser = p.sum(axis=1)
    p /= normaliser[:, None]
    expected = (p * z).sum(axis=1)
    total += [
        np.sum(np.log(normaliser) - s[rows, labels[start:start + len(z)]]),
        np.sum(expected - z[rows, labels[start:start + len(z)]]),
        np.sum((p * z * z).sum(axis=1) - expected**2)
    ]
  return tuple(total / n)


def fit_temperature(logits, labels, iterations: int = 50) -> float:
  """The temperature T > 0 minimising the mean NLL of softmax(z / T) (Guo et al. 2017's temperature scaling),
  by Newton's method on the convex NLL in 1 / T. Fit it on validation logits, never on test."""
  if logits.ndim != 2 or np.asarray(labels).shape != (logits.shape[0],):
    raise DataError(f"logits of shape {logits.shape} for labels of shape {np.shape(labels)}")
  beta = 1.0
  for _ in range(iterations):
    _, gradient, curvature = _temperature_moments(logits, labels, beta)
    if curvature <= 0:  # every row's logits equal: any temperature gives the same softmax
      break
    step = gradient / curvature
    beta = beta - step if beta - step > 0 else beta / 2
    if abs(step) <= 1e-10 * beta:
      break
  return float(1.0 / beta)
