"""ResNet / ResNeXt backbones: images -> pooled features z (ltr_jax.models.model puts the classifier head on top).

Architectures (`ARCHITECTURES`, shared with the PyTorch twins in benchmarks/torch_models.py):
- resnet10/50/101/152, resnext50/101/152_32x4d: torchvision layout (7x7 stride-2 stem + 3x3 max-pool,
  four stages, stride on the 3x3 conv of a bottleneck ("ResNet v1.5"), 1x1-conv + BN projection shortcuts).
- resnet32: CIFAR ResNet-32 of the LDAM code (Cao et al. 2019, `resnet_cifar.py`): 3x3 stem with 16 channels,
  3 stages of 5 basic blocks (16/32/64 channels), option-A shortcuts (stride-2 subsampling + zero-padded
  channels, no parameters); 0.46M parameters (464,154 with 10 classes).
- resnet34_cifar: ResNet-34 with a CIFAR stem, the network of weight balancing (Alshammari et al. 2022,
  `utils/network_arch_resnet.py`): torchvision's resnet34 with a 3x3 stride-1 stem conv and no max-pool
  (32 -> 32 -> 16 -> 8 -> 4), projection shortcuts; 21,328,292 parameters with 100 classes.
- resnet_mini: small ResNet for 28x28 grayscale images (Fashion-MNIST) that trains fast on a few CPU cores:
  3x3 stride-2 stem with 16 channels (28 -> 14), 3 stages of 1 basic block (16/32/64 channels, strides 1/2/2,
  14 -> 7 -> 4), projection shortcuts, 64-d features (77,754 parameters with 10 classes). XLA:CPU convolution
  gradients are slow at full resolution and wide channels, hence the stride-2 stem and narrow stages.

Initialisation follows torchvision: conv kernels kaiming-normal (fan_out, relu gain), BN scale 1 / bias 0 (no
zero-init of the last BN of a block); the head's is in ltr_jax.models.heads (torch's nn.Linear kernel init).

Mapping from a torchvision state_dict (conv weight [O, I/g, kh, kw] -> kernel [kh, kw, I/g, O]; BN weight ->
scale, bias -> bias, running_mean -> batch_stats mean, running_var -> batch_stats var; fc.weight [C, d] ->
head kernel [d, C]):
  conv1, bn1                          <-> backbone/stem_conv, backbone/stem_bn
  layer{i}.{j}.conv{k}, .bn{k}        <-> backbone/stage{i}/block{j}/conv{k}, .../bn{k}
  layer{i}.{j}.downsample.0, .1       <-> backbone/stage{i}/block{j}/downsample_conv, .../downsample_bn
  fc                                  <-> head
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ltr_jax import masks

ModuleDef = Any
Dtype = Any

CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _shortcut(x: jnp.ndarray, features: int, strides: int, kind: str, conv: ModuleDef, norm: ModuleDef) -> jnp.ndarray:
  """Identity when shapes match, else a projection ('projection': 1x1 conv + BN, torchvision's
  `downsample`) or option A ('pad': subsample, zero-pad channels on both sides, as in LDAM's ResNet-32)."""
  if strides == 1 and x.shape[-1] == features:
    return x
  if kind == "projection":
    x = conv(features, (1, 1), strides, padding=0, name="downsample_conv")(x)
    return norm(name="downsample_bn")(x)
  if kind == "pad":
    x = x[:, ::strides, ::strides, :]
    pad = (features - x.shape[-1]) // 2
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad, features - x.shape[-1] - pad)))
  raise ValueError(f"unknown shortcut kind {kind!r}")


