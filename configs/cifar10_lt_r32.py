"""CIFAR-10-LT with ResNet-32 (the LDAM protocol of Cao et al. 2019; not in the paper, which reports none).

Data: TFDS cifar10 (data.kind='tfds'; `tfds build cifar10` once, or ltr_jax.data.convert), made long-tailed
with the exponential profile n_i = int(n_max * IR^(-i/9)), IR 100 (50 or 10 with
--config.data.imbalance_ratio=50 / =10); the balanced 10,000-image test split for results.
Validation (to choose tau; never the test split): 500 images per class held out of the training images the
long-tailed subset leaves unused. The profile is LDAM's (imbalance_cifar.py: n_max 5000, 5000..50 images per
class at IR 100), which uses all 5000 images of the head class: that class alone gives its 500 validation images
out of its training images (data.val_fill_from_train) and trains on 4500; every other class trains on exactly
LDAM's count, at IR 100, 50 and 10.
Stage 1, the values of kaidic/LDAM-DRW's cifar_train.py (at 2536330, lines 43-56 and adjust_learning_rate, lines
366-376): 200 epochs, instance-balanced, batch 128, SGD momentum 0.9, lr 0.1 (0.2 per 256), weight decay 2e-4, a
linear warm-up over 5 epochs (per step here, per epoch there: within each epoch's range), then x0.01 from 0-based
epoch 160 and x1e-4 from 180 (train.schedule='step'). Pad 4 + random crop 32 + flip; the CIFAR mean/std of the
LDAM code. Stage 2 (no reference values for CIFAR; stage 1's batch, lr and weight decay): cRT 10 epochs,
lr 0.1, batch 128, weight decay 2e-4; LWS 5 epochs, lr 0.1, batch 128, weight decay 2e-4; each through the
backbone (the paper's rows) and on cached features (their variants).
The LDAM paper's own method, LDAM-DRW on a cosine head: configs/cifar10_lt_r32_ldam_drw.py.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(
      dict(name="cifar10_lt", kind="tfds", tfds_name="cifar10", imbalance_ratio=100.0, n_max=5000, val_per_class=500,
           val_fill_from_train=True, image_size=32, train_transform="pad_crop_flip", eval_transform="identity",
           color_jitter=0.0, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010)))
  c.model.name = "resnet32"
  c.train.update(
      dict(epochs=200, batch_size=128, base_lr=0.2, weight_decay=2e-4, warmup_epochs=5.0, schedule="step",
           lr_steps=((160, 0.01), (180, 1e-4))))
  c.stage2.batch_size = 1000
  base.crt_schedule(c, batch_size=128, lr=0.1, weight_decay=2e-4)
  base.lws_schedule(c, batch_size=128, lr=0.1, weight_decay=2e-4)
  return c
