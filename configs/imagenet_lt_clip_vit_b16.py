"""ImageNet-LT on a frozen CLIP ViT-B/16 (OpenAI's weights): zero-shot CLIP, a linear probe, the decoupled
classifiers on its features and LIFT (Shi et al., ICML 2024), each a row of one report.

Data: ImageNet-LT's list files as configs/imagenet_lt_rx50.py; class names for CLIP's prompts from
ltr_jax/data/imagenet_classnames.txt (data.class_names='imagenet', LIFT's datasets/ImageNet_LT/classnames.txt).
Preprocessing, the zero-shot row, the linear probe and LIFT: configs/base.py's frozen_clip and stage2.lift, with
LIFT's values (shijxcs/LIFT @ 661ead9; configs/provenance.csv). LIFT's bottleneck for 1000 classes and 12 blocks:
2^floor(log2(1000 / 24)) = 32. cRT, tau-norm, LWS: the paper's ImageNet-LT values (base.py), on cached features.
Run (the weights: README "Foundation models"):
  python -m ltr_jax.import_torch --config=configs/imagenet_lt_clip_vit_b16.py --kind=openai_clip \\
      --checkpoint=ViT-B-16.pt --workdir=runs/imagenet_lt_clip
  python -m ltr_jax.main --config=configs/imagenet_lt_clip_vit_b16.py --mode=decouple --workdir=runs/imagenet_lt_clip
Published (top-1 All %, not run here; SPEC.md quotes them from LIFT's paper): zero-shot CLIP 68.3, linear probe
about 74.2, LIFT 78.3 (five test crops averaged: stage2.five_crop).
"""
from configs import base, imagenet_lt_rx50


def get_config():
  c = imagenet_lt_rx50.get_config()
  base.frozen_clip(c)
  c.data.class_names = "imagenet"
  return c
