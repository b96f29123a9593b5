"""Places-LT on a frozen CLIP ViT-B/16 (OpenAI's weights): zero-shot CLIP, a linear probe, the decoupled
classifiers on its features and LIFT (Shi et al., ICML 2024).

Data: Places-LT's list files as configs/places_lt_r152.py (its ImageNet-initialised ResNet-152 recipe is not used:
stage 1 is the imported CLIP); class names for CLIP's prompts from ltr_jax/data/places365_classnames.txt
(data.class_names='places365', LIFT's datasets/Places_LT/classnames.txt; underscores become spaces in prompts).
Preprocessing, the zero-shot row, the linear probe and LIFT: configs/base.py's frozen_clip and stage2.lift with
LIFT's values; its bottleneck for 365 classes and 12 blocks: 2^floor(log2(365 / 24)) = 8. cRT and LWS on cached
features on the reference's Places-LT schedule (configs/places_lt_r152.py).
Run: python -m ltr_jax.import_torch --config=configs/places_lt_clip_vit_b16.py --kind=openai_clip
  --checkpoint=ViT-B-16.pt --workdir=DIR, then python -m ltr_jax.main --mode=decouple with the same config and DIR.
Published (top-1 All %, not run here; SPEC.md quotes it from LIFT's paper): LIFT 52.2 (five test crops).
"""
from configs import base, places_lt_r152


def get_config():
  c = places_lt_r152.get_config()
  base.frozen_clip(c)
  c.data.class_names = "places365"
  return c
