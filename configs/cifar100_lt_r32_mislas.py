"""CIFAR-100-LT, ResNet-32 with MiSLAS (Zhong et al., CVPR 2021), beside the paper's stage-2 methods.

Data and schedule as configs/cifar100_lt_r32.py (their code takes the LDAM profile 500..5 without a validation
hold-out, and keeps the test split's best epoch). The values of dvlab-research/MiSLAS,
config/cifar100/cifar100_imb001_stage1_mixup.yaml and cifar100_imb001_stage2_mislas.yaml:
- Stage 1: mixup with alpha 1.0 (train.mixup_alpha); otherwise the LDAM protocol, as configs/cifar10_lt_r32.py:
  200 epochs, batch 128, lr 0.1, weight decay 2e-4, 5 warm-up epochs, then x0.1 from 0-based epoch 160 and x0.01
  from 180 (train_stage1.py lines 433-451, cos: False: train.lr_steps). (Their README recommends
  weight decay 5e-4 on CIFAR-LT for better numbers: --config.train.weight_decay=5e-4.)
- Stage 2 "mislas" (train_stage2.py; stage2.mislas): the stage-1 classifier and learned per-class logit scales
  re-trained 10 epochs on class-balanced, augmented images, batch 128, lr 0.1 cosine, weight decay 2e-4, concave
  mapping, with the values of the yaml for data.imbalance_ratio (stage2.mislas.per_imbalance_ratio; another
  ratio is refused with the keys to set): at IR 100 label-aware smoothing from 0.4 (largest class) to 0.1
  (smallest), classifier lr x 0.2 (lr_factor; the scales at x1), shift learning on (shift_bn: every BatchNorm of
  the frozen backbone re-estimates its statistics); IR 50: 0.3 to 0.0, x0.1; IR 10: 0.2 to 0.0, x0.1.
The paper's methods run beside it on their own schedules (configs/cifar10_lt_r32.py).

Published (their README, CIFAR-100-LT IR 100, top-1 % / ECE % over 15 bins): 47.0 / 4.83 after stage 2;
39.5 / 8.82 after stage 1 (mixup).
"""
from configs import base
from configs import cifar100_lt_r32
from configs import cifar10_lt_r32


def mislas(c, per_imbalance_ratio):
  """MiSLAS's stage 1 (mixup, its lr steps) and stage 2 on the LDAM protocol, with the stage-2 values of
  `per_imbalance_ratio` ((ratio, base.mislas_stage2(...)), ...) (the CIFAR-10 config takes it from here)."""
  c.train.update(dict(mixup_alpha=1.0, lr_steps=((160, 0.1), (180, 0.01))))
  c.stage2.methods += ("mislas",)
  c.stage2.mislas.update(dict(batch_size=128, lr=0.1, weight_decay=2e-4))
  c.stage2.mislas.per_imbalance_ratio = per_imbalance_ratio


def get_config():
  c = cifar10_lt_r32.get_config()
  cifar100_lt_r32.cifar100(c)
  mislas(c, ((100.0, base.mislas_stage2(0.4, 0.1, True, 0.2)), (50.0, base.mislas_stage2(0.3, 0.0, True, 0.1)),
             (10.0, base.mislas_stage2(0.2, 0.0, True, 0.1))))
  return c
