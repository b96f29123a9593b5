"""The classifier head, defined once: logits = scale * (t(z) @ kernel) + bias, t(z) a transform of the features.

t(z) = z; with a `projection` P, z P (CLIP's image embedding, for its zero-shot head); with a `center`, minus it;
then, with `normalize`, divided by its L2 norm. Three things use this module,
each under its own name:
- `HeadSpec`: the typed description of what a head computes (kind, cosine scale, bias, learned per-class scales,
  the transform). Checkpoints record it in their meta, models are built from it, exports write it.
- `ClassifierHead`: the head as a Flax module, the trainable classifier g(z) of every model (its params are the
  model's params['head']): 'linear', t(z) W + b (the paper's); 'cosine', s (z / ||z||) . (w_j / ||w_j||) (LDAM's
  normalised classifier); with learned per-class scales (LWS, MiSLAS) multiplying its logits.
- `Classifier`: a head as host arrays over cached features, the form every stage-2 method returns: a linear map over
  t(z) (NCM's cl2n transform and class means, tau-norm's rescaled columns, LWS's scales folded into the columns,
  ...). `Classifier.of_model` reads a model's head, and `Classifier.spec` / `params` write one back, so an exported
  stage-2 classifier is a ClassifierHead again.
The formulas (`transform`, `logits`, `unit_columns`, `cosine_kernel`) take numpy or jax arrays and compute in the
namespace of their input (numpy for numpy), so host results are the same numbers whichever caller asks.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ltr_jax import ops

EPS = 1e-12  # guards the L2-normalisation of an all-zero vector (as torch's F.normalize)
KINDS = ("linear", "cosine")  # config key model.head
# torch.nn.Linear's default kernel init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _xp(*arrays):
  """jnp if an input is a jax array (or a tracer), else numpy."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def transform(z, center=None, normalize: bool = False, projection=None):
  """t(z): z @ projection (if given), minus center (if given), then divided by its L2 norm (if normalize)."""
  xp = _xp(z, center, projection)
  if projection is not None:
    z = z @ projection
  if center is not None:
    z = z - center
  if normalize:
    z = z / xp.maximum(xp.linalg.norm(z, axis=-1, keepdims=True), EPS)
  return z


def unit_columns(kernel):
  """Each class vector w_j (a column of kernel [d, C]) divided by its L2 norm."""
  xp = _xp(kernel)
  return kernel / xp.maximum(xp.linalg.norm(kernel, axis=0, keepdims=True), EPS)


def logits(z, kernel, bias=None, *, scale=None):
  """scale * (z @ kernel) + bias [..., C] over transformed features z = t(.); a missing scale or bias is left out
  (not multiplied by 1)."""
  out = z @ kernel
  if scale is not None:
    out = scale * out
  return out if bias is None else out + bias


def cosine_kernel(kernel, scale: float):
  """The kernel of a cosine head as a plain linear map over normalised features: s w_j / ||w_j||."""
  return scale * unit_columns(kernel)


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """What a classifier head computes. kind: 'linear' (t(z) W + b) or 'cosine' (s cos(t(z), w_j)); scale: s of a
  cosine head; bias: whether the head has one; lws: learned per-class scales (init 1) multiply the logits; project,
  center, normalize: the transform t (CLIP's zero-shot head: projected and normalised features; an exported NCM
  head: centred and normalised ones)."""
  kind: str = "linear"
  scale: float = 1.0
  bias: bool = True
  lws: bool = False
  center: bool = False
  normalize: bool = False
  project: int = 0  # the width E of a projection [d, E] before the transform; 0: none

  @classmethod
  def of_config(cls, model: Any, lws: bool = False) -> HeadSpec:
    """The head of config key `model` (model.head, model.head_scale), with learned per-class scales if `lws`."""
    cosine = model.head == "cosine"
    return cls(model.head, float(model.head_scale) if cosine else 1.0, bias=not cosine, lws=lws)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> HeadSpec:
    """The spec as a checkpoint's meta records it (checkpoints of earlier versions lack 'bias': a linear head has
    one, a cosine head none)."""
    values = dict(values)
    values.setdefault("bias", values.get("kind", "linear") == "linear")
    return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls) if field.name in values})

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def replace(self, **changes) -> HeadSpec:
    return dataclasses.replace(self, **changes)


