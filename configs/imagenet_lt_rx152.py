"""ImageNet-LT with ResNeXt-152 32x4d: Table 2, last column.

Everything else as configs/imagenet_lt_rx50.py (90 epochs, batch 512, lr 0.2 cosine, weight decay 5e-4;
cRT 10 epochs and LWS 5 epochs, lr 0.2, weight decay 5e-4, through the backbone (the paper's rows) and on cached
features (their variants)).

Paper (top-1 %, All): Joint 47.8; NCM 51.3; cRT 52.4; tau-norm 52.8 (no Many / Medium / Few or LWS given).
"""
from configs import imagenet_lt_rx50


def get_config():
  c = imagenet_lt_rx50.get_config()
  c.model.name = "resnext152_32x4d"
  return c
