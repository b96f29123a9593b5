"""iNaturalist 2018 with ResNet-50: Table 3 and Table 7 of the paper.

Data: the official train2018.json and val2018.json in data.list_dir, their file_name paths
(train_val2018/...) under data.image_root; 8142 classes, 437,513 training images (1000..2 per class).
As in the paper, val2018 (24,426 images, 3 per class) is the test split.
Validation (to choose tau; never the test split): 1 image per class held out of train2018, only from
the classes with at least 3 training images (data.val_per_class=1, data.val_min_class_size=3), so that
every class keeps at least 2 training images and the classes of 2 keep both. That takes at most 8,142
images (1.9%) out of stage-1 and stage-2 training; accuracies on validation skip the classes without a
validation image. To train on the whole of train2018 as the paper did, pass
--config.data.val_per_class=0 --config.stage2.methods="('joint','ncm','crt','crt_cached','lws','lws_cached')"
(tau-norm and logit adjustment need a validation split).
The reference's values (facebookresearch/classifier-balancing); base.py holds those of ImageNet-LT, and this
file states where iNaturalist's differ:
- Stage 1 (config/iNaturalist18/feat_unifrom.yaml): 90 epochs (200 with --config.train.epochs=200),
  instance-balanced, batch 512, SGD momentum 0.9, lr 0.2 (0.1 per 256) cosine to 0, weight decay 1e-4;
  RandomResizedCrop 224 and flip, no colour jitter; mean (0.466, 0.471, 0.380), std (0.195, 0.194, 0.192)
  (data/dataloader.py).
- Stage 2: cRT (config/iNaturalist18/cls_crt.yaml) 30 epochs, lr 0.2 cosine, batch 512, weight decay 1e-4;
  LWS (cls_lws.yaml) 5 epochs, lr 0.2, batch 512, weight decay 1e-4; each through the backbone (the paper's rows)
  and on cached features (their variants).

Paper (top-1 %, Many / Medium / Few / All; 90 epochs, then 200 epochs), Table 7:
  Joint 72.2 / 63.0 / 57.2 / 61.7, 75.7 / 66.9 / 61.7 / 65.8; NCM 55.5 / 57.9 / 59.3 / 58.2,
  61.0 / 63.5 / 63.3 / 63.1; cRT 69.0 / 66.0 / 63.2 / 65.2, 73.2 / 68.8 / 66.1 / 68.2 (Table 3 says 67.6);
  tau-norm 65.6 / 65.3 / 65.9 / 65.6, 71.1 / 68.9 / 69.3 / 69.3.
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(
      dict(name="inat2018", kind="inat_json", num_classes=8142, train_json="train2018.json", test_json="val2018.json",
           val_per_class=1, val_min_class_size=3, color_jitter=0.0, mean=(0.466, 0.471, 0.380),
           std=(0.195, 0.194, 0.192)))
  c.model.name = "resnet50"
  c.train.weight_decay = 1e-4
  base.crt_schedule(c, epochs=30, weight_decay=1e-4)
  base.lws_schedule(c, weight_decay=1e-4)
  return c