class BatchNorm(nn.BatchNorm):
  """BatchNorm whose mode follows the frozen-parameter patterns (ltr_jax.masks).

  In training, a layer whose running statistics are frozen (its '<path>/mean' matches a pattern of `frozen`)
  still runs in inference mode: a frozen part of the network computes the same function in training as at
  test, and its statistics never change. Other layers use the batch statistics and update the running ones.
  """
  train: bool = False
  frozen: Sequence[str] = ()

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    frozen = masks.matches("/".join(self.path) + "/mean", self.frozen)
    return super().__call__(x, use_running_average=not self.train or frozen)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-10/18/34, CIFAR ResNets)."""
  features: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  shortcut: str = "projection"

  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    y = self.conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.features, (3, 3), 1, padding=1, name="conv2")(y)
    y = self.norm(name="bn2")(y)
    return nn.relu(y + _shortcut(x, self.features, self.strides, self.shortcut, self.conv, self.norm))


class Bottleneck(nn.Module):
  """1x1 -> grouped 3x3 (stride here) -> 1x1 x4 block; groups=1, width 64 is ResNet, groups=32, width 4 is
  ResNeXt 32x4d (inner width = features * width_per_group / 64 * groups, as in torchvision)."""
  features: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1
  shortcut: str = "projection"
  groups: int = 1
  width_per_group: int = 64

  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    width = int(self.features * (self.width_per_group / 64.0)) * self.groups
    out = self.features * self.expansion
    y = nn.relu(self.norm(name="bn1")(self.conv(width, (1, 1), padding=0, name="conv1")(x)))
    y = self.conv(width, (3, 3), self.strides, padding=1, feature_group_count=self.groups, name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.norm(name="bn3")(self.conv(out, (1, 1), padding=0, name="conv3")(y))
    return nn.relu(y + _shortcut(x, out, self.strides, self.shortcut, self.conv, self.norm))


class Stage(nn.Module):
  """`num_blocks` blocks named block0, block1, ...; the first one carries the stride."""
  block: Callable[..., nn.Module]
  num_blocks: int
  strides: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for j in range(self.num_blocks):
      x = self.block(strides=self.strides if j == 0 else 1, name=f"block{j}")(x)
    return x


class ResNet(nn.Module):
  """Backbone: stem -> stage1..stageN -> global average pool. Returns float32 features [B, num_features]."""
  stage_sizes: Sequence[int]
  stage_features: Sequence[int]
  stage_strides: Sequence[int]
  bottleneck: bool = False
  stem: str = "imagenet"  # 'imagenet': 7x7/2 conv + 3x3/2 max-pool; 'small': one 3x3 conv
  stem_features: int = 64
  stem_strides: int = 1  # of the 'small' stem's conv
  shortcut: str = "projection"
  groups: int = 1
  width_per_group: int = 64
  dtype: Dtype = jnp.float32
  frozen: Sequence[str] = ()  # patterns of frozen parameters and statistics (BatchNorm modes)

  @property
  def num_features(self) -> int:
    return self.stage_features[-1] * (Bottleneck.expansion if self.bottleneck else BasicBlock.expansion)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=CONV_INIT, dtype=self.dtype, param_dtype=jnp.float32)
    norm = functools.partial(BatchNorm, train=train, frozen=tuple(self.frozen), momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, param_dtype=jnp.float32)
    if self.bottleneck:
      block = functools.partial(Bottleneck, groups=self.groups, width_per_group=self.width_per_group)
    else:
      block = BasicBlock
    block = functools.partial(block, conv=conv, norm=norm, shortcut=self.shortcut)

    x = x.astype(self.dtype)
    if self.stem == "imagenet":
      x = conv(self.stem_features, (7, 7), 2, padding=3, name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "small":
      x = conv(self.stem_features, (3, 3), self.stem_strides, padding=1, name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
    else:
      raise ValueError(f"unknown stem {self.stem!r}")
    for i, (size, features, strides) in enumerate(zip(self.stage_sizes, self.stage_features, self.stage_strides)):
      x = Stage(functools.partial(block, features), size, strides, name=f"stage{i + 1}")(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


_IMAGENET = dict(stage_features=(64, 128, 256, 512), stage_strides=(1, 2, 2, 2))
_RESNEXT = dict(_IMAGENET, bottleneck=True, groups=32, width_per_group=4)

# name -> ResNet fields (minus dtype).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet10": dict(_IMAGENET, stage_sizes=(1, 1, 1, 1)),
    "resnet50": dict(_IMAGENET, stage_sizes=(3, 4, 6, 3), bottleneck=True),
    "resnet101": dict(_IMAGENET, stage_sizes=(3, 4, 23, 3), bottleneck=True),
    "resnet152": dict(_IMAGENET, stage_sizes=(3, 8, 36, 3), bottleneck=True),
    "resnext50_32x4d": dict(_RESNEXT, stage_sizes=(3, 4, 6, 3)),
    "resnext101_32x4d": dict(_RESNEXT, stage_sizes=(3, 4, 23, 3)),
    "resnext152_32x4d": dict(_RESNEXT, stage_sizes=(3, 8, 36, 3)),
    "resnet32": dict(stage_sizes=(5, 5, 5), stage_features=(16, 32, 64), stage_strides=(1, 2, 2), stem="small",
                     stem_features=16, shortcut="pad"),
    "resnet34_cifar": dict(_IMAGENET, stage_sizes=(3, 4, 6, 3), stem="small", stem_features=64),
    "resnet_mini": dict(stage_sizes=(1, 1, 1), stage_features=(16, 32, 64), stage_strides=(1, 2, 2), stem="small",
                        stem_features=16, stem_strides=2),
}


def _architecture(name: str) -> dict[str, Any]:
  if name not in ARCHITECTURES:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}")
  return ARCHITECTURES[name]


def backbone(name: str, dtype: Dtype = jnp.float32, frozen: Sequence[str] = ()) -> ResNet:
  """The backbone of architecture `name` (a key of ARCHITECTURES) computing in `dtype`; `frozen`: resolved
  patterns of ltr_jax.masks, whose BatchNorm layers run in inference mode."""
  return ResNet(**_architecture(name), dtype=dtype, frozen=tuple(frozen))


def feature_dim(name: str) -> int:
  """Dimension d of the pooled features of model `name`."""
  return ResNet(**_architecture(name)).num_features


def last_stage_name(name: str) -> str:
  """Name of the last stage of model `name`'s backbone ('last block' of the paper), e.g. 'stage4'."""
  return f'stage{len(_architecture(name)["stage_sizes"])}'
