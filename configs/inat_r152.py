"""iNaturalist 2018 with ResNet-152: Tables 3 and 7 of the paper.

Everything else, the validation split held out of train2018 included, as configs/inat_r50.py (90 epochs,
200 with --config.train.epochs=200; weight decay 1e-4; cRT 30 epochs, through the backbone (the paper's row) and
on cached features (its variant)).

Paper (top-1 %, Many / Medium / Few / All; 90 epochs, then 200 epochs):
  Joint 75.2 / 66.3 / 60.7 / 65.0, 78.2 / 70.6 / 64.7 / 69.0; NCM 59.3 / 61.9 / 62.6 / 61.9,
  66.3 / 67.5 / 67.2 / 67.3; cRT 73.6 / 69.3 / 66.3 / 68.5, 75.9 / 71.9 / 69.1 / 71.2;
  tau-norm 69.8 / 68.5 / 68.9 / 68.8, 74.3 / 72.3 / 72.2 / 72.5.
"""
from configs import inat_r50


def get_config():
  c = inat_r50.get_config()
  c.model.name = "resnet152"
  return c
