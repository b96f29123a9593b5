"""CIFAR-100-LT with ResNet-32 (the LDAM protocol of Cao et al. 2019; not in the paper, which reports none).

Data: TFDS cifar100 (data.kind='tfds'; `tfds build cifar100` once, or ltr_jax.data.convert), made long-tailed
with the exponential profile n_i = int(n_max * IR^(-i/99)), IR 100 (50 or 10 with
--config.data.imbalance_ratio=50 / =10); the balanced 10,000-image test split for results.
Validation (to choose tau; never the test split): 50 images per class held out of the training images the
long-tailed subset leaves unused. The profile is LDAM's (n_max 500, 500..5 images per class at IR 100); the classes
it uses (nearly) whole give the rest of their validation images out of their training images
(data.val_fill_from_train) and train on 450: at IR 100 classes 0, 1, 2 (instead of 500, 477, 455), at IR 50 the same
three (500, 480, 462), at IR 10 the first five (500 to 455). Every other class trains on exactly LDAM's count.
Stage 1 and 2 as configs/cifar10_lt_r32.py: 200 epochs, 5 warm-up epochs, batch 128, lr 0.1 (0.2 per 256)
x0.01 from epoch 160 and x1e-4 from 180, weight decay 2e-4, pad-crop 32 + flip, the LDAM code's mean/std (it uses CIFAR-10's for both);
cRT 10 epochs, lr 0.1, batch 128; LWS 5 epochs, lr 0.1; weight decay 2e-4.
The LDAM paper's own method, LDAM-DRW on a cosine head: configs/cifar100_lt_r32_ldam_drw.py.
"""
from configs import cifar10_lt_r32


def cifar100(c):
  """CIFAR-100-LT's data keys in place of CIFAR-10-LT's (the other CIFAR-100 configs take them from here)."""
  c.data.update(dict(name="cifar100_lt", tfds_name="cifar100", n_max=500, val_per_class=50))


def get_config():
  c = cifar10_lt_r32.get_config()
  cifar100(c)
  return c
