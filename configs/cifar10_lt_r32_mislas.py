"""CIFAR-10-LT, ResNet-32 with MiSLAS (Zhong et al., CVPR 2021), beside the paper's stage-2 methods.

configs/cifar100_lt_r32_mislas.py (stage 1 with mixup alpha 1.0 on the LDAM protocol; stage 2 "mislas" 10
epochs, lr 0.1, batch 128, weight decay 2e-4) on the data of configs/cifar10_lt_r32.py, with the stage-2 values
of dvlab-research/MiSLAS config/cifar10/cifar10_imb{001,002,01}_stage2_mislas.yaml for data.imbalance_ratio 100,
50, 10: label-aware smoothing from 0.3 / 0.2 / 0.1 (largest class) to 0.0 (smallest), classifier lr x 0.5 / 0.2 /
0.2, shift learning off (shift_bn: False: the whole backbone frozen, its BatchNorm statistics included). Stage 1 (cifar10_imb001_stage1_mixup.yaml) has the CIFAR-100 values.

Published (their README, CIFAR-10-LT IR 100, top-1 % / ECE % over 15 bins): 82.5 / 3.66 after stage 2;
72.8 / 2.14 after stage 1 (mixup).
"""
from configs import base
from configs import cifar100_lt_r32_mislas
from configs import cifar10_lt_r32


def get_config():
  c = cifar10_lt_r32.get_config()
  cifar100_lt_r32_mislas.mislas(c, ((100.0, base.mislas_stage2(0.3, 0.0, False, 0.5)),
                                    (50.0, base.mislas_stage2(0.2, 0.0, False, 0.2)),
                                    (10.0, base.mislas_stage2(0.1, 0.0, False, 0.2))))
  return c
