"""CIFAR-100-LT with weight balancing (Alshammari et al., CVPR 2022), beside the paper's stage-2 methods.

Data as configs/cifar100_lt_r32.py (IR 100, the LDAM profile 500..5 that their code takes, 50 images per class held
out for validation, the first three classes training on 450; their code keeps the test split's best epoch). The values of
ShadeAlsha/LTR-weight-balancing:
- Model (utils/network_arch_resnet.py, ResnetEncoder(34)): torchvision's ResNet-34 with a 3x3 stride-1 stem
  conv and no max-pool, 512-d features, a linear classifier: model.name='resnet34_cifar'.
- Stage 1 (demo1_first-stage-training.py, 'with_WD_model'): cross-entropy, instance-balanced (a shuffled
  DataLoader), batch 64, SGD momentum 0.9, lr 0.01 (0.04 per 256) cosine to 0 without warm-up
  (CosineAnnealingLR), weight decay 5e-3 (their grid search), 320 epochs; pad 4 + random crop 32 + flip, the
  LDAM code's mean/std (utils/dataset_CIFAR100LT.py).
- Stage 2 "wb" (demo2_second-stage-training.py, 'MaxNorm_WD'): base.py's stage2.wb, the stage-1 classifier
  fine-tuned 10 epochs, batch 64, lr 0.01 cosine, weight decay 0.1, MaxNorm radius min + 0.1 (max - min) of
  the stage-1 class norms (utils/regularizers.py), class-balanced loss, beta 0.9999 (utils/class_balanced_loss.py,
  'softmax'), through the frozen backbone on augmented images with its BatchNorm in training mode, as their
  code trains it; projected after every step (the paper; their code projects once per epoch:
  --config.stage2.wb.project_every=epoch). "wb_cached" runs the same on the cached stage-1 features.
The paper's methods (stage2.methods) run beside it.

Published (Alshammari et al. 2022, CIFAR-100-LT IR 100, top-1 %): 46.08 after stage 1 (cross-entropy with
weight decay; its author says the paper's stage 1 ran 200 epochs, the released code 320: that repository's issue
15), 53.35 after stage 2 (Many / Medium / Few 72.60 / 51.86 / 32.63). The logs in their repository
(exp/demo_*/*_note_bestModel.log) show 47.18 and 51.98 for the demo runs.
"""
from configs import cifar100_lt_r32
from configs import cifar10_lt_r32


def weight_balancing(c):
  """Weight balancing's model, stage 1 and stage 2 on CIFAR-LT data (the CIFAR-10 config takes it from here)."""
  c.model.name = "resnet34_cifar"
  c.train.update(
      dict(epochs=320, batch_size=64, base_lr=0.04, weight_decay=5e-3, warmup_epochs=0.0, schedule="cosine",
           lr_steps=()))
  c.stage2.methods += ("wb", "wb_cached")


def get_config():
  c = cifar10_lt_r32.get_config()
  cifar100_lt_r32.cifar100(c)
  weight_balancing(c)
  return c