class ClassifierHead(nn.Module):
  """The classifier g(z) as a Flax module, computing `logits` (the one definition). Params: kernel [d or E, C], bias
  [C] (spec.bias), projection [d, E] (spec.project), center (spec.center), lws [C] (spec.lws). dtype: the compute
  dtype (params stay float32)."""
  num_classes: int
  spec: HeadSpec = HeadSpec()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
    spec = self.spec
    if spec.project:  # a projection only arrives in a checkpoint (CLIP's zero-shot head): its init does not matter
      z = z @ self.param("projection", nn.initializers.zeros, (z.shape[-1], spec.project), jnp.float32)
    kernel = self.param("kernel", KERNEL_INIT, (z.shape[-1], self.num_classes), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,), jnp.float32) if spec.bias else None
    center = self.param("center", nn.initializers.zeros, (z.shape[-1],), jnp.float32) if spec.center else None
    if spec.kind == "linear":
      z = transform(z, center, spec.normalize)
      scale = None
    elif spec.kind == "cosine":
      z, kernel, scale = transform(z, center, normalize=True), unit_columns(kernel), spec.scale
    else:
      raise ValueError(f"unknown head kind {spec.kind!r}")
    out = logits(z.astype(self.dtype), kernel.astype(self.dtype), None if bias is None else bias.astype(self.dtype),
                 scale=scale)
    if spec.lws:
      out = out * self.param("lws", nn.initializers.ones, (self.num_classes,), jnp.float32)
    return out


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A classifier over features z as host arrays: logits(z) = t(z) @ kernel + bias (see the module doc).

  `extras` holds what a method chose (e.g. tau and its validation / test curves), reported beside its accuracy.
  """
  kernel: np.ndarray  # [d (E with a projection), C]
  bias: np.ndarray  # [C]
  center: np.ndarray | None = None  # [d]
  normalize: bool = False
  extras: dict[str, Any] = dataclasses.field(default_factory=dict)
  projection: np.ndarray | None = None  # [d, E]

  @classmethod
  def of_model(cls, params: dict[str, Any], spec: HeadSpec) -> Classifier:
    """The ClassifierHead with these `params` and `spec` as the linear map over t(z) it computes: linear, W and b;
    cosine, s w_j / ||w_j|| over normalised features; learned scales ('lws') multiply each class's column and
    bias."""
    kernel = np.asarray(params["kernel"], np.float32)
    num_classes = kernel.shape[1]
    scales = np.asarray(params.get("lws", np.ones(num_classes)), np.float32)
    bias = np.asarray(params["bias"], np.float32) if spec.bias else np.zeros(num_classes, np.float32)
    center, projection = (
        None if params.get(k) is None else np.asarray(params[k], np.float32) for k in ("center", "projection"))
    if spec.kind == "cosine":
      return cls(
          cosine_kernel(kernel, np.float32(spec.scale)) * scales, bias * scales, center, normalize=True,
          projection=projection)
    return cls(kernel * scales, bias * scales, center, normalize=spec.normalize, projection=projection)

  @property
  def linear(self) -> bool:
    """Logits linear in the raw features (what a plain linear model head holds)."""
    return self.center is None and not self.normalize and self.projection is None

  def inputs(self, z) -> np.ndarray:
    """t(z), float32; z itself where t is the identity (a linear head), so that 16-bit cached features stay 16-bit
    and each consumer casts a chunk or batch of rows at a time (exactly)."""
    if self.linear:
      return z
    return transform(np.asarray(z, np.float32), self.center, self.normalize, self.projection)

  def logits(self, z) -> np.ndarray:
    return logits(np.asarray(self.inputs(z)), self.kernel, self.bias)  # on the host, float32

  def predict(self, z) -> np.ndarray:
    """Top-1 predictions [N] (int32), chunk by chunk of rows."""
    return np.asarray(ops.linear_predictions(self.inputs(z), self.kernel, self.bias))

  def replace(self, **changes) -> Classifier:
    return dataclasses.replace(self, **changes)

  def params(self) -> dict[str, np.ndarray]:
    """The params of the ClassifierHead of `spec()`, which computes these logits."""
    params = {"kernel": self.kernel.astype(np.float32), "bias": self.bias.astype(np.float32)}
    for name, value in (("center", self.center), ("projection", self.projection)):
      if value is not None:
        params[name] = value.astype(np.float32)
    return params

  def spec(self) -> HeadSpec:
    """The HeadSpec of a ClassifierHead that computes these logits from `params()`."""
    return HeadSpec("linear", center=self.center is not None, normalize=self.normalize,
                    project=0 if self.projection is None else self.projection.shape[1])
