"""CIFAR-100-LT, ResNet-32 with LDAM-DRW (Cao et al. 2019), then every stage-2 method on its features.

configs/cifar10_lt_r32_ldam_drw.py (cosine head, s 30, LDAM max margin 0.5, DRW from epoch 160, the LDAM
protocol's schedule) on the data of configs/cifar100_lt_r32.py.

Published (Cao et al. 2019, ResNet-32, exponential profile, IR 100): LDAM-DRW top-1 42.04 (error 57.96),
on their 500..5 profile (this config's: the same, its three largest classes at 450 for the validation hold-out).
"""
from configs import cifar100_lt_r32
from configs import cifar10_lt_r32
from configs import cifar10_lt_r32_ldam_drw


def get_config():
  c = cifar10_lt_r32.get_config()
  cifar100_lt_r32.cifar100(c)
  cifar10_lt_r32_ldam_drw.ldam_drw(c)
  return c
