"""The classifier head, defined once: logits = scale * (t(z) @ kernel) + bias.

t(z) = z; with a `center`, z - center; then, with `normalize`, divided by its L2 norm. Every classifier of
ltr_jax is this map:
- the model's trainable head (`models.resnet.Head`, a Flax module): 'linear', z W + b (the paper's); 'cosine',
  s (z / ||z||) . (w_j / ||w_j||) with no bias (LDAM's normalised classifier); with learned per-class scales
  (LWS, MiSLAS) multiplying its logits;
- every stage-2 classifier on features (`Head` below): NCM's cl2n transform (centre, normalise) and its class
  means, tau-norm's rescaled columns, LWS's scales folded into the columns, ...;
- an exported stage-2 checkpoint: the backbone with a `Head`'s params (`Head.params`, `Head.spec`), which the
  Flax module reads back with the same transform.
`logits` takes numpy or jax arrays and computes in the namespace of its input (numpy for numpy), so host
results of stage 2 are the same numbers whichever caller asks.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-12  # guards the L2-normalisation of an all-zero vector (as torch's F.normalize)


def _xp(*arrays):
  """jnp if an input is a jax array (or a tracer), else numpy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def transform(z, center=None, normalize: bool = False):
  """t(z): z - center (if given), then divided by its L2 norm (if normalize)."""
  xp = _xp(z, center)
  if center is not None:
    z = z - center
  if normalize:
    z = z / xp.maximum(xp.linalg.norm(z, axis=-1, keepdims=True), EPS)
  return z


def unit_columns(kernel):
  """Each class vector w_j (a column of kernel [d, C]) divided by its L2 norm."""
  xp = _xp(kernel)
  return kernel / xp.maximum(xp.linalg.norm(kernel, axis=0, keepdims=True), EPS)


def logits(z, kernel, bias=None, *, center=None, normalize: bool = False, scale=None):
  """scale * (t(z) @ kernel) + bias [..., C]; a missing scale or bias is left out (not multiplied by 1)."""
  out = transform(z, center, normalize) @ kernel
  if scale is not None:
    out = scale * out
  return out if bias is None else out + bias


def cosine_kernel(kernel, scale: float):
  """The kernel of a cosine head as a plain linear map over normalised features: s w_j / ||w_j||."""
  xp = _xp(kernel)
  return scale * kernel / xp.maximum(xp.linalg.norm(kernel, axis=0, keepdims=True), EPS)


@dataclasses.dataclass(frozen=True)
class Head:
  """A classifier over features z as host arrays: logits(z) = t(z) @ kernel + bias (see the module doc).

  `extras` holds what a method chose (e.g. tau and its validation / test curves), reported beside its accuracy.
  """
  kernel: np.ndarray  # [d, C]
  bias: np.ndarray  # [C]
  center: np.ndarray | None = None  # [d]
  normalize: bool = False
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def of_model(cls, params: dict[str, Any], spec: dict[str, Any]) -> "Head":
    """The head of a model (its parameters and `spec`, see `model_spec`) as the linear map over t(z) it computes.

    linear: W, b, over z (or over t(z) for an exported head with a center / normalize); cosine: s w_j / ||w_j||,
    no bias, over normalised z; learned scales ('lws') multiply each class's column and bias.
    """
    kernel = np.asarray(params["kernel"], np.float32)
    scales = np.asarray(params.get("lws", np.ones(kernel.shape[1])), np.float32)
    if spec["kind"] == "cosine":
      return cls(cosine_kernel(kernel, np.float32(spec["scale"])) * scales, np.zeros(kernel.shape[1], np.float32),
                 normalize=True)
    center = params.get("center")
    return cls(kernel * scales, np.asarray(params["bias"], np.float32) * scales,
               None if center is None else np.asarray(center, np.float32), normalize=bool(spec["normalize"]))

  @property
  def linear(self) -> bool:
    """Logits linear in the raw features (what a plain linear model head holds)."""
    return self.center is None and not self.normalize

  def inputs(self, z) -> np.ndarray:
    """t(z), float32."""
    return transform(np.asarray(z, np.float32), self.center, self.normalize)

  def logits(self, z) -> np.ndarray:
    return logits(np.asarray(z, np.float32), self.kernel, self.bias, center=self.center, normalize=self.normalize)

  def predict(self, z) -> np.ndarray:
    """Top-1 predictions [N] (int32), chunk by chunk of rows (ltr_jax.classifiers, which builds on this module)."""
    from ltr_jax import classifiers
    return np.asarray(classifiers.linear_predictions(self.inputs(z), self.kernel, self.bias))

  def replace(self, **changes) -> "Head":
    return dataclasses.replace(self, **changes)

  def params(self) -> dict[str, np.ndarray]:
    """The parameters of the Flax head that computes these logits (`spec()` says which head)."""
    params = {"kernel": self.kernel.astype(np.float32), "bias": self.bias.astype(np.float32)}
    if self.center is not None:
      params["center"] = self.center.astype(np.float32)
    return params

  def spec(self) -> dict[str, Any]:
    """The `model_spec` of a model head that computes these logits from `params()`."""
    return model_spec("linear", center=self.center is not None, normalize=self.normalize)


def model_spec(kind: str, scale: float = 1.0, lws: bool = False, center: bool = False,
               normalize: bool = False) -> dict[str, Any]:
  """What a model's head computes, as checkpoints record it: kind ('linear' | 'cosine'), the cosine scale s,
  learned per-class scales (lws), and for an exported stage-2 head the transform t (center, normalize)."""
  return {"kind": kind, "scale": float(scale), "lws": bool(lws), "center": bool(center), "normalize": bool(normalize)}
