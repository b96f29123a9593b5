"""ImageNet-LT with ResNet-10 (the backbone of OLTR, Liu et al. 2019): Table 2, first column.

Everything else as configs/imagenet_lt_rx50.py (90 epochs, batch 512, lr 0.2 cosine, weight decay 5e-4;
cRT 10 epochs and LWS 5 epochs, lr 0.2, weight decay 5e-4, through the backbone (the paper's rows) and on cached
features (their variants)).

Paper (top-1 %, All): Joint 34.8; NCM 35.5; cRT 41.8; tau-norm 40.6 (no Many / Medium / Few or LWS given).
"""
from configs import imagenet_lt_rx50


def get_config():
  c = imagenet_lt_rx50.get_config()
  c.model.name = "resnet10"
  return c
