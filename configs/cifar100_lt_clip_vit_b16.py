"""CIFAR-100-LT (IR 100; 50 or 10 with --config.data.imbalance_ratio) on a frozen CLIP ViT-B/16 (OpenAI's
weights), images resized to 224: zero-shot CLIP, a linear probe, the decoupled classifiers on its features and LIFT
(Shi et al., ICML 2024).

Data: TFDS cifar100 made long-tailed as configs/cifar100_lt_r32.py (LIFT's profile, datasets/cifar100.py:22-28:
int(500 * IR^(-i/99)) images of class i), with that config's validation hold-out; TFDS's label names name the
classes for CLIP's prompts. LIFT's preprocessing for CIFAR is its ImageNet one (trainer.py:102-114): the 32 x 32
images go through RandomResizedCrop 224 and, at test, resize 256 and centre crop 224 (base.py's frozen_clip).
LIFT's bottleneck for 100 classes and 12 blocks: 2^floor(log2(100 / 24)) = 4. cRT and LWS on cached features on
the CIFAR schedule of configs/cifar10_lt_r32.py.
Run: python -m ltr_jax.import_torch --config=configs/cifar100_lt_clip_vit_b16.py --kind=openai_clip
  --checkpoint=ViT-B-16.pt --workdir=DIR, then python -m ltr_jax.main --mode=decouple with the same config and DIR.
Published (top-1 All %, not run here; SPEC.md quotes them from LIFT's paper): LIFT 81.7 / 83.1 / 84.9 at IR 100 /
50 / 10 (five test crops).
"""
from configs import base, cifar10_lt_r32, cifar100_lt_r32


def get_config():
  c = cifar10_lt_r32.get_config()
  cifar100_lt_r32.cifar100(c)
  base.frozen_clip(c)
  return c
