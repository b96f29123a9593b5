"""The model of the paper: a backbone (images -> pooled features z) and a classifier head g(z) on top.

Variables: params = {'backbone': {...}, 'head': {'kernel': [d, C], ...}}, batch_stats = {'backbone': {...}} (none
for a ViT). Stage 2 (cRT, tau-norm, LWS, NCM) replaces or rescales the head (ltr_jax.models.heads); the backbone
stays. Backbones: the ResNets of ltr_jax.models.resnet and the ViTs of ltr_jax.models.vit (CLIP's and timm's
layouts), a ViT optionally with parameter-efficient modules (`Peft`: LIFT's AdaptFormer, LoRA).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ltr_jax import masks
from ltr_jax.errors import ConfigError
from ltr_jax.models import heads, resnet, vit

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config key model.dtype
ARCHITECTURES = (*resnet.ARCHITECTURES, *vit.ARCHITECTURES)  # config key model.name


@dataclasses.dataclass(frozen=True)
class Peft:
  """Parameter-efficient modules added to every block of a ViT backbone (LIFT, Shi et al. 2024): an AdaptFormer of
  bottleneck `adaptformer_dim` beside each MLP, LoRA of rank `lora_rank` on the queries and values; 0: none.
  Checkpoints record it (meta 'peft'), so that the model they hold is rebuilt with it."""
  adaptformer_dim: int = 0
  lora_rank: int = 0

  def to_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, int] | None) -> Peft:
    return cls(**(values or {}))


def backbone(name: str, dtype: Any = jnp.float32, frozen: Sequence[str] = (), peft: Peft = Peft(),
             remat: bool = False) -> nn.Module:
  """The backbone `name` (of ARCHITECTURES) computing in `dtype`. A ResNet: `frozen` (resolved patterns of
  ltr_jax.masks) sets which BatchNorm layers run in inference mode. A ViT (no BatchNorm): `peft` adds its modules,
  `remat` recomputes each block's activations in the backward pass (less memory, more compute); its position
  embedding takes the grid of the images the model is initialised on."""
  if name in resnet.ARCHITECTURES:
    if peft != Peft():
      raise ConfigError(f"config key model.name = {name!r}: AdaptFormer and LoRA modules fit a ViT, not a ResNet")
    return resnet.backbone(name, dtype, frozen)
  if name not in vit.ARCHITECTURES:
    raise ConfigError(f"config key model.name: {name!r} is not one of {', '.join(ARCHITECTURES)}")
  return vit.create_vit(name, dtype=dtype, image_size=0, remat=remat, adaptformer_dim=peft.adaptformer_dim,
                        lora_rank=peft.lora_rank)


def feature_dim(name: str) -> int:
  """Dimension d of the pooled features of backbone `name`."""
  return vit.ARCHITECTURES[name]["width"] if name in vit.ARCHITECTURES else resnet.feature_dim(name)


def last_stage_name(name: str) -> str:
  """The path of the backbone's last stage ('last block' of the paper) under params['backbone']: 'stage4' for the
  ImageNet ResNets, 'transformer/resblocks_11' for a 12-block ViT."""
  if name in vit.ARCHITECTURES:
    return f"transformer/resblocks_{vit.ARCHITECTURES[name]['layers'] - 1}"
  return resnet.last_stage_name(name)


class LTRModel(nn.Module):
  """Backbone + ClassifierHead. `__call__` returns (float32 logits [B, C], float32 features [B, d])."""
  backbone: nn.Module
  num_classes: int
  head_spec: heads.HeadSpec = heads.HeadSpec()
  dtype: Any = jnp.float32

  def setup(self):
    self.head = heads.ClassifierHead(self.num_classes, self.head_spec, self.dtype)

  @property
  def peft(self) -> Peft:
    """The backbone's parameter-efficient modules (none for a ResNet)."""
    return Peft(getattr(self.backbone, "adaptformer_dim", 0), getattr(self.backbone, "lora_rank", 0))

  def __call__(self, x: jnp.ndarray, train: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    z = self.features(x, train)
    return self.classify(z), z

  def features(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Pooled backbone features z (NHWC normalised images in)."""
    return self.backbone(x, train)

  def classify(self, z: jnp.ndarray) -> jnp.ndarray:
    """Head logits in float32."""
    return self.head(z).astype(jnp.float32)


def create_model(name: str, num_classes: int, dtype: Any = jnp.float32, frozen: Sequence[str] = (),
                 head_spec: heads.HeadSpec = heads.HeadSpec(), peft: Peft = Peft(), remat: bool = False) -> LTRModel:
  """The model `name` (of ARCHITECTURES) with a `num_classes`-way head, computing in `dtype`; the rest: `backbone`."""
  return LTRModel(backbone(name, dtype, frozen, peft, remat), num_classes, head_spec, dtype)


def from_config(model: ml_collections.ConfigDict, num_classes: int, frozen: Sequence[str] = (),
                head_spec: heads.HeadSpec | None = None, peft: Peft = Peft()) -> LTRModel:
  """The model of config key `model` with a `num_classes`-way head; `frozen`: patterns of ltr_jax.masks;
  head_spec: what the head computes (as a checkpoint records it; default: config keys model.head, head_scale);
  peft: a ViT's parameter-efficient modules (as a checkpoint records them)."""
  return create_model(model.name, num_classes, DTYPES[model.dtype], masks.resolve(frozen, last_stage_name(model.name)),
                      head_spec or heads.HeadSpec.of_config(model), peft, model.remat)


def init_head(model: LTRModel, seed: int) -> dict[str, jax.Array]:
  """Fresh head parameters, initialised alone (no forward pass through the backbone)."""
  z = jnp.zeros((1, model.backbone.num_features), jnp.float32)
  return model.init(jax.random.key(seed), z, method=LTRModel.classify)["params"]["head"]


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float], dtype) -> jax.Array:
  """uint8 NHWC -> (x / 255 - mean) / std in the compute dtype (done on the device, inside jit)."""
  mean = jnp.asarray(mean, jnp.float32) * 255
  std = jnp.asarray(std, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)
