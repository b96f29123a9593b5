"""CIFAR-10-LT with weight balancing (Alshammari et al., CVPR 2022), beside the paper's stage-2 methods.

configs/cifar100_lt_r34_wb.py (ResNet-34 with a CIFAR stem; stage 1 cross-entropy, 320 epochs, batch 64,
lr 0.01 cosine, weight decay 5e-3; stage 2 "wb": 10 epochs, lr 0.01, weight decay 0.1, MaxNorm, class-balanced
loss) on the data of configs/cifar10_lt_r32.py. Their code and paper give CIFAR-100-LT values only, used
unchanged here.

Published: none (the paper reports no CIFAR-10-LT result).
"""
from configs import cifar100_lt_r34_wb
from configs import cifar10_lt_r32


def get_config():
  c = cifar10_lt_r32.get_config()
  cifar100_lt_r34_wb.weight_balancing(c)
  return c
