"""ImageNet-LT with ResNeXt-50 32x4d: the paper's main experiment (Tables 1, 2 and 5, Figure 1).

Data: the OLTR list files ImageNet_LT_train.txt / _val.txt / _test.txt in data.list_dir (115,846 / 20,000 /
50,000 images, 1000 classes; 385 many, 479 medium, 136 few), the ImageNet-2012 images under data.image_root.
tau is chosen on ImageNet_LT_val, results are reported on ImageNet_LT_test.
Stage 1: 90 epochs, instance-balanced, batch 512, SGD momentum 0.9, lr 0.2 (0.1 per 256) cosine to 0, weight
decay 5e-4; RandomResizedCrop 224, flip, ColorJitter 0.4; evaluation resize 256, centre crop 224.
Stage 2: cRT 10 epochs, lr 0.2 cosine, batch 512, weight decay 5e-4; LWS 5 epochs, lr 0.2.

Paper (top-1 %, Many / Medium / Few / All):
  Joint 65.9 / 37.5 / 7.7 / 44.4; NCM 56.6 / 45.3 / 28.1 / 47.3; cRT 61.8 / 46.2 / 27.4 / 49.6;
  tau-norm 59.1 / 46.9 / 30.7 / 49.4; LWS 60.2 / 47.2 / 30.3 / 49.9.
Joint with another stage-1 sampling (Table 5, All): --config.train.sampling=class 45.1, =sqrt 46.8,
=progressive 47.2.
Table 1 (All): --config.stage2.methods="('backbone_classifier','backbone_classifier_tenth_lr',
'last_block_classifier','classifier')" gives B+C 46.3, B+C (0.1x lr) 48.8, LB+C 48.9, C 49.5.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(dict(
      name="imagenet_lt", kind="list", num_classes=1000, train_list="ImageNet_LT_train.txt",
      val_list="ImageNet_LT_val.txt", test_list="ImageNet_LT_test.txt", image_size=224,
      train_transform="random_resized_crop", eval_transform="resize_center_crop", resize=256, color_jitter=0.4,
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
  c.model.name = "resnext50_32x4d"
  c.train.update(dict(sampling="instance", epochs=90, batch_size=512, base_lr=0.1, weight_decay=5e-4))
  c.stage2.crt.update(dict(epochs=10, batch_size=512, lr=0.2, weight_decay=5e-4))
  c.stage2.lws.update(dict(epochs=5, batch_size=512, lr=0.2))
  c.stage2.finetune.update(dict(epochs=10, batch_size=512, base_lr=0.1, weight_decay=5e-4))
  return c
