"""ImageNet-LT, ResNet-50 with MiSLAS (Zhong et al., CVPR 2021), beside the paper's stage-2 methods.

Data, augmentation and stage-2 methods as configs/imagenet_lt_rx50.py (their code reads the same OLTR list
files, trains on ImageNet_LT_train and keeps the test split's best epoch). The values of
dvlab-research/MiSLAS, config/imagenet/imagenet_resnet50_stage1_mixup.yaml and
imagenet_resnet50_stage2_mislas.yaml:
- Stage 1: ResNet-50, mixup with alpha 0.2 (train.mixup_alpha), 180 epochs, batch 256, SGD momentum 0.9,
  lr 0.1 (0.1 per 256) cosine to 0 without warm-up (cos: True), weight decay 5e-4; RandomResizedCrop 224, flip,
  ColorJitter 0.4 (datasets/imagenet.py).
- Stage 2 "mislas" (train_stage2.py; stage2.mislas): the stage-1 classifier and learned per-class logit scales
  re-trained 10 epochs on class-balanced, augmented images, batch 256, lr 0.1 cosine, weight decay 5e-4,
  label-aware smoothing from 0.3 (largest class) to 0.0 (smallest), concave mapping, classifier lr x 0.05
  (stage2.mislas.lr_mults, base.py's), shift learning on (every BatchNorm of the frozen backbone re-estimates its
  statistics; base.py's frozen patterns).
The paper's cRT and LWS keep the reference's schedules (configs/imagenet_lt_rx50.py).

Published (their README, ResNet-50, top-1 % / ECE % over 15 bins): 52.7 / 1.78 after stage 2; 45.5 / 7.98
after stage 1 (mixup).
"""
from configs import imagenet_lt_rx50


def get_config():
  c = imagenet_lt_rx50.get_config()
  c.model.name = "resnet50"
  c.train.update(dict(epochs=180, batch_size=256, mixup_alpha=0.2))
  c.stage2.methods += ("mislas",)
  c.stage2.mislas.update(dict(batch_size=256, lr=0.1, las_eps_head=0.3, las_eps_tail=0.0))
  return c
