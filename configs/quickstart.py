"""Offline quickstart: Fashion-MNIST made long-tailed (IR 100, 1000 -> 10 images per class).

Class counts 1000, 599, 359, 215, 129, 77, 46, 27, 16, 10: 5 many, 3 medium and 2 few classes.
Validation: 100 images per class held out of the unused training images; test: the balanced 10,000.
Stage 1 instance-balanced with a small ResNet, then every stage-2 classifier: the paper's (NCM, cRT on cached
features and the reference cRT recipe through the backbone, tau-norm, LWS) and later ones (logit adjustment,
weight balancing, MiSLAS's stage 2). About a minute on 2 CPU cores.

Choices for this scale, where the successors' papers give no value for it:
- WB: cross-entropy with class-balanced weights, lr 0.1, weight decay 5e-3, the best validation All (75.2) of
  six settings tried on one stage-1 run, (loss, lr, weight decay) = (softmax_bce, 0.01, 0.1) (WB's code on
  CIFAR-100, base.py: 69.1), (ce, 0.01, 0.1), (ce, 0.01, 5e-3), (ce, 0.1, 5e-3), (softmax_bce, 0.1, 0.1),
  (ce, 0.05, 1e-2).
- MiSLAS: its CIFAR-10 values (the 10-class setting): label-aware smoothing 0.3 (head) to 0.0 (tail), classifier
  lr factor 0.5, shift learning off (config/cifar10/*_stage2_mislas.yaml).
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(dict(
      name="fashion_mnist_lt", kind="fashion_mnist", imbalance_ratio=100.0, n_max=1000,
      val_per_class=100, image_size=28, train_transform="pad_crop_flip", eval_transform="identity",
      color_jitter=0.0, mean=(0.286,), std=(0.353,), num_workers=0))  # 28x28 images: decoded in-process
  c.model.name = "resnet_mini"
  c.train.update(dict(sampling="instance", epochs=30, batch_size=128, base_lr=0.2, weight_decay=5e-4,
                      warmup_epochs=1.0, log_every_steps=20, las_eps_head=0.3, las_eps_tail=0.0))
  c.stage2.update(dict(batch_size=1000, methods=("joint", "ncm", "crt", "crt_augmented", "tau_norm", "lws",
                                                  "logit_adjust", "wb", "mislas")))
  c.stage2.crt.update(dict(epochs=10, batch_size=128, lr=0.2, weight_decay=5e-4))
  c.stage2.lws.update(dict(epochs=5, batch_size=128, lr=0.2))
  c.stage2.wb.update(dict(lr=0.1, weight_decay=5e-3, loss="ce"))
  c.stage2.finetune.update(dict(epochs=5, batch_size=128, base_lr=0.2))
  c.stage2.finetune.recipes.mislas.update(dict(frozen=("backbone/.*",), lr_mults=(("head/(kernel|bias)", 0.5),)))
  return c
