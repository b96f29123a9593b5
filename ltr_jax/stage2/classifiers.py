"""The stage-2 classifier math over frozen features (paper Sec. 4): tau-normalisation, NCM, LWS, logit adjustment.

Pure functions of arrays: features z [N, d], a linear head W [d, C] and b [C], logits [N, C]. The functions that
stream over many rows (the tau sweeps, NCM's class means and predictions) run on ltr_jax.ops' chunked primitives,
so their memory does not grow with N; every prediction is ops.top1.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ltr_jax import ops
from ltr_jax.errors import ConfigError, DataError
from ltr_jax.models import heads
from ltr_jax.stage2.registry import NCM_METRICS

NCM_MODES = ("cl2n", "l2n")


@partial(jax.jit, static_argnums=1)
def tau_normalize(W: jax.Array, tau: float) -> jax.Array:
  """w~_j = w_j / ||w_j||^tau (Eq. 3). tau = 0 is the joint head, tau = 1 its L2-normalised columns.

  The bias is dropped by the method (logits = W~^T z), so only the kernel is returned. Jitted as one
  computation (tau static, so that tau = 1 or 2 still take jnp.power's exact integer power).
  """
  return W / jnp.linalg.norm(W, axis=0)**tau


def tau_sweep_predictions(features, W: jax.Array, taus: Sequence[float],
                          chunk_size: int = ops.PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [T, N] (int32) of the tau-normalised head for every tau in `taus`.

  Equal to argmax(features @ tau_normalize(W, tau)) per tau, at the cost of about one matmul for all T:
  argmax_j (z w_j) s_tj equals argmax_j z (w_j s_tj) with s_tj = ||w_j||^-tau.
  `features` may be a host numpy array: only `chunk_size` rows at a time are moved and computed.
  """
  scales = _tau_scales(jnp.asarray(W, jnp.float32), jnp.asarray(taus, jnp.float32))
  return ops.sweep_predictions(features, W, None, scales, jnp.multiply, chunk_size)


@jax.jit
def _tau_scales(W: jax.Array, taus: jax.Array) -> jax.Array:
  """s_tj = ||w_j||^-tau_t [T, C]."""
  return jnp.linalg.norm(W, axis=0)[None, :]**-taus[:, None]


def logit_adjust_sweep_predictions(features, W: jax.Array, b: jax.Array, class_prior: jax.Array, taus: Sequence[float],
                                   chunk_size: int = ops.PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [T, N] (int32) of logit_adjust(features @ W + b, class_prior, tau) for every tau.

  One matmul for all T, chunked over rows as tau_sweep_predictions; the same numbers as logit_adjust, since
  l - tau log p_j is l + (-(tau log p_j)) exactly.
  """
  shifts = -(jnp.asarray(taus, jnp.float32)[:, None] * jnp.log(jnp.asarray(class_prior, jnp.float32)))
  return ops.sweep_predictions(features, W, b, shifts, jnp.add, chunk_size)


@jax.jit
def _chunk_sum(total: jax.Array, z: jax.Array) -> jax.Array:
  return total + z.sum(axis=0)


@partial(jax.jit, donate_argnums=0)
def _class_sums(sums: jax.Array, z: jax.Array, labels: jax.Array, mean: jax.Array) -> jax.Array:
  """sums[labels[i]] += normalised z[i], in place. Padded rows carry label C, out of range: dropped."""
  return sums.at[labels].add(heads.transform(z, mean, normalize=True), mode="drop")


def ncm_centroids(train_features, train_labels, num_classes: int, mode: str = "cl2n",
                  chunk_size: int = 1024) -> tuple[jax.Array, jax.Array]:
  """Class means of transformed training features: (centroids [C, d], mean [d]).

  mode "cl2n" (the reference's default): subtract the mean training feature, L2-normalise each feature,
  then average per class; "l2n": the same without centring (mean = 0). Centroids are not re-normalised.
  Two streaming passes over `train_features` (numpy or jax) in chunks of rows, so memory stays at
  [C, d] plus one chunk even for iNaturalist's 437k x 2048 training features. Chunks of 1024 rows (8 MB at
  d = 2048): the normalised chunk that the scatter reads then stays in cache (at iNaturalist scale both
  passes took 1.7 s, against 5.1 s with chunks of 8192, on the 2-core machine of benchmarks/results/).
  """
  if mode not in NCM_MODES:
    raise ConfigError(f"NCM mode {mode!r} is not one of {', '.join(NCM_MODES)}")
  labels = np.asarray(train_labels, dtype=np.int64)
  if labels.shape != (train_features.shape[0],):
    raise DataError(f"NCM: {labels.shape[0]} labels for {train_features.shape[0]} training features")
  outside = labels[(labels < 0) | (labels >= num_classes)]
  if outside.size:
    raise DataError(f"NCM: training label {int(outside[0])} is outside 0..{num_classes - 1}")
  counts = np.bincount(labels, minlength=num_classes)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise DataError(f"NCM: class {int(empty[0])} has no training feature, so it has no class mean "
                    f"({empty.size} empty classes in all: {empty[:10].tolist()}{'...' if empty.size > 10 else ''})")
  d = train_features.shape[1]
  mean = jnp.zeros(d, jnp.float32)
  if mode == "cl2n":
    for chunk, _ in ops.row_chunks(train_features, chunk_size):  # Zero padding adds nothing to the sum.
      mean = _chunk_sum(mean, chunk)
    mean = mean / labels.size
  sums = jnp.zeros((num_classes, d), jnp.float32)
  chunk_size = min(chunk_size, labels.size)
  padded = np.concatenate([labels, np.full(-labels.size % chunk_size, num_classes)]).astype(np.int32)
  for i, (chunk, _) in enumerate(ops.row_chunks(train_features, chunk_size)):
    sums = _class_sums(sums, chunk, padded[i * chunk_size:(i + 1) * chunk_size], mean)
  return sums / jnp.asarray(counts, jnp.float32)[:, None], mean


def ncm_logits(features: jax.Array, centroids: jax.Array, mean: jax.Array, metric: str = "euclidean") -> jax.Array:
  """NCM logits [N, C] of features transformed as the centroids were (subtract `mean`, L2-normalise).

  euclidean: -||x_hat - c_j||^2, expanded as -(||x_hat||^2 - 2 x_hat.c_j + ||c_j||^2) so that no
  [N, C, d] tensor is formed; cosine: x_hat.c_j / ||c_j|| (the paper's cosine similarity); reference_cos:
  x_hat.c_j / d (the reference KNNClassifier's 'cos': centroids not normalised, divided by the feature
  dimension d; models/KNNClassifier.py lines 77-81 of facebookresearch/classifier-balancing at f162ade).
  """
  x = heads.transform(jnp.asarray(features), mean, normalize=True)
  kernel, bias = ncm_head(centroids, metric)
  logits = x @ kernel + bias
  return logits - jnp.sum(x * x, axis=-1, keepdims=True) if metric == "euclidean" else logits


def ncm_head(centroids: jax.Array, metric: str = "euclidean") -> tuple[jax.Array, jax.Array]:
  """NCM as a linear head over the transformed features x: (kernel [d, C], bias [C]) whose logits x @ kernel +
  bias rank the classes as ncm_logits does. euclidean: 2 c_j and -||c_j||^2 (-||x - c_j||^2 without -||x||^2,
  the same for every class); cosine: c_j / ||c_j||; reference_cos (the reference KNNClassifier's 'cos'): c_j / d."""
  centroids = jnp.asarray(centroids, jnp.float32)
  if metric == "euclidean":
    return 2.0 * centroids.T, -jnp.sum(centroids * centroids, axis=-1)
  zero = jnp.zeros(centroids.shape[0], jnp.float32)
  if metric == "cosine":
    return heads.unit_columns(centroids.T), zero
  if metric == "reference_cos":
    return centroids.T / centroids.shape[1], zero
  raise ConfigError(f"NCM metric {metric!r} is not one of {', '.join(NCM_METRICS)}")


@jax.jit
def _ncm_chunk(z: jax.Array, kernel_t: jax.Array, bias: jax.Array, mean: jax.Array) -> jax.Array:
  return ops.top1(heads.transform(z, mean, normalize=True) @ kernel_t.T + bias)


def ncm_predictions(features, centroids: jax.Array, mean: jax.Array, metric: str = "euclidean",
                    chunk_size: int = ops.PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [N] (int32) of NCM (the argmax of ncm_logits), chunk by chunk of rows: the linear head of
  `ncm_head` over the transformed features."""
  return ops.map_rows(_ncm_chunk, features, chunk_size, *ops.classes_major(*ncm_head(centroids, metric)),
                      jnp.asarray(mean))


def lws_logits(features: jax.Array, W: jax.Array, b: jax.Array, scales: jax.Array) -> jax.Array:
  """Learnable weight scaling: s_j * (z w_j + b_j); scales = 1 gives the joint logits."""
  return scales * (features @ W + b)


def logit_adjust(logits: jax.Array, class_prior: jax.Array, tau: float) -> jax.Array:
  """Post-hoc logit adjustment (Menon et al., 2021): logits - tau * log(prior_j)."""
  return logits - tau * jnp.log(class_prior)
