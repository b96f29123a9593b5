"""iNaturalist 2018 with ResNet-101: Table 7 of the paper.

Everything else, the validation split held out of train2018 included, as configs/inat_r50.py (90 epochs,
200 with --config.train.epochs=200; weight decay 1e-4; cRT 30 epochs, through the backbone (the paper's row) and
on cached features (its variant)).

Paper (top-1 %, Many / Medium / Few / All; 90 epochs, then 200 epochs):
  Joint 75.9 / 66.0 / 59.9 / 64.6, 75.5 / 68.9 / 63.2 / 67.3; NCM 58.6 / 61.9 / 61.8 / 61.5,
  63.7 / 65.7 / 65.3 / 65.3; cRT 73.0 / 68.9 / 65.7 / 68.1, 73.9 / 70.4 / 67.8 / 69.7;
  tau-norm 69.7 / 68.3 / 68.3 / 68.5, 68.6 / 70.6 / 72.2 / 71.0.
"""
from configs import inat_r50


def get_config():
  c = inat_r50.get_config()
  c.model.name = "resnet101"
  return c
