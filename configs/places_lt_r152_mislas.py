"""Places-LT, ResNet-152 from ImageNet with MiSLAS (Zhong et al., CVPR 2021), beside the paper's methods.

Data, ImageNet initialisation (train.init_from), trainable part and stage-2 methods as
configs/places_lt_r152.py. The values of dvlab-research/MiSLAS, config/places/places_resnet152_stage1_mixup.yaml
and places_resnet152_stage2_mislas.yaml (their code keeps the best epoch on Places_LT_test):
- Stage 1: mixup with alpha 0.2 (train.mixup_alpha), 90 epochs, batch 256, SGD momentum 0.9, lr 0.1 for the
  trained block and the classifier alike (no backbone multiplier), cosine to 0 without warm-up (cos: True),
  weight decay 5e-4; RandomResizedCrop 224, flip, ColorJitter 0.4 (datasets/places.py). The frozen ImageNet
  layers run in inference mode (train_stage1.py: model.eval()).
  Deviation: their trained "last block" (models/resnet_places.py, resnet152_fe, after OLTR) is the last
  bottleneck only (layer4.2), re-initialised at random; ltr_jax trains the whole last stage (layer4, its three
  bottlenecks) from the ImageNet weights, as configs/places_lt_r152.py.
  --config.train.frozen="('backbone/(?!{last_stage}/block2/).*',)" trains that bottleneck only (from ImageNet).
- Stage 2 "mislas" (train_stage2.py; stage2.mislas): the stage-1 classifier and learned per-class logit scales
  re-trained 10 epochs on class-balanced, augmented images, batch 256, lr 0.1 cosine, weight decay 5e-4,
  label-aware smoothing from 0.4 (largest class) to 0.1 (smallest), concave mapping (base.py's
  stage2.mislas.las_*), classifier lr x 0.05, shift learning on for the trained block only (block.train(),
  model.eval()): the statistics of the last stage are re-estimated, the ImageNet ones stay.

Published (their README, ResNet-152, top-1 % / ECE % over 15 bins): 40.4 / 3.41 after stage 2; 29.4 / 16.7
after stage 1 (mixup).
"""
from configs import base
from configs import places_lt_r152


def get_config():
  c = places_lt_r152.get_config()
  c.train.update(
      dict(epochs=90, batch_size=256, base_lr=0.1, lr_mults=(), mixup_alpha=0.2, schedule="cosine", lr_steps=(),
           frozen=("backbone/(?!{last_stage}/).*",)))
  c.stage2.methods += ("mislas",)
  c.stage2.mislas.update(dict(batch_size=256, lr=0.1, frozen=(base.BACKBONE_PARAMS, "backbone/(?!{last_stage}/).*")))
  return c
