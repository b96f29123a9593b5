"""ImageNet-LT with ResNeXt-50 32x4d: the paper's main experiment (Tables 1, 2 and 5, Figure 1).

Data: the OLTR list files ImageNet_LT_train.txt / _val.txt / _test.txt in data.list_dir (115,846 / 20,000 /
50,000 images, 1000 classes; 385 many, 479 medium, 136 few), the ImageNet-2012 images under data.image_root.
tau is chosen on ImageNet_LT_val, results are reported on ImageNet_LT_test.
Every other value is base.py's, which holds the reference's ImageNet-LT recipe (facebookresearch/
classifier-balancing):
- Stage 1 (config/ImageNet_LT/feat_uniform.yaml): 90 epochs, instance-balanced, batch 512, SGD momentum 0.9,
  lr 0.2 (0.1 per 256) cosine to 0, weight decay 5e-4; RandomResizedCrop 224, flip, ColorJitter 0.4; evaluation
  resize 256, centre crop 224 (data/dataloader.py).
- Stage 2: cRT (config/ImageNet_LT/cls_crt.yaml) 10 epochs, lr 0.2 cosine, batch 512, weight decay 5e-4, and LWS
  (cls_lws.yaml) 5 epochs, lr 0.2, batch 512, weight decay 5e-4 on the scales, both through the frozen backbone
  on the stage-1 augmentation with BatchNorm in training mode (run_networks.py): the rows "cRT" and "LWS"; their
  fast variants on cached features ("crt_cached", "lws_cached") beside them.

Paper (top-1 %, Many / Medium / Few / All):
  Joint 65.9 / 37.5 / 7.7 / 44.4; NCM 56.6 / 45.3 / 28.1 / 47.3; cRT 61.8 / 46.2 / 27.4 / 49.6;
  tau-norm 59.1 / 46.9 / 30.7 / 49.4; LWS 60.2 / 47.2 / 30.3 / 49.9.
  The reference's released cRT checkpoint scores 48.1 All (60.2 / 44.5 / 26.6) on the test split
  (classifier-balancing issue 11). Compare both with the "cRT" row (not its cached variant).
Joint with another stage-1 sampling (Table 5, All): --config.train.sampling=class 45.1, =sqrt 46.8,
=progressive 47.2.
Table 1 (All): --config.stage2.methods="('backbone_classifier','backbone_classifier_tenth_lr',
'last_block_classifier','classifier')" gives B+C 46.3, B+C (0.1x lr) 48.8, LB+C 48.9, C 49.5.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(
      dict(name="imagenet_lt", kind="list", num_classes=1000, train_list="ImageNet_LT_train.txt",
           val_list="ImageNet_LT_val.txt", test_list="ImageNet_LT_test.txt"))
  return c
