"""Device primitives below the models: the exact fast top-1, and linear logits and predictions over many rows.

Stage 1, inference and stage 2 all predict through `top1`. Functions that stream over many rows take numpy or jax
features and process them in fixed-size chunks of rows (`row_chunks`), so their peak memory does not grow with N
and the feature matrix is never copied as a whole.
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

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


def row_chunks(features, chunk_size: int) -> Iterator[tuple[jax.Array, int]]:
  """(chunk, valid rows) over the rows of `features`; the last chunk is zero-padded to `chunk_size`.

  Padding keeps one shape, hence one compilation, for every chunk. A numpy chunk goes through device_put,
  which on CPU aliases it when its rows are 64-byte aligned and otherwise copies it once (jnp.asarray
  always copies, at about twice the cost): so `features` must not change until the results are ready.
  Chunks are float32: 16-bit features (a 16-bit feature cache) are cast on the device, one chunk at a time.
  """
  n = features.shape[0]
  chunk_size = min(chunk_size, n)
  for start in range(0, n, chunk_size):
    chunk = jax.device_put(features[start:start + chunk_size]).astype(jnp.float32)
    valid = chunk.shape[0]
    if valid < chunk_size:
      chunk = jnp.pad(chunk, ((0, chunk_size - valid), (0, 0)))
    yield chunk, valid


def map_rows(chunk_fn, features, chunk_size: int, *args) -> jax.Array:
  """chunk_fn(chunk, *args), an array [..., B] per chunk of rows, over every chunk; joined on the last axis."""
  return jnp.concatenate([chunk_fn(chunk, *args)[..., :valid] for chunk, valid in row_chunks(features, chunk_size)],
                         axis=-1)


def top1(scores: jax.Array, block: int = TOP1_BLOCK) -> jax.Array:
  """Index (int32) of the largest score along the last axis: exactly jnp.argmax(scores, -1), for any shape.

  Ties go to the first index and a row holding NaN gives its first NaN, as in jnp.argmax. XLA:CPU vectorises
  a max reduction but not argmax's (value, index) reduction, so this takes three cheap steps instead (see
  _top1_no_nan), several times faster. Its vectorised max may drop a NaN, so scores whose sum is NaN (a NaN,
  or +inf and -inf, somewhere) take jnp.argmax itself.
  """
  scores = jnp.asarray(scores)
  return jax.lax.cond(jnp.isnan(jnp.sum(scores)), _argmax, partial(_top1_no_nan, block=block), scores)


def _top1_no_nan(scores: jax.Array, per_class: jax.Array | None = None, op=None, block: int = TOP1_BLOCK) -> jax.Array:
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
  block_max = jax.lax.reduce_window(transformed(scores), jnp.array(-jnp.inf,
                                                                   scores.dtype), jax.lax.max, lead + (block,),
                                    lead + (block,), ((0, 0),) * (scores.ndim - 1) + ((0, -c % block),))
  first = jnp.argmax(block_max, axis=-1).astype(jnp.int32) * block
  index = jnp.minimum(first[..., None] + jnp.arange(block, dtype=jnp.int32), c - 1)
  return first + _argmax(transformed(jnp.take_along_axis(scores, index, axis=-1), index))


def _argmax(scores: jax.Array) -> jax.Array:
  return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def classes_major(kernel, bias) -> tuple[jax.Array, jax.Array]:
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
  layout = classes_major(kernel, bias)
  start = 0
  for chunk, valid in row_chunks(features, chunk_size):
    out[start:start + valid] = np.asarray(_logits_chunk(chunk, *layout))[:valid]
    start += valid
  return out


def linear_predictions(features, kernel: jax.Array, bias: jax.Array | None = None,
                       chunk_size: int = PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [N] (int32) of a linear head: top1(features @ kernel + bias), chunk by chunk of rows.

  kernel [d, C] and bias [C] as the model's Dense head stores them. `features` may be a host numpy array;
  only `chunk_size` rows of features and logits exist at a time.
  """
  return map_rows(_linear_chunk, features, chunk_size, *classes_major(kernel, bias))


def sweep_predictions(features, kernel: jax.Array, bias: jax.Array | None, per_class: jax.Array, op,
                      chunk_size: int = PREDICT_CHUNK) -> jax.Array:
  """Top-1 predictions [T, N] (int32) of op(features @ kernel + bias, per_class[t]) for every row t of per_class
  [T, C], op a multiply or an add (one IEEE operation): a sweep of a per-class rescaling or shift (tau-norm, logit
  adjustment) at the cost of about one matmul for all T, chunk by chunk of rows."""
  return map_rows(_sweep_chunk, features, chunk_size, *classes_major(kernel, bias), per_class, op)


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
