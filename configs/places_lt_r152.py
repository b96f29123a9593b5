"""Places-LT with ResNet-152 initialised from ImageNet: Table 4 of the paper.

Data: the OLTR list files Places_LT_train.txt / _val.txt / _test.txt in data.list_dir (62,500 / 7,300 /
36,500 images, 365 classes; 131 many, 163 medium, 71 few), the Places-365 images under data.image_root.
tau is chosen on Places_LT_val, results are reported on Places_LT_test.
Initialisation: train.init_from, an ImageNet-pretrained ResNet-152 imported once (the head is new):
  python -m ltr_jax.import_torch --config=configs/places_lt_r152.py --kind=torchvision --no_head
      --checkpoint=resnet152-394f9c45.pth --workdir=pretrained/resnet152_imagenet
Stage 1: the last block (stage4) and the head trained, the rest frozen (BatchNorm statistics included);
30 epochs, instance-balanced, batch 256, SGD momentum 0.9, lr 0.1 cosine to 0, weight decay 5e-4;
RandomResizedCrop 224, flip, ColorJitter 0.4. The reference took this stage from OLTR (lr 0.01 for the
backbone, 0.1 for the head, not in its released configs); ltr_jax has one learning rate, that of the head.
Stage 2 (the reference's cls_crt.yaml / cls_lws.yaml): cRT 10 epochs, lr 0.1 cosine, batch 256, weight
decay 5e-4; LWS 5 epochs, lr 0.1, batch 256.

Paper (top-1 %, Many / Medium / Few / All): Joint 45.7 / 27.3 / 8.2 / 30.2; NCM 40.4 / 37.1 / 27.3 / 36.4;
cRT 42.0 / 37.6 / 24.9 / 36.7; tau-norm 37.8 / 40.7 / 31.8 / 37.9; LWS 37.6 (All).
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(dict(
      name="places_lt", kind="list", num_classes=365, train_list="Places_LT_train.txt",
      val_list="Places_LT_val.txt", test_list="Places_LT_test.txt", image_size=224,
      train_transform="random_resized_crop", eval_transform="resize_center_crop", resize=256, color_jitter=0.4,
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
  c.model.name = "resnet152"
  c.train.update(dict(sampling="instance", epochs=30, batch_size=256, base_lr=0.1, weight_decay=5e-4,
                      frozen=("backbone/(?!{last_stage}/).*",), init_from="pretrained/resnet152_imagenet/checkpoints"))
  c.stage2.update(dict(batch_size=256))
  c.stage2.crt.update(dict(epochs=10, batch_size=256, lr=0.1, weight_decay=5e-4))
  c.stage2.lws.update(dict(epochs=5, batch_size=256, lr=0.1))
  c.stage2.finetune.update(dict(epochs=10, batch_size=256, base_lr=0.1, weight_decay=5e-4))
  return c
