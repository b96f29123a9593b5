"""PyTorch twins of the ltr_jax backbones and LIFT's AdaptFormer, for the speed benchmarks and the twin tests.

`build_torch_model(name, num_classes)` builds the architecture `name` of `ltr_jax.models.resnet.ARCHITECTURES`
(the same table the Flax models use) with torchvision's module layout and state_dict keys (conv1, bn1,
layer{i}.{j}.conv{k} / bn{k} / downsample.0 / downsample.1, fc) and torchvision's initialisation. Written here
rather than imported from torchvision so that resnet10, the 32x4d ResNeXt-101/152, resnet32 and resnet_mini
exist too. Input NCHW; `forward` returns logits, `features` the pooled features.
"""

import math
from typing import Optional

import torch
from torch import nn

from ltr_jax.models.resnet import ARCHITECTURES


class PadShortcut(nn.Module):
  """Option-A shortcut (LDAM's ResNet-32): subsample by `stride`, zero-pad channels on both sides."""

  def __init__(self, planes: int, stride: int):
    super().__init__()
    self.planes, self.stride = planes, stride

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x[:, :, ::self.stride, ::self.stride]
    pad = (self.planes - x.shape[1]) // 2
    return nn.functional.pad(x, (0, 0, 0, 0, pad, self.planes - x.shape[1] - pad))


def _shortcut(inplanes: int, planes: int, stride: int, kind: str) -> Optional[nn.Module]:
  if stride == 1 and inplanes == planes:
    return None
  if kind == 'projection':
    return nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
  if kind == 'pad':
    return PadShortcut(planes, stride)
  raise ValueError(f'unknown shortcut kind {kind!r}')


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes: int, planes: int, stride: int, shortcut: str):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = _shortcut(inplanes, planes, stride, shortcut)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int, shortcut: str, groups: int = 1,
               width_per_group: int = 64):
    super().__init__()
    width = int(planes * (width_per_group / 64.0)) * groups
    self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * self.expansion)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = _shortcut(inplanes, planes * self.expansion, stride, shortcut)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
  """Same fields as `ltr_jax.models.resnet.ResNet`, plus the head (`fc`) and the input channels."""

  def __init__(self, num_classes: int, stage_sizes, stage_features, stage_strides, bottleneck: bool = False,
               stem: str = 'imagenet', stem_features: int = 64, stem_strides: int = 1, shortcut: str = 'projection',
               groups: int = 1, width_per_group: int = 64, in_channels: int = 3):
    super().__init__()
    if stem == 'imagenet':
      self.conv1 = nn.Conv2d(in_channels, stem_features, 7, 2, 3, bias=False)
      self.maxpool = nn.MaxPool2d(3, 2, 1)
    elif stem == 'small':
      self.conv1 = nn.Conv2d(in_channels, stem_features, 3, stem_strides, 1, bias=False)
      self.maxpool = nn.Identity()
    else:
      raise ValueError(f'unknown stem {stem!r}')
    self.bn1 = nn.BatchNorm2d(stem_features)
    self.relu = nn.ReLU(inplace=True)
    block = Bottleneck if bottleneck else BasicBlock
    kwargs = dict(groups=groups, width_per_group=width_per_group) if bottleneck else {}
    inplanes = stem_features
    for i, (size, planes, stride) in enumerate(zip(stage_sizes, stage_features, stage_strides)):
      blocks = []
      for j in range(size):
        blocks.append(block(inplanes, planes, stride if j == 0 else 1, shortcut, **kwargs))
        inplanes = planes * block.expansion
      self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
    self.num_stages = len(stage_sizes)
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(inplanes, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

  def features(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(self.num_stages):
      x = getattr(self, f'layer{i + 1}')(x)
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc(self.features(x))


def build_torch_model(name: str, num_classes: int, in_channels: int = 3) -> ResNet:
  """The PyTorch twin of `ltr_jax.models.create_model(name, num_classes)` (in_channels=1 for grayscale
  inputs such as resnet_mini's Fashion-MNIST; the Flax model infers it from the input)."""
  if name not in ARCHITECTURES:
    raise ValueError(f'unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}')
  return ResNet(num_classes, **ARCHITECTURES[name], in_channels=in_channels)


class AdaptFormer(nn.Module):
  """LIFT's AdaptFormer (shijxcs/LIFT @ 661ead9, models/peft_modules.py:54-78): scale * up(relu(down(ln x))); down
  kaiming_normal_(a=sqrt(5)), up and both biases zero, the scale a learned scalar starting at 1. Beside each ViT
  block's MLP in benchmarks/vit.py and in the LIFT twin of tests/test_lift_twin.py."""

  def __init__(self, dim: int, bottleneck: int):
    super().__init__()
    self.ln = nn.LayerNorm(dim)
    self.down_proj = nn.Linear(dim, bottleneck)
    self.up_proj = nn.Linear(bottleneck, dim)
    self.scale = nn.Parameter(torch.ones(1))
    nn.init.kaiming_normal_(self.down_proj.weight, a=math.sqrt(5))
    for p in (self.up_proj.weight, self.down_proj.bias, self.up_proj.bias):
      nn.init.zeros_(p)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.up_proj(torch.relu(self.down_proj(self.ln(x)))) * self.scale
