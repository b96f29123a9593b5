"""Backbones (ResNet, ResNeXt, CIFAR ResNet-32, a small Fashion-MNIST ResNet) + linear head."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
from ltr_jax.models.head import Head, model_spec

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config key model.dtype


def from_config(model: ml_collections.ConfigDict, num_classes: int, frozen: Sequence[str] = (),
                head: dict[str, Any] | None = None) -> LTRModel:
  """The model of config key `model` with a `num_classes`-way head; `frozen`: patterns of ltr_jax.masks;
  head: what the head computes (`head_spec`, as a checkpoint records it; default: config key model.head)."""
  head = head or head_spec(model)
  return create_model(model.name, num_classes, DTYPES[model.dtype], masks.resolve(frozen, last_stage_name(model.name)),
                      head["kind"], head["scale"], head["lws"], head["center"], head["normalize"])


def head_spec(model: ml_collections.ConfigDict, lws: bool = False) -> dict[str, Any]:
  """The head of config key `model` (model.head, model.head_scale), with learned per-class scales if `lws`."""
  return model_spec(model.head, model.head_scale, lws)


def init_head(model: LTRModel, seed: int) -> dict[str, jax.Array]:
  """Fresh head parameters, initialised alone (no forward pass through the backbone)."""
  z = jnp.zeros((1, model.backbone.num_features), jnp.float32)
  return model.init(jax.random.key(seed), z, method=LTRModel.classify)["params"]["head"]


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float], dtype) -> jax.Array:
  """uint8 NHWC -> (x / 255 - mean) / std in the compute dtype (done on the device, inside jit)."""
  mean = jnp.asarray(mean, jnp.float32) * 255
  std = jnp.asarray(std, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


__all__ = ["ARCHITECTURES", "DTYPES", "HEADS", "Head", "LTRModel", "ResNet", "create_model", "feature_dim", "from_config",
           "head_spec", "model_spec",
           "init_head", "last_stage_name", "normalize"]
