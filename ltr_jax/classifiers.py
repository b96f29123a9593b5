"""Stage-2 classifiers over frozen features (paper Sec. 4): tau-normalisation, NCM, LWS, logit adjustment.

Pure functions of arrays: features z [N, d], a linear head W [d, C] and b [C], logits [N, C].
Functions that stream over many rows (predictions, the tau sweeps, NCM class means) take numpy or jax
features and process them in fixed-size chunks of rows, so their peak memory does not grow with N and the
feature matrix is never copied as a whole. Every prediction is `top1`, an exact and faster jnp.argmax.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ltr_jax.errors import ConfigError, DataError
from ltr_jax.models import head

NCM_MODES = ("cl2n", "l2n")
NCM_METRICS = ("euclidean", "cosine", "reference_cos")  # config key stage2.ncm.metric
# Classes per block of `top1`, measured on XLA:CPU (CPU seconds, 6000 x 8142 float32 scores; a 21-tau
# sweep of 512 x 8142 logits): block 32 0.048 s / 37 ms, 64 0.045 / 32, 128 0.045 / 31, 256 0.047 / 35,
# 512 0.050 / 43; jnp.argmax 0.18 s, torch.argmax 0.13 s on the scores.
TOP1_BLOCK = 128
PREDICT_CHUNK = 512  # Rows per chunk of the prediction functions below.


def host_array(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
  """Zeros in host memory starting on a 64-byte boundary: the chunk functions here then read it without a copy
  (on CPU, device_put aliases aligned numpy memory; a large malloc'd array starts 16 bytes past a page, and the
  copy of every chunk made NCM's class means 1.4x slower at iNaturalist scale)."""
  size = int(np.prod(shape)) * np.dtype(dtype).itemsize
  buffer = np.zeros(size + 64, np.uint8)
  start = -buffer.ctypes.data % 64
  return buffer[start:start + size].view(dtype).reshape(shape)


def _row_chunks(features, chunk_size: int) -> Iterator[tuple[jax.Array, int]]:
  """(chunk, valid rows) over the rows of `features`; the last chunk is zero-padded to `chunk_size`.

  Padding keeps one shape, hence one compilation, for every chunk. A numpy chunk goes through device_put,
  which on CPU aliases it when its rows are 64-byte aligned and otherwise copies it once (jnp.asarray
  always copies, at about twice the cost): so `features` must not change until the results are ready.
  """
  n = features.shape[0]
  chunk_size = min(chunk_size, n)
  for start in range(0, n, chunk_size):
    chunk = jax.device_put(features[start:start + chunk_size])
    valid = chunk.shape[0]
    if valid < chunk_size:
      chunk = jnp.pad(chunk, ((0, chunk_size - valid), (0, 0)))
    yield chunk, valid


def _map_rows(chunk_fn, features, chunk_size: int, *args) -> jax.Array:
  """chunk_fn(chunk, *args), an array [..., B] per chunk of rows, over every chunk; joined on the last axis."""
  return jnp.concatenate([chunk_fn(chunk, *args)[..., :valid] for chunk, valid in _row_chunks(features, chunk_size)],
                         axis=-1)


@partial(jax.jit, static_argnums=1)
def tau_normalize(W: jax.Array, tau: float) -> jax.Array:
  """w~_j = w_j / ||w_j||^tau (Eq. 3). tau = 0 is the joint head, tau = 1 its L2-normalised columns.

  The bias is dropped by the method (logits = W~^T z), so only the kernel is returned. Jitted as one
  computation (tau static, so that tau = 1 or 2 still take jnp.power's exact integer power).
  """
  return W / jnp.linalg.norm(W, axis=0) ** tau


def top1(scores: jax.Array, block: int = TOP1_BLOCK) -> jax.Array:
  """Index (int32) of the largest score along the last axis: exactly jnp.argmax(scores, -1), for any shape.

  Ties go to the first index and a row holding NaN gives its first NaN, as in jnp.argmax. XLA:CPU vectorises
  a max reduction but not argmax's (value, index) reduction, so this takes three cheap steps instead (see
  _top1_no_nan), several times faster. Its vectorised max may drop a NaN, so scores whose sum is NaN (a NaN,
  or +inf and -inf, somewhere) take jnp.argmax itself.
  """
  scores = jnp.asarray(scores)
  return jax.lax.cond(jnp.isnan(jnp.sum(scores)), _argmax, partial(_top1_no_nan, block=block), scores)


def _top1_no_nan(scores: jax.Array, per_class: jax.Array | None = None, op=None,
                 block: int = TOP1_BLOCK) -> jax.Array:
  """top1 of op(scores, per_class) (of `scores` if op is None) [..., C], where that holds no NaN.

  The maximum of every block of `block` classes, the first block whose maximum is the row's (an argmax over
  C / block values), then the first maximum inside that block, recomputed from a gather of `block` classes.
  The first block holding the row's maximum holds its first occurrence, so ties resolve as in jnp.argmax.
  op(scores, per_class) (a multiply or an add by [C] values, one IEEE operation, so both passes compute the
  same numbers) feeds the block reduction without being written out, so a tau sweep never materialises
  its rescaled logits. A class count that is not a multiple of `block` pads the reduction's window with
  -inf, which XLA folds into the reduction: the scores are never copied or padded, and the padding follows
  every real class, so it wins no tie (a gather past the last class repeats that class, after it).
  Non-float scores and class counts up to one block take jnp.argmax.
  """
  def transformed(values, index=None):
    if op is None:
      return values
    return op(values, per_class if index is None else jnp.take(per_class, index))

  c = scores.shape[-1]
  if c <= block or not jnp.issubdtype(scores.dtype, jnp.floating):
    return _argmax(transformed(scores))
  lead = (1,) * (scores.ndim - 1)
  block_max = jax.lax.reduce_window(transformed(scores), jnp.array(-jnp.inf, scores.dtype),
                                    jax.lax.max, lead + (block,), lead + (block,),
                                    ((0, 0),) * (scores.ndim - 1) + ((0, -c % block),))
  first = jnp.argmax(block_max, axis=-1).astype(jnp.int32) * block
  index = jnp.minimum(first[..., None] + jnp.arange(block, dtype=jnp.int32), c - 1)
  return first + _argmax(transformed(jnp.take_along_axis(scores, index, axis=-1), index))


def _argmax(scores: jax.Array) -> jax.Array:
  return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def _classes_major(kernel, bias) -> tuple[jax.Array, jax.Array]:
  """(kernel^T [C, d], bias [C]) in float32, a missing bias as zeros: the head laid out once per call.

  XLA:CPU multiplies z [B, d] by a [C, d] kernel read transposed about 20% faster than by the [d, C] kernel
  itself (torch.nn.Linear keeps its weight as [C, d] for the same reason), so the chunk functions take it so.
  """
  kernel = jnp.asarray(kernel, jnp.float32)
  bias = jnp.zeros(kernel.shape[1], jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32)
  return kernel.T, bias


@jax.jit
def _logits_chunk(z: jax.Array, kernel_t: jax.Array, bias: jax.Array) -> jax.Array:
  return z @ kernel_t.T + bias


@jax.jit
def _linear_chunk(z: jax.Array, kernel_t: jax.Array, bias: jax.Array) -> jax.Array:
  return top1(_logits_chunk(z, kernel_t, bias))


def linear_logits(features, kernel: jax.Array, bias: jax.Array | None = None,
                  chunk_size: int = PREDICT_CHUNK) -> np.ndarray:
  """features @ kernel + bias [N, C] as a host array, computed chunk by chunk of rows (as linear_predictions)."""
  out = host_array((features.shape[0], kernel.shape[1]))
  layout = _classes_major(kernel, bias)
  start = 0
  for chunk, valid in _row_chunks(features, chunk_size):
    out[start:start + valid] = np.asarray(_logits_chunk(chunk, *layout))[:valid]
    start += valid
  return out


def linear_predictions(features, kernel: jax.Array, bias: jax.Array | None = None,
                       chunk_size: int = PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [N] (int32) of a linear head: top1(features @ kernel + bias), chunk by chunk of rows.

  kernel [d, C] and bias [C] as the model's Dense head stores them. `features` may be a host numpy array;
  only `chunk_size` rows of features and logits exist at a time.
  """
  return _map_rows(_linear_chunk, features, chunk_size, *_classes_major(kernel, bias))


@partial(jax.jit, static_argnums=4)
def _sweep_chunk(z: jax.Array, kernel_t: jax.Array, bias: jax.Array, per_tau: jax.Array, op) -> jax.Array:
  """Predictions [T, B] of top1(op(z W + b, per_tau[t])) for every t, for one chunk of rows.

  The logits are computed once; one tau at a time (lax.map) transforms them inside top1's block reduction
  and gather, so neither the [T, B, C] nor a [B, C] transformed copy is written out.
  """
  logits = z @ kernel_t.T + bias
  # A multiply or add of finite numbers gives no NaN, so one check for the chunk replaces top1's per tau.
  finite = jnp.isfinite(jnp.sum(logits)) & jnp.all(jnp.isfinite(per_tau))
  return jax.lax.cond(finite, lambda: jax.lax.map(partial(_top1_no_nan, logits, op=op), per_tau),
                      lambda: jax.lax.map(lambda v: top1(op(logits, v)), per_tau))


def tau_sweep_predictions(features, W: jax.Array, taus: Sequence[float],
                          chunk_size: int = PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [T, N] (int32) of the tau-normalised head for every tau in `taus`.

  Equal to argmax(features @ tau_normalize(W, tau)) per tau, at the cost of about one matmul for all T:
  argmax_j (z w_j) s_tj equals argmax_j z (w_j s_tj) with s_tj = ||w_j||^-tau.
  `features` may be a host numpy array: only `chunk_size` rows at a time are moved and computed.
  """
  scales = _tau_scales(jnp.asarray(W, jnp.float32), jnp.asarray(taus, jnp.float32))
  return _map_rows(_sweep_chunk, features, chunk_size, *_classes_major(W, None), scales, jnp.multiply)


@jax.jit
def _tau_scales(W: jax.Array, taus: jax.Array) -> jax.Array:
  """s_tj = ||w_j||^-tau_t [T, C]."""
  return jnp.linalg.norm(W, axis=0)[None, :] ** -taus[:, None]


def logit_adjust_sweep_predictions(features, W: jax.Array, b: jax.Array, class_prior: jax.Array,
                                   taus: Sequence[float], chunk_size: int = PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [T, N] (int32) of logit_adjust(features @ W + b, class_prior, tau) for every tau.

  One matmul for all T, chunked over rows as tau_sweep_predictions; the same numbers as logit_adjust, since
  l - tau log p_j is l + (-(tau log p_j)) exactly.
  """
  shifts = -(jnp.asarray(taus, jnp.float32)[:, None] * jnp.log(jnp.asarray(class_prior, jnp.float32)))
  return _map_rows(_sweep_chunk, features, chunk_size, *_classes_major(W, b), shifts, jnp.add)


@jax.jit
def _chunk_sum(total: jax.Array, z: jax.Array) -> jax.Array:
  return total + z.sum(axis=0)


@partial(jax.jit, donate_argnums=0)
def _class_sums(sums: jax.Array, z: jax.Array, labels: jax.Array, mean: jax.Array) -> jax.Array:
  """sums[labels[i]] += normalised z[i], in place. Padded rows carry label C, out of range: dropped."""
  return sums.at[labels].add(head.transform(z, mean, normalize=True), mode="drop")


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
    for chunk, _ in _row_chunks(train_features, chunk_size):  # Zero padding adds nothing to the sum.
      mean = _chunk_sum(mean, chunk)
    mean = mean / labels.size
  sums = jnp.zeros((num_classes, d), jnp.float32)
  chunk_size = min(chunk_size, labels.size)
  padded = np.concatenate([labels, np.full(-labels.size % chunk_size, num_classes)]).astype(np.int32)
  for i, (chunk, _) in enumerate(_row_chunks(train_features, chunk_size)):
    sums = _class_sums(sums, chunk, padded[i * chunk_size:(i + 1) * chunk_size], mean)
  return sums / jnp.asarray(counts, jnp.float32)[:, None], mean


def ncm_logits(features: jax.Array, centroids: jax.Array, mean: jax.Array, metric: str = "euclidean") -> jax.Array:
  """NCM logits [N, C] of features transformed as the centroids were (subtract `mean`, L2-normalise).

  euclidean: -||x_hat - c_j||^2, expanded as -(||x_hat||^2 - 2 x_hat.c_j + ||c_j||^2) so that no
  [N, C, d] tensor is formed; cosine: x_hat.c_j / ||c_j|| (the paper's cosine similarity); reference_cos:
  x_hat.c_j / d (the reference KNNClassifier's 'cos': centroids not normalised, divided by the feature
  dimension d; models/KNNClassifier.py lines 77-81 of facebookresearch/classifier-balancing at f162ade).
  """
  x = head.transform(jnp.asarray(features), mean, normalize=True)
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
    return head.unit_columns(centroids.T), zero
  if metric == "reference_cos":
    return centroids.T / centroids.shape[1], zero
  raise ConfigError(f"NCM metric {metric!r} is not one of {', '.join(NCM_METRICS)}")


@jax.jit
def _ncm_chunk(z: jax.Array, kernel_t: jax.Array, bias: jax.Array, mean: jax.Array) -> jax.Array:
  return top1(head.transform(z, mean, normalize=True) @ kernel_t.T + bias)


def ncm_predictions(features, centroids: jax.Array, mean: jax.Array, metric: str = "euclidean",
                    chunk_size: int = PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [N] (int32) of NCM (the argmax of ncm_logits), chunk by chunk of rows: the linear head of
  `ncm_head` over the transformed features."""
  return _map_rows(_ncm_chunk, features, chunk_size, *_classes_major(*ncm_head(centroids, metric)),
                   jnp.asarray(mean))


def lws_logits(features: jax.Array, W: jax.Array, b: jax.Array, scales: jax.Array) -> jax.Array:
  """Learnable weight scaling: s_j * (z w_j + b_j); scales = 1 gives the joint logits."""
  return scales * (features @ W + b)


def logit_adjust(logits: jax.Array, class_prior: jax.Array, tau: float) -> jax.Array:
  """Post-hoc logit adjustment (Menon et al., 2021): logits - tau * log(prior_j)."""
  return logits - tau * jnp.log(class_prior)
