"""Stage-2 classifiers over frozen features (paper Sec. 4): tau-normalisation, NCM, LWS, logit adjustment.

Pure functions of arrays: features z [N, d], a linear head W [d, C] and b [C], logits [N, C].
Functions that stream over many rows (the tau sweep, NCM class means) take numpy or jax features and
process them in fixed-size chunks of rows, so their peak memory does not grow with N and the feature
matrix is never copied as a whole.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ltr_jax.errors import ConfigError, DataError

NCM_MODES = ("cl2n", "l2n")
NCM_METRICS = ("euclidean", "cosine")
_EPS = 1e-12  # Guards the L2-normalisation of an all-zero vector (as torch's F.normalize).


def _row_chunks(features, chunk_size: int) -> Iterator[tuple[jax.Array, int]]:
  """(chunk, valid rows) over the rows of `features`; the last chunk is zero-padded to `chunk_size`.

  Padding keeps one shape, hence one compilation, for every chunk.
  """
  n = features.shape[0]
  chunk_size = min(chunk_size, n)
  for start in range(0, n, chunk_size):
    chunk = jnp.asarray(features[start:start + chunk_size])
    valid = chunk.shape[0]
    if valid < chunk_size:
      chunk = jnp.pad(chunk, ((0, chunk_size - valid), (0, 0)))
    yield chunk, valid


def tau_normalize(W: jax.Array, tau: float) -> jax.Array:
  """w~_j = w_j / ||w_j||^tau (Eq. 3). tau = 0 is the joint head, tau = 1 its L2-normalised columns.

  The bias is dropped by the method (logits = W~^T z), so only the kernel is returned.
  """
  return W / jnp.linalg.norm(W, axis=0) ** tau


@jax.jit
def _tau_sweep_chunk(z: jax.Array, W: jax.Array, scales: jax.Array) -> jax.Array:
  """Predictions [T, B] of every tau for one chunk of rows: one matmul, then T rescaled argmaxes.

  argmax_j (z w_j) s_tj equals argmax_j z (w_j s_tj), so the scores are computed once. The [T, B, C]
  product is never materialised: XLA fuses the broadcast multiply into the argmax reduction, which reads the
  [B, C] scores T times while they are still in cache.
  """
  scores = z @ W
  return jnp.argmax(scores[None] * scales[:, None, :], axis=-1).astype(jnp.int32)


def tau_sweep_predictions(features, W: jax.Array, taus: Sequence[float], chunk_size: int = 512) -> jax.Array:
  """Top-1 predictions [T, N] (int32) of the tau-normalised head for every tau in `taus`.

  Equal to argmax(features @ tau_normalize(W, tau)) per tau, at the cost of about one matmul for all T.
  `features` may be a host numpy array: only `chunk_size` rows at a time are moved and computed.
  """
  W = jnp.asarray(W, jnp.float32)
  taus = jnp.asarray(taus, jnp.float32)
  scales = jnp.linalg.norm(W, axis=0)[None, :] ** -taus[:, None]  # [T, C]
  parts = [_tau_sweep_chunk(chunk, W, scales)[:, :valid] for chunk, valid in _row_chunks(features, chunk_size)]
  return jnp.concatenate(parts, axis=1)


@jax.jit
def _chunk_sum(total: jax.Array, z: jax.Array) -> jax.Array:
  return total + z.sum(axis=0)


def _normalize_rows(z: jax.Array, mean: jax.Array) -> jax.Array:
  """The NCM feature transform: subtract `mean`, then L2-normalise every row."""
  z = z - mean
  return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), _EPS)


@partial(jax.jit, static_argnums=4, donate_argnums=0)
def _class_sums(sums: jax.Array, z: jax.Array, labels: jax.Array, mean: jax.Array, num_classes: int) -> jax.Array:
  # Padded rows carry label num_classes, which segment_sum drops (out of range).
  return sums + jax.ops.segment_sum(_normalize_rows(z, mean), labels, num_classes)


def ncm_centroids(train_features, train_labels, num_classes: int, mode: str = "cl2n",
                  chunk_size: int = 8192) -> tuple[jax.Array, jax.Array]:
  """Class means of transformed training features: (centroids [C, d], mean [d]).

  mode "cl2n" (the reference's default): subtract the mean training feature, L2-normalise each feature,
  then average per class; "l2n": the same without centring (mean = 0). Centroids are not re-normalised.
  Two streaming passes over `train_features` (numpy or jax) in chunks of rows, so memory stays at
  [C, d] plus one chunk even for iNaturalist's 437k x 2048 training features.
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
    for chunk, _ in _row_chunks(train_features, chunk_size):  # Zero padding adds nothing to the sum.
      mean = _chunk_sum(mean, chunk)
    mean = mean / labels.size
  sums = jnp.zeros((num_classes, d), jnp.float32)
  chunk_size = min(chunk_size, labels.size)
  padded = np.concatenate([labels, np.full(-labels.size % chunk_size, num_classes)]).astype(np.int32)
  for i, (chunk, _) in enumerate(_row_chunks(train_features, chunk_size)):
    sums = _class_sums(sums, chunk, padded[i * chunk_size:(i + 1) * chunk_size], mean, num_classes)
  return sums / jnp.asarray(counts, jnp.float32)[:, None], mean


def ncm_logits(features: jax.Array, centroids: jax.Array, mean: jax.Array, metric: str = "euclidean") -> jax.Array:
  """NCM logits [N, C] of features transformed as the centroids were (subtract `mean`, L2-normalise).

  euclidean: -||x_hat - c_j||^2, expanded as -(||x_hat||^2 - 2 x_hat.c_j + ||c_j||^2) so that no
  [N, C, d] tensor is formed; cosine: x_hat.c_j / ||c_j||.
  """
  if metric not in NCM_METRICS:
    raise ConfigError(f"NCM metric {metric!r} is not one of {', '.join(NCM_METRICS)}")
  x = _normalize_rows(jnp.asarray(features), mean)
  dots = x @ centroids.T
  if metric == "cosine":
    return dots / jnp.maximum(jnp.linalg.norm(centroids, axis=-1), _EPS)
  return 2.0 * dots - jnp.sum(x * x, axis=-1, keepdims=True) - jnp.sum(centroids * centroids, axis=-1)


def lws_logits(features: jax.Array, W: jax.Array, b: jax.Array, scales: jax.Array) -> jax.Array:
  """Learnable weight scaling: s_j * (z w_j + b_j); scales = 1 gives the joint logits."""
  return scales * (features @ W + b)


def logit_adjust(logits: jax.Array, class_prior: jax.Array, tau: float) -> jax.Array:
  """Post-hoc logit adjustment (Menon et al., 2021): logits - tau * log(prior_j)."""
  return logits - tau * jnp.log(class_prior)
