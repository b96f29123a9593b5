"""Models: backbones (ResNet, ResNeXt, CIFAR ResNets, a small Fashion-MNIST ResNet), the classifier head defined
once (`heads`), and the model of both (`model`)."""
from ltr_jax.models.heads import Classifier, ClassifierHead, HeadSpec
from ltr_jax.models.model import DTYPES, LTRModel, create_model, from_config, init_head, normalize
from ltr_jax.models.resnet import ARCHITECTURES, ResNet, feature_dim, last_stage_name

__all__ = [
    "ARCHITECTURES", "DTYPES", "Classifier", "ClassifierHead", "HeadSpec", "LTRModel", "ResNet", "create_model",
    "feature_dim", "from_config", "init_head", "last_stage_name", "normalize"
]
