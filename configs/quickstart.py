"""Offline quickstart: Fashion-MNIST made long-tailed (IR 100, 1000 -> 10 images per class).

Data: Debian's dataset-fashion-mnist (or the IDX files in --config.data.data_dir); where neither holds them, TFDS
downloads and prepares its fashion_mnist: data.download=True, unlike base.py, since this is the quickstart of fresh
machines and Colab (the download needs network, and TFDS's builder TensorFlow; Colab has both).

Class counts 1000, 599, 359, 215, 129, 77, 46, 27, 16, 10: 5 many, 3 medium and 2 few classes.
Validation: 100 images per class held out of the unused training images; test: the balanced 10,000.
Stage 1 instance-balanced with a small ResNet, then every stage-2 classifier: the paper's (NCM, tau-norm, and cRT
and LWS through the frozen backbone as the reference runs them), their labelled variants (cRT and LWS on cached
features, cRT with frozen BatchNorm statistics) and later ones (logit adjustment, weight balancing through the
backbone and on cached features, MiSLAS's stage 2). A few minutes on 2 CPU cores.

Stage 2 keeps the reference's cRT and LWS schedules (10 and 5 epochs, lr 0.2 cosine, weight decay 5e-4) at this
data's batch size, 128, for each of their variants alike.
Choices for this scale, where the successors' papers give no value for it:
- WB: cross-entropy with class-balanced weights (cb_ce), lr 0.1, weight decay 5e-3, the best validation All (75.2)
  of six settings tried on one stage-1 run on cached features, (loss, lr, weight decay) = (cb_softmax_bce, 0.01,
  0.1) (WB's code on CIFAR-100, base.py: 69.1), (cb_ce, 0.01, 0.1), (cb_ce, 0.01, 5e-3), (cb_ce, 0.1, 5e-3),
  (cb_softmax_bce, 0.1, 0.1), (cb_ce, 0.05, 1e-2); the same values through the backbone.
- MiSLAS: its CIFAR-10 values (the 10-class setting): label-aware smoothing 0.3 (head) to 0.0 (tail), classifier
  lr factor 0.5, shift learning off (config/cifar10/*_stage2_mislas.yaml), 5 epochs at lr 0.1.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(
      dict(name="fashion_mnist_lt", kind="fashion_mnist", download=True, imbalance_ratio=100.0, n_max=1000,
           val_per_class=100, image_size=28, train_transform="pad_crop_flip", eval_transform="identity",
           color_jitter=0.0, mean=(0.286,), std=(0.353,), num_workers=0))  # 28x28 images: decoded in-process
  c.model.name = "resnet_mini"
  c.train.update(
      dict(sampling="instance", epochs=30, batch_size=128, base_lr=0.2, weight_decay=5e-4, warmup_epochs=1.0,
           log_every_steps=20))
  c.stage2.update(
      dict(
          batch_size=1000, methods=("joint", "ncm", "crt", "crt_frozen_bn", "crt_cached", "tau_norm", "lws",
                                    "lws_cached", "logit_adjust", "wb", "wb_cached", "mislas")))
  base.crt_schedule(c, batch_size=128)
  base.lws_schedule(c, batch_size=128)
  for name in ("wb", "wb_cached"):
    c.stage2[name].update(dict(lr=0.1, weight_decay=5e-3, loss="cb_ce"))
  c.stage2.mislas.update(
      dict(epochs=5, batch_size=128, lr=0.1, frozen=(base.BACKBONE,), lr_mults=(("head/(kernel|bias)", 0.5),),
           las_eps_head=0.3, las_eps_tail=0.0))
  return c
