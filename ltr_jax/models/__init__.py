"""Backbones (ResNet, ResNeXt, CIFAR ResNet-32, a small Fashion-MNIST ResNet) + linear head."""

from ltr_jax.models.resnet import ARCHITECTURES
from ltr_jax.models.resnet import LTRModel
from ltr_jax.models.resnet import ResNet
from ltr_jax.models.resnet import create_model
from ltr_jax.models.resnet import feature_dim
from ltr_jax.models.resnet import last_stage_name

__all__ = ['ARCHITECTURES', 'LTRModel', 'ResNet', 'create_model', 'feature_dim', 'last_stage_name']
