"""The quickstart with a small ViT: Fashion-MNIST-LT (IR 100) as configs/quickstart.py, the backbone a ViT trained
from scratch (vit_mini: 7x7 patches, width 64, 4 blocks; ltr_jax/models/vit.py), then frozen for every stage-2
method and for LIFT's AdaptFormers with their cosine head (stage2.lift): the whole foundation-model path on real data
at CPU scale, the adapters beside cRT on the same frozen backbone.

A ViT has no BatchNorm, so the paper's cRT and LWS through the backbone see the same features as their frozen-statistics
variant (crt_frozen_bn is left out); they still train on augmented images. Stage 1 keeps the quickstart's recipe
(SGD, 30 epochs, lr 0.2 per 256 at batch 128, weight decay 5e-4, one warm-up epoch). LIFT (base.py's stage2.lift,
its values from shijxcs/LIFT at 661ead9) runs at this data's batch, 128, for 10 epochs; its bottleneck follows LIFT's
rule, 2^floor(log2(10 / 8)) = 1 for 10 classes and 4 blocks, and its head starts at the stage-1 head's normalised
class vectors (no text encoder here). LIFT also gets the row of its five-crop test (stage2.five_crop), the 28 x 28
images resized to 32 for the crops.
"""
from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.model.name = "vit_mini"
  c.stage2.methods = ("joint", "ncm", "crt", "crt_cached", "tau_norm", "lws", "lws_cached", "logit_adjust", "wb",
                      "wb_cached", "mislas", "lift")
  c.stage2.five_crop = ("lift",)
  c.data.five_crop_resize = 32
  return c
