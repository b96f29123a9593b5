"""Backbones (ResNet, ResNeXt, CIFAR ResNet-32, a small Fashion-MNIST ResNet) + linear head."""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from ltr_jax import masks
from ltr_jax.models.resnet import ARCHITECTURES
from ltr_jax.models.resnet import HEADS
from ltr_jax.models.resnet import LTRModel
from ltr_jax.models.resnet import ResNet
from ltr_jax.models.resnet import create_model
from ltr_jax.models.resnet import feature_dim
from ltr_jax.models.resnet import last_stage_name

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config key model.dtype


def from_config(model: ml_collections.ConfigDict, num_classes: int, frozen: Sequence[str] = (),
                head_lws: bool = False) -> LTRModel:
  """The model of config key `model` with a `num_classes`-way head; `frozen`: patterns of ltr_jax.masks;
  head_lws: learned per-class logit scales on the head (MiSLAS's stage 2)."""
  return create_model(model.name, num_classes, DTYPES[model.dtype], masks.resolve(frozen, last_stage_name(model.name)),
                      model.head, model.head_scale, head_lws)


def init_head(model: LTRModel, seed: int) -> dict[str, jax.Array]:
  """Fresh head parameters, initialised alone (no forward pass through the backbone)."""
  z = jnp.zeros((1, model.backbone.num_features), jnp.float32)
  return model.init(jax.random.key(seed), z, method=LTRModel.classify)["params"]["head"]


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float], dtype) -> jax.Array:
  """uint8 NHWC -> (x / 255 - mean) / std in the compute dtype (done on the device, inside jit)."""
  mean = jnp.asarray(mean, jnp.float32) * 255
  std = jnp.asarray(std, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


__all__ = ["ARCHITECTURES", "DTYPES", "HEADS", "LTRModel", "ResNet", "create_model", "feature_dim", "from_config",
           "init_head", "last_stage_name", "normalize"]
