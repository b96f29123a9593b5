"""The model of the paper: a backbone (images -> pooled features z) and a classifier head g(z) on top.

Variables: params = {'backbone': {...}, 'head': {'kernel': [d, C], ...}}, batch_stats = {'backbone': {...}}. Stage 2
(cRT, tau-norm, LWS, NCM) replaces or rescales the head (ltr_jax.models.heads); the backbone stays.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ltr_jax import masks
from ltr_jax.models import heads, resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config key model.dtype


class LTRModel(nn.Module):
  """Backbone + ClassifierHead. `__call__` returns (float32 logits [B, C], float32 features [B, d])."""
  backbone: nn.Module
  num_classes: int
  head_spec: heads.HeadSpec = heads.HeadSpec()
  dtype: Any = jnp.float32

  def setup(self):
    self.head = heads.ClassifierHead(self.num_classes, self.head_spec, self.dtype)

  def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    z = self.features(x, train)
    return self.classify(z), z

  def features(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Pooled backbone features z (NHWC normalised images in)."""
    return self.backbone(x, train)

  def classify(self, z: jnp.ndarray) -> jnp.ndarray:
    """Head logits in float32."""
    return self.head(z).astype(jnp.float32)


def create_model(
    name: str, num_classes: int, dtype: Any = jnp.float32, frozen: Sequence[str] = (),
    head_spec: heads.HeadSpec = heads.HeadSpec()) -> LTRModel:
  """The model `name` (a key of resnet.ARCHITECTURES) with a `num_classes`-way head, computing in `dtype`.

  `frozen`: resolved patterns of ltr_jax.masks; the BatchNorm layers they freeze run in inference mode.
  """
  return LTRModel(resnet.backbone(name, dtype, frozen), num_classes, head_spec, dtype)


def from_config(model: ml_collections.ConfigDict, num_classes: int, frozen: Sequence[str] = (),
                head_spec: heads.HeadSpec | None = None) -> LTRModel:
  """The model of config key `model` with a `num_classes`-way head; `frozen`: patterns of ltr_jax.masks;
  head_spec: what the head computes (as a checkpoint records it; default: config keys model.head, head_scale)."""
  return create_model(model.name, num_classes, DTYPES[model.dtype],
                      masks.resolve(frozen, resnet.last_stage_name(model.name)), head_spec or
                      heads.HeadSpec.of_config(model))


def init_head(model: LTRModel, seed: int) -> dict[str, jax.Array]:
  """Fresh head parameters, initialised alone (no forward pass through the backbone)."""
  z = jnp.zeros((1, model.backbone.num_features), jnp.float32)
  return model.init(jax.random.key(seed), z, method=LTRModel.classify)["params"]["head"]


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float], dtype) -> jax.Array:
  """uint8 NHWC -> (x / 255 - mean) / std in the compute dtype (done on the device, inside jit)."""
  mean = jnp.asarray(mean, jnp.float32) * 255
  std = jnp.asarray(std, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)
