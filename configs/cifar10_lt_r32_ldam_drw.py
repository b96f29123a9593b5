"""CIFAR-10-LT, ResNet-32 with LDAM-DRW (Cao et al. 2019), then every stage-2 method on its features.

Data, schedule and stage 2 as configs/cifar10_lt_r32.py. What kaidic/LDAM-DRW's cifar_train.py changes for
`--loss_type LDAM --train_rule DRW`:
- a normalised classifier (models/resnet_cifar.py NormedLinear, use_norm for LDAM): model.head='cosine',
  logits s cos(z, w_j) with s = 30 (losses.py LDAMLoss s=30; base.py's model.head_scale), no bias;
- the LDAM loss, largest margin 0.5 (max_m=0.5, base.py's train.ldam_max_m), margins proportional to
  n_j^(-1/4), subtracted from the true class's cosine;
- DRW: class-balanced weights (beta 0.9999, train.cb_beta) from epoch 160 (idx = epoch // 160;
  train.drw_epoch, base.py).
Its lr steps (x0.01 from 0-based epoch 160, x1e-4 from 180: configs/cifar10_lt_r32.py's train.lr_steps), so the
class-balanced re-weighting starts when the lr has dropped 100-fold, to 0.001, as in their code.
Stage 2 on a cosine head (ltr_jax.stage2): NCM as on any head; cRT trains a new cosine classifier with the
same s; tau-norm is the joint classifier at every tau (its columns have norm s); LWS and logit adjustment act
on the cosine logits.

Published (Cao et al. 2019, ResNet-32, exponential profile, IR 100): LDAM-DRW top-1 77.03 (error 22.97),
on their 5000..50 profile (this config's: the same, its head class at 4500 for the validation hold-out).
"""
from configs import cifar10_lt_r32


def ldam_drw(c):
  """The LDAM-DRW recipe on top of the LDAM protocol (the CIFAR-100 config takes it from here)."""
  c.model.head = "cosine"
  c.train.loss = "ldam_drw"


def get_config():
  c = cifar10_lt_r32.get_config()
  ldam_drw(c)
  return c
