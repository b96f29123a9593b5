"""Shared defaults of every experiment. An experiment file calls get_config() and overrides fields.

Every key exists here, so a misspelt override (--config.train.lr_base=...) is an error, not a silent no-op.
"""
import ml_collections


def _recipe(label: str, frozen: tuple[str, ...], reinit_head: bool = False, lr_scale: float = 1.0, loss: str = "ce",
            lr_mults: tuple = (), head_lws: bool = False, paper: bool = True) -> ml_collections.ConfigDict:
  """A stage-2 recipe through the backbone (ltr_jax.finetune): its report label, frozen patterns (BatchNorm
  statistics they leave out are re-estimated: MiSLAS's shift learning), whether the stage-1 head is replaced by a
  new one, its learning rate as a multiple of stage2.finetune.base_lr and per-group multipliers, its loss (a
  train.loss name, with train's loss hyper-parameters), learned per-class logit scales on the head, and whether
  it is a method of the paper (Kang et al. 2020) or a later one."""
  return ml_collections.ConfigDict(dict(label=label, frozen=frozen, reinit_head=reinit_head, lr_scale=lr_scale,
                                        loss=loss, lr_mults=lr_mults, head_lws=head_lws, paper=paper))


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # initialisation, sampling and augmentation (the data subset has its own: data.seed)

  c.data = ml_collections.ConfigDict(dict(
      name="",
      kind="fashion_mnist",  # 'fashion_mnist' | 'list' | 'inat_json' | 'tfds'
      data_dir="",  # IDX directory, or the TFDS data_dir
      num_classes=0,  # 0: taken from the training split
      # kind = 'list': list files (`relative/path label` per line) relative to list_dir, images under image_root.
      list_dir="", image_root="", train_list="", val_list="", test_list="",
      # kind = 'inat_json': iNaturalist's official JSON files (train2018.json, ...) relative to list_dir,
      # their file_name entries relative to image_root.
      train_json="", val_json="", test_json="",
      # kind = 'tfds'
      tfds_name="", train_split="train", val_split="", test_split="test",
      # Long-tailed subset of the training split: n_i = int(n_max * IR^(-i/(C-1))); 0 = keep as is.
      imbalance_ratio=0.0, n_max=0,
      class_order_seed=ml_collections.FieldReference(None, field_type=int),  # None: class-id order
      seed=0,  # which images form the long-tailed subset and the validation split
      val_per_class=0,  # >0: hold a balanced validation split out of unused training images
      # Without imbalance_ratio, classes with fewer training images than this give none to validation.
      val_min_class_size=0,
      many_threshold=100, few_threshold=20,  # Many > 100 >= Medium >= 20 > Few training images
      image_size=224,
      train_transform="random_resized_crop",  # | 'pad_crop_flip'
      eval_transform="resize_center_crop",  # | 'identity'
      resize=256, color_jitter=0.4,
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),  # in [0, 1] units, per channel
      num_workers=-1,  # grain worker processes per host; -1: one per core (the host's cores feed the accelerators)
      # Before any work: every listed image exists, every label in [0, C), no empty training class
      # (ltr_jax.data.preflight). False where stat is slow (some network filesystems).
      preflight=True,
  ))

  c.model = ml_collections.ConfigDict(dict(
      name="resnext50_32x4d",
      dtype="float32",  # | 'bfloat16'
      head="linear",  # | 'cosine': s * cos(z, w_j), no bias (LDAM's normalised classifier)
      head_scale=30.0,  # s of the cosine head
  ))

  c.train = ml_collections.ConfigDict(dict(
      sampling="instance",  # 'instance' | 'class' | 'sqrt' | 'progressive'
      mixup_alpha=0.0,  # > 0: mixup of every global batch, lam ~ Beta(alpha, alpha) (MiSLAS's stage 1); 0: off
      # Deferred re-sampling (DRS, Cao et al. 2019): class-balanced sampling from this (0-based) epoch on;
      # -1: never. The loss-side counterpart, DRW, is train.loss='ldam_drw' with train.drw_epoch.
      drs_epoch=-1,
      # | focal | cb_ce | cb_focal | ldam | ldam_drw (both need model.head='cosine') | balanced_softmax |
      # logit_adjusted | las
      loss="ce",
      # Loss hyper-parameters (ltr_jax.losses.LossHyper): focal gamma, class-balanced beta, the largest LDAM
      # margin, the epoch at which DRW switches to class-balanced weights, the logit-adjustment tau, and
      # MiSLAS's label-aware smoothing (epsilon of the largest and smallest class, and the mapping between).
      focal_gamma=2.0, cb_beta=0.9999, ldam_max_m=0.5, drw_epoch=160.0, logit_adjust_tau=1.0,
      las_eps_head=0.4, las_eps_tail=0.1, las_mapping="concave",
      epochs=90,
      batch_size=512,  # global, over all devices and hosts
      base_lr=0.1,  # per 256 images: lr = base_lr * batch_size / 256
      momentum=0.9, nesterov=False,
      weight_decay=5e-4,
      warmup_epochs=0.0,
      # Parameter-path patterns (regular expressions over paths like 'backbone/stage1/block0/conv1/kernel', see
      # ltr_jax.masks): `frozen` parameters and BatchNorm statistics stay as initialised, and their BatchNorm
      # layers run in inference mode; lr_mults: (pattern, multiplier) pairs, the first match sets a
      # parameter's learning rate to multiplier x the schedule. '{last_stage}' is the backbone's last stage.
      # E.g. the last block and the head only: frozen=("backbone/(?!{last_stage}/).*",).
      frozen=(),
      lr_mults=(),
      init_from="",  # an Orbax checkpoint directory to start the backbone from (e.g. imported ImageNet weights)
      eval_every_epochs=1,
      checkpoint_every_epochs=1,
      max_checkpoints=2,
      log_every_steps=50,
  ))

  c.stage2 = ml_collections.ConfigDict(dict(
      # Names of ltr_jax.decouple.METHODS (on cached features) and of stage2.finetune.recipes (through the
      # frozen backbone, on augmented images).
      methods=("joint", "ncm", "crt", "tau_norm", "lws", "logit_adjust"),
      batch_size=512,  # feature extraction
      ncm_metric="euclidean",  # | 'cosine' (the paper's) | 'reference_cos' (the reference's un-normalised centroids)
      taus=tuple(i / 10 for i in range(21)),  # tau sweep for tau-norm and logit adjustment
      crt=ml_collections.ConfigDict(dict(epochs=10, batch_size=512, lr=0.2, weight_decay=5e-4)),
      # The reference's cls_lws.yaml decays the scales s like any parameter (5e-4 on ImageNet-LT and Places-LT).
      lws=ml_collections.ConfigDict(dict(epochs=5, batch_size=512, lr=0.2, weight_decay=5e-4)),
      # Weight balancing's stage 2 (Alshammari et al. 2022), the values of its code on CIFAR-100-LT
      # (demo2_second-stage-training.py): the stage-1 head fine-tuned 10 epochs, batch 64, SGD lr 0.01 cosine,
      # weight decay 0.1, MaxNorm radius min + 0.1 (max - min) of the head's class norms, Cui's class-balanced
      # weights with beta 0.9999 on the loss its code computes ('softmax_bce'; 'ce' is Cui's softmax CE).
      wb=ml_collections.ConfigDict(dict(epochs=10, batch_size=64, lr=0.01, weight_decay=0.1, max_norm=0.1,
                                        cb_beta=0.9999, loss="softmax_bce")),
      # Training through the backbone on augmented images with class-balanced sampling (ltr_jax.finetune):
      # a shared schedule (base_lr per 256 images) and the recipes, each a method name for stage2.methods.
      finetune=ml_collections.ConfigDict(dict(
          epochs=10, batch_size=512, base_lr=0.1, weight_decay=5e-4,
          recipes=ml_collections.ConfigDict(dict(
              # The reference cRT recipe: a new head on the frozen backbone, stage-1 augmentation.
              crt_augmented=_recipe("cRT (reference recipe)", ("backbone/.*",), reinit_head=True),
              # Table 1 of the paper: fine-tune the stage-1 model, with the part named frozen.
              classifier=_recipe("C", ("backbone/.*",)),
              last_block_classifier=_recipe("LB+C", ("backbone/(?!{last_stage}/).*",)),
              backbone_classifier=_recipe("B+C", ()),
              backbone_classifier_tenth_lr=_recipe("B+C (0.1× lr)", (), lr_scale=0.1),
              # MiSLAS's stage 2 (Zhong et al. 2021, train_stage2.py): the stage-1 classifier and learned
              # per-class scales trained with label-aware smoothing (train.las_*), the classifier at
              # lr_factor x the lr (0.05 on ImageNet-LT, iNaturalist and Places-LT), while every BatchNorm of
              # the frozen backbone re-estimates its statistics on the re-balanced images (shift learning).
              mislas=_recipe("MiSLAS", ("backbone/.*/(kernel|scale|bias)",), loss="las",
                             lr_mults=(("head/(kernel|bias)", 0.05),), head_lws=True, paper=False),
          )),
      )),
  ))

  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=1, process_id=0, auto=False))
  return c
