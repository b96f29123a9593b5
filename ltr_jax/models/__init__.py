"""Models: backbones (ResNet, ResNeXt, CIFAR ResNets, a small Fashion-MNIST ResNet; CLIP's and timm's ViTs), the
classifier head defined once (`heads`), and the model of both (`model`)."""
from ltr_jax.models.heads import Classifier, ClassifierHead, HeadSpec
from ltr_jax.models.model import (ARCHITECTURES, DTYPES, LTRModel, Peft, backbone, create_model, feature_dim,
                                  from_config, init_head, last_stage_name, normalize)
from ltr_jax.models.resnet import ResNet
from ltr_jax.models.vit import ViT

__all__ = [
    "ARCHITECTURES", "DTYPES", "Classifier", "ClassifierHead", "HeadSpec", "LTRModel", "Peft", "ResNet", "ViT",
    "backbone", "create_model", "feature_dim", "from_config", "init_head", "last_stage_name", "normalize"
]
