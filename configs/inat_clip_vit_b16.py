"""iNaturalist 2018 on a frozen CLIP ViT-B/16 (OpenAI's weights): zero-shot CLIP, a linear probe, the decoupled
classifiers on its features and LIFT (Shi et al., ICML 2024), LIFT for 20 epochs as its script runs it.

Data: iNaturalist's JSON files as configs/inat_r50.py (the species names of its categories name the classes for
CLIP's prompts); CLIP's preprocessing and normalisation in place of that config's (base.py's frozen_clip). LIFT's
bottleneck for 8142 classes and 12 blocks: 2^floor(log2(8142 / 24)) = 256. cRT and LWS on cached features on the
reference's iNaturalist schedule (configs/inat_r50.py). LIFT relabels the classes by sorted species name
(datasets/inat2018.py:39-49); the labels here are the JSON's category ids: the same classes, another order.
At this scale stage2.feature_dtype='bfloat16' halves the feature cache (437,513 x 768: 1.3 GB in float32).
Run: python -m ltr_jax.import_torch --config=configs/inat_clip_vit_b16.py --kind=openai_clip
  --checkpoint=ViT-B-16.pt --workdir=DIR, then python -m ltr_jax.main --mode=decouple with the same config and DIR.
Published (top-1 All %, not run here; SPEC.md quotes it from LIFT's paper): LIFT about 79-80.
"""
from configs import base, inat_r50


def get_config():
  c = inat_r50.get_config()
  base.frozen_clip(c)
  c.stage2.lift.epochs = 20
  return c
