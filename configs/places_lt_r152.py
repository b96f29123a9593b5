"""Places-LT with ResNet-152 initialised from ImageNet: Table 4 of the paper.

Data: the OLTR list files Places_LT_train.txt / _val.txt / _test.txt in data.list_dir (62,500 / 7,300 /
36,500 images, 365 classes; 131 many, 163 medium, 71 few), the Places-365 images under data.image_root.
tau is chosen on Places_LT_val, results are reported on Places_LT_test. Augmentation and normalisation as
ImageNet-LT (base.py): RandomResizedCrop 224, flip, ColorJitter 0.4; resize 256, centre crop 224.
Initialisation: train.init_from, an ImageNet-pretrained ResNet-152 imported once (the head is new):
  python -m ltr_jax.import_torch --config=configs/places_lt_r152.py --kind=torchvision --no_head
      --checkpoint=resnet152-394f9c45.pth --workdir=pretrained/resnet152_imagenet
Stage 1, the paper's protocol ("we then fine-tune the backbone"; it follows OLTR, Liu et al. 2019) with the values of
OLTR's released config/Places_LT/stage_1.py (zhmiao/OpenLongTailRecognition-OLTR at f50e375, lines 8-28): every
layer trains ('fix': False) with BatchNorm in training mode, 30 epochs, instance-balanced, batch 128, SGD momentum
0.9, weight decay 5e-4, classifier lr 0.1 (base_lr 0.2 per 256) and backbone lr 0.001 (train.lr_mults: 0.01 x the
head's), StepLR(step_size=10, gamma=0.1) stepped after each epoch: x0.1 from 0-based epoch 10, x0.01 from 20
(train.schedule='step').
The last stage only (the rest frozen, its BatchNorm in inference mode) is MiSLAS's convention, not this protocol:
--config.train.frozen="('backbone/(?!{last_stage}/).*',)" (configs/places_lt_r152_mislas.py runs it).
Deviations from OLTR's file that ltr_jax does not offer: it starts from Caffe-converted ImageNet weights (ltr_jax
imports torchvision's), and it inserts a 2048 -> 512 fc before the classifier ('use_fc': True), which the
reference's Places-LT stage-2 configs (feat_dim 2048, use_fc false) do not have, nor does ltr_jax.
Stage 2, the reference's values (facebookresearch/classifier-balancing): cRT (config/Places_LT/cls_crt.yaml)
10 epochs, lr 0.1 cosine, batch 256, weight decay 5e-4; LWS (cls_lws.yaml) 5 epochs, lr 0.1, batch 256, weight
decay 5e-4; each through the backbone with BatchNorm in training mode (the paper's rows) and on cached features
(their variants).

Paper (top-1 %, Many / Medium / Few / All): Joint 45.7 / 27.3 / 8.2 / 30.2; NCM 40.4 / 37.1 / 27.3 / 36.4;
cRT 42.0 / 37.6 / 24.9 / 36.7; tau-norm 37.8 / 40.7 / 31.8 / 37.9; LWS 37.6 (All).
"""
from configs import base


def get_config():
  c = base.get_config()
  c.data.update(
      dict(name="places_lt", kind="list", num_classes=365, train_list="Places_LT_train.txt",
           val_list="Places_LT_val.txt", test_list="Places_LT_test.txt"))
  c.model.name = "resnet152"
  c.train.update(
      dict(epochs=30, batch_size=128, base_lr=0.2, lr_mults=(("backbone/.*", 0.01),), schedule="step",
           lr_steps=((10, 0.1), (20, 0.01)), init_from="pretrained/resnet152_imagenet/checkpoints"))
  c.stage2.batch_size = 256
  base.crt_schedule(c, batch_size=256, lr=0.1)
  base.lws_schedule(c, batch_size=256, lr=0.1)
  return c
