"""MiSLAS (Zhong et al., CVPR 2021): mixup for stage 1 and label-aware smoothing (LAS) for stage 2.

Mixup (Zhang et al. 2018) as MiSLAS's code runs it: one lam ~ Beta(alpha, alpha) and one permutation per
global batch, x' = lam x + (1 - lam) x[perm], and the loss lam * L(z, y) + (1 - lam) * L(z, y[perm]) for any
stage-1 loss L. LAS smooths the one-hot label of class y by epsilon_y, which falls from eps_head (the largest
class, n_1 images) to eps_tail (the smallest, n_K) along a concave, linear or convex map of the count n_y.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltr_jax import parallel
from ltr_jax.errors import ConfigError, DataError

Loss = Callable[..., jax.Array]  # (logits [B, C], labels [B], step) -> scalar, as ltr_jax.losses.Loss
SMOOTHING_MAPPINGS = ("concave", "linear", "convex")


def mixup(key: jax.Array, images: jax.Array, labels: jax.Array,
          alpha: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(lam x + (1 - lam) x[perm], y, y[perm], lam) for a batch of float images [B, ...] and labels [B].

  lam ~ Beta(alpha, alpha) and perm (a permutation of the B rows) are drawn from `key`: one of each per
  batch. alpha = 0 turns mixup off (lam = 1, as MiSLAS's mixup_data). Works under jit on a sharded batch.
  """
  if alpha < 0:
    raise ConfigError(f"config key train.mixup_alpha must be >= 0, got {alpha}")
  key_lam, key_perm = jax.random.split(key)
  lam = jax.random.beta(key_lam, alpha, alpha) if alpha > 0 else jnp.ones(())
  perm = jax.random.permutation(key_perm, images.shape[0])
  lam_x = lam.astype(images.dtype)
  return (lam_x * images + (1 - lam_x) * parallel.take(images, perm, images), labels,
          parallel.take(labels, perm, labels), lam)


def mixup_loss(loss: Loss, logits: jax.Array, labels_a: jax.Array, labels_b: jax.Array, lam: jax.Array,
               step: jax.Array | None = None) -> jax.Array:
  """lam * loss(logits, y_a, step) + (1 - lam) * loss(logits, y_b, step): the loss of a mixed batch."""
  return lam * loss(logits, labels_a, step) + (1 - lam) * loss(logits, labels_b, step)


def label_aware_epsilons(class_counts: np.ndarray, eps_head: float, eps_tail: float,
                         mapping: str = "concave") -> np.ndarray:
  """epsilon_j [C] of LAS from the training counts n_j, with x_j = (n_j - n_K) / (n_1 - n_K) in [0, 1]:

  concave eps_K + (eps_1 - eps_K) sin(pi x / 2), linear eps_K + (eps_1 - eps_K) x, convex eps_K + (eps_1 -
  eps_K) (1 - cos(pi x / 2)) (the paper's eps_1 + (eps_1 - eps_K) sin(3 pi / 2 + pi x / 2)), with eps_1 =
  eps_head and eps_K = eps_tail. MiSLAS's code uses concave. With equal counts every class gets eps_head.
  """
  if mapping not in SMOOTHING_MAPPINGS:
    raise ConfigError(f"label-aware smoothing mapping {mapping!r} is not one of {', '.join(SMOOTHING_MAPPINGS)}")
  for name, value in (("eps_head", eps_head), ("eps_tail", eps_tail)):
    if not 0.0 <= value <= 1.0:
      raise ConfigError(f"label-aware smoothing {name} must be in [0, 1], got {value}")
  counts = np.asarray(class_counts, np.float64)
  if counts.size == 0 or counts.min() <= 0:
    raise DataError("label-aware smoothing needs a training count > 0 for every class")
  spread = counts.max() - counts.min()
  x = (counts - counts.min()) / spread if spread > 0 else np.ones_like(counts)
  shape = {"concave": np.sin(np.pi / 2 * x), "linear": x, "convex": 1.0 - np.cos(np.pi / 2 * x)}[mapping]
  return eps_tail + (eps_head - eps_tail) * shape


def las_targets(labels: jax.Array, epsilons: jax.Array, num_classes: int) -> jax.Array:
  """Smoothed label distributions [B, C]: (1 - eps_y) on class y plus eps_y / C on every class."""
  eps = parallel.take(jnp.asarray(epsilons, jnp.float32), labels, labels)[:, None]
  return (1 - eps) * jax.nn.one_hot(labels, num_classes) + eps / num_classes


def las_cross_entropy(logits: jax.Array, labels: jax.Array, epsilons: jax.Array) -> jax.Array:
  """Batch mean of the cross-entropy of softmax(logits) against `las_targets`.

  Equal to the batch mean of (1 - eps_y)(-log p_y) + eps_y mean_j(-log p_j), MiSLAS's LabelAwareSmoothing.
  """
  return optax.softmax_cross_entropy(logits, las_targets(labels, epsilons, logits.shape[-1])).mean()


def las_loss(class_counts: np.ndarray, eps_head: float, eps_tail: float, mapping: str = "concave") -> Loss:
  """The LAS loss (logits, labels, step=None) -> scalar for these training counts; `step` is ignored."""
  epsilons = jnp.asarray(label_aware_epsilons(class_counts, eps_head, eps_tail, mapping), jnp.float32)
  return lambda logits, labels, step=None: las_cross_entropy(logits, labels, epsilons)
