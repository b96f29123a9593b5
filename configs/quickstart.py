"""Offline quickstart: Fashion-MNIST made long-tailed (IR 100, 1000 -> 10 images per class).

Class counts 1000, 599, 359, 215, 129, 77, 46, 27, 16, 10: 5 many, 3 medium and 2 few classes.
Validation: 100 images per class held out of the unused training images; test: the balanced 10,000.
Stage 1 instance-balanced with a small ResNet, then every stage-2 classifier. ~minutes on 2 CPU cores.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(dict(
      name="fashion_mnist_lt", kind="fashion_mnist", imbalance_ratio=100.0, n_max=1000,
      val_per_class=100, image_size=28, train_transform="pad_crop_flip", eval_transform="identity",
      color_jitter=0.0, mean=(0.286,), std=(0.353,)))
  c.model.name = "resnet_mini"
  c.train.update(dict(sampling="instance", epochs=30, batch_size=128, base_lr=0.2, weight_decay=5e-4,
                      warmup_epochs=1.0, log_every_steps=20))
  c.stage2.update(dict(batch_size=1000))
  c.stage2.crt.update(dict(epochs=10, batch_size=128, lr=0.2, weight_decay=5e-4))
  c.stage2.lws.update(dict(epochs=5, batch_size=128, lr=0.2))
  c.stage2.finetune.update(dict(epochs=5, batch_size=128, base_lr=0.2))
  return c
