"""Shared defaults of every experiment. An experiment file calls get_config() and overrides fields.

Every key exists here, so a misspelt override (--config.train.lr_base=...) is an error, not a silent no-op.
"""
import ml_collections

# Frozen patterns of the methods through the backbone (ltr_jax.masks): every backbone parameter, but not its
# BatchNorm statistics, so BatchNorm runs in training mode and re-estimates them (the reference's `fix: true` with
# `model.train()`); and everything of the backbone, statistics included (BatchNorm in inference mode).
BACKBONE_PARAMS = "backbone/.*/(kernel|scale|bias)"
BACKBONE = "backbone/.*"
TAUS = tuple(i / 10 for i in range(21))  # the reference's tau sweep, linspace(0, 2, 21)
CACHED = "on cached, un-augmented features of the backbone in inference mode (fast)"  # what the fast variants change


def entry(type: str, label: str, paper: bool = True, variant: str = "", **values) -> ml_collections.ConfigDict:
  """A stage-2 config entry: `type` names the record of ltr_jax.stage2.registry.METHODS it runs, `label` its row
  in reports, `paper` whether it is a method of Kang et al. 2020 (else a later one, marked in reports), `variant`
  what it changes from its source's recipe ('' for none); `values` are the hyper-parameters that record reads."""
  return ml_collections.ConfigDict(dict(type=type, label=label, paper=paper, variant=variant, **values))


def through_backbone(type: str, label: str, epochs: int, batch_size: int, lr: float, weight_decay: float,
                     sampling: str = "class", frozen: tuple[str, ...] = (BACKBONE_PARAMS,), lr_mults: tuple = (),
                     loss: str = "ce", accumulate_steps: int = 1, **values) -> ml_collections.ConfigDict:
  """An entry of a method through the backbone (ltr_jax.stage2.backbone): its schedule (lr at this batch size,
  cosine to 0, SGD momentum 0.9), sampling, frozen patterns and learning-rate groups (ltr_jax.masks), its loss (a
  name of ltr_jax.losses) and the loss hyper-parameters it sets (the others at their papers' defaults), gradient
  accumulation (micro-batches per step), and what its type reads besides (`values`)."""
  return entry(type, label, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, sampling=sampling,
               frozen=frozen, lr_mults=lr_mults, loss=loss, accumulate_steps=accumulate_steps, **values)


def finetune(label: str, epochs: int, batch_size: int, lr: float, weight_decay: float, reinit_head: bool = False,
             head_lws: bool = False, **values) -> ml_collections.ConfigDict:
  """An entry of type 'finetune' (cRT, LWS, Table 1, MiSLAS's stage 2): a new head (reinit_head) or the stage-1
  one, with learned per-class logit scales (head_lws) or not."""
  return through_backbone("finetune", label, epochs, batch_size, lr, weight_decay, reinit_head=reinit_head,
                          head_lws=head_lws, **values)


def mislas_stage2(eps_head: float, eps_tail: float, shift_bn: bool, lr_factor: float) -> dict:
  """MiSLAS's per-dataset stage-2 values as stage2.mislas keys: label-aware smoothing from eps_head (largest class)
  to eps_tail (smallest), shift learning (every BatchNorm of the frozen backbone re-estimates its statistics) or
  not, the classifier at lr_factor x the lr (its learned scales at 1x)."""
  return dict(las_eps_head=eps_head, las_eps_tail=eps_tail, frozen=(BACKBONE_PARAMS if shift_bn else BACKBONE,),
              lr_mults=(("head/(kernel|bias)", lr_factor),))


CRT = ("crt", "crt_frozen_bn", "crt_cached")  # the paper's cRT and its variants
TABLE1 = ("classifier", "last_block_classifier", "backbone_classifier", "backbone_classifier_tenth_lr")
LWS = ("lws", "lws_cached")


def crt_schedule(c: ml_collections.ConfigDict, **values) -> None:
  """Sets `values` (epochs, batch_size, lr, weight_decay) of cRT, its variants and Table 1's fine-tuning variants,
  which run on cRT's schedule (B+C (0.1x lr) at a tenth of its lr)."""
  for name in CRT + TABLE1:
    c.stage2[name].update(values)
  c.stage2.backbone_classifier_tenth_lr.lr = c.stage2.crt.lr / 10


def lws_schedule(c: ml_collections.ConfigDict, **values) -> None:
  """Sets `values` (epochs, batch_size, lr, weight_decay) of LWS and its variant on cached features."""
  for name in LWS:
    c.stage2[name].update(values)


# OpenAI CLIP's normalisation (LIFT: shijxcs/LIFT @ 661ead9, trainer.py:94-95).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FOUNDATION_METHODS = ("joint", "linear_probe", "ncm", "crt_cached", "tau_norm", "lws_cached", "logit_adjust", "lift")


def frozen_clip(c: ml_collections.ConfigDict, name: str = "clip_vit_b16") -> None:
  """A dataset config turned into one of a frozen CLIP visual tower (config key model.name `name`), imported with
  its zero-shot head (python -m ltr_jax.import_torch --kind=openai_clip) and run with --mode=decouple: zero-shot
  CLIP is the `joint` row, a linear probe (cRT on instance-balanced features), the decoupled classifiers on its
  cached features, and LIFT (stage2.lift). LIFT's preprocessing for every dataset (trainer.py:102-114):
  RandomResizedCrop 224 (bilinear) and flip, no colour jitter; resize 256 (224 * 8 // 7, :142-144) and centre crop
  224 at test; CLIP's mean and std. Stage 1 is the imported model: train.init_from is cleared."""
  c.model.name = name
  c.data.update(
      dict(image_size=224, train_transform="random_resized_crop", eval_transform="resize_center_crop", resize=256,
           color_jitter=0.0, interpolation="bilinear", mean=CLIP_MEAN, std=CLIP_STD))
  c.train.init_from = ""
  c.stage2.methods = FOUNDATION_METHODS
  c.stage2.joint.update(dict(label="Zero-shot CLIP", paper=False))
  # LIFT's schedule (configs/model/clip_vit_b16.yaml:13-17) on a linear classifier over the frozen features.
  c.stage2.linear_probe = entry("crt_on_features", "Linear probe", paper=False, epochs=10, batch_size=128, lr=0.01,
                                weight_decay=5e-4, sampling="instance")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # initialisation, sampling and augmentation (the data subset has its own: data.seed)

  # The sections below are tables, one key per line with its comment: kept as written (yapf: disable).
  # yapf: disable
  c.data = ml_collections.ConfigDict(dict(
      name="",
      kind="fashion_mnist",  # of ltr_jax.data.kinds.KINDS: 'fashion_mnist' | 'list' | 'inat_json' | 'folder' | 'tfds'
      # IDX directory, or the TFDS data_dir ('': TFDS's default, ~/tensorflow_datasets; kind 'tfds' reads a
      # gs://bucket/... one where gcsfs is installed).
      data_dir="",
      # kinds 'tfds', 'fashion_mnist': let TFDS download and prepare a dataset not prepared in data_dir (needs
      # network, and TensorFlow for TFDS's builders). False: a dataset not prepared stops at once, saying how to.
      download=False,
      num_classes=0,  # 0: taken from the training split
      # kind = 'list': list files (`relative/path label` per line) relative to list_dir, images under image_root.
      # Local paths (ltr_jax reads them with open and Pillow): a bucket is mounted first (gcsfuse).
      list_dir="", image_root="", train_list="", val_list="", test_list="",
      # kind = 'list': a file of the class names (one per line in label order, or `wnid name` lines), relative to
      # list_dir; reports (and CLIP's prompts) name the classes by it.
      class_names="",
      # kind = 'folder': image_root holds train/<class>/*, an optional val/<class>/* and test/<class>/*; the classes
      # are the sorted folder names of train/.
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
      # With imbalance_ratio: a class with fewer than val_per_class unused images gives the difference out of its
      # long-tailed training images (its training count drops by as many); False: such a class is an error.
      val_fill_from_train=False,
      # Without imbalance_ratio, classes with fewer training images than this give none to validation.
      val_min_class_size=0,
      many_threshold=100, few_threshold=20,  # Many > 100 >= Medium >= 20 > Few training images
      image_size=224,
      train_transform="random_resized_crop",  # | 'pad_crop_flip'
      eval_transform="resize_center_crop",  # | 'identity'
      resize=256, color_jitter=0.4,
      interpolation="bilinear",  # | 'bicubic' (OpenAI CLIP's preprocessing): the resize of both transforms
      # Five-crop test (stage2.five_crop): the image's shorter side resized to this, then five image_size crops
      # (LIFT's expand: 224 + 24, shijxcs/LIFT @ 661ead9 trainer.py:116-122).
      five_crop_resize=248,
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),  # in [0, 1] units, per channel
      num_workers=-1,  # grain worker processes per host; -1: one per core (the host's cores feed the accelerators)
      # Before any work: every listed image exists, every label in [0, C), no empty training class
      # (ltr_jax.data.preflight). False where stat is slow (some network filesystems).
      preflight=True,
      # The data check also decodes every image of every split (threads over the cores) and names those that do
      # not decode; otherwise a corrupt image stops training when first drawn.
      preflight_decode=False,
  ))

  c.model = ml_collections.ConfigDict(dict(
      name="resnext50_32x4d",
      dtype="float32",  # | 'bfloat16'
      head="linear",  # | 'cosine': s * cos(z, w_j), no bias (LDAM's normalised classifier)
      head_scale=30.0,  # s of the cosine head
      remat=False,  # a ViT: recompute each block's activations in the backward pass (less memory, more compute)
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
      # Gradient accumulation: each step's batch goes through the model in this many micro-batches (the memory of
      # one); batch_size must divide into them over the devices.
      accumulate_steps=1,
      # 'cosine': to 0 at the last step; 'step': the peak lr times the factor of the last (0-based epoch, factor)
      # of lr_steps that has begun, e.g. ((160, 0.01), (180, 1e-4)) (LDAM-DRW's CIFAR schedule).
      schedule="cosine",
      lr_steps=(),
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
      # A rerun in a workdir whose stage-1 checkpoint was made under other values of the keys that shape the model
      # (data, model, train; ltr_jax.train.RERUN_FREE lists those that do not) stops, naming them; True continues
      # from that checkpoint with the new values.
      resume_changed=False,
  ))

  # Stage 2: one entry per method, each naming the record of ltr_jax.stage2.registry it runs (`type`), its report
  # label, and its hyper-parameters (what its source runs).
  # classifier-balancing: config/ImageNet_LT/cls_crt.yaml and cls_lws.yaml at f162ade (cRT 10 / LWS 5 epochs,
  # batch 512, lr 0.2 cosine, weight decay 5e-4 on the classifier's parameters, the LWS scales included).
  c.stage2 = ml_collections.ConfigDict(dict(
      methods=("joint", "ncm", "crt", "crt_cached", "tau_norm", "lws", "lws_cached", "logit_adjust"),
      batch_size=512,  # feature extraction
      feature_dtype="float32",  # | 'bfloat16' | 'float16': the feature cache's (half the memory; computed in float32)
      # Methods whose backbone + head are written to workdir/stage2/<name>/checkpoints: names, 'best' (the best
      # validation All) or 'all'. The methods through the backbone are always there (they run there).
      export=("best",),
      # Methods that also get a row of their five-crop test: the logits of the four corner and the centre crops
      # (data.five_crop_resize) averaged, as LIFT's test-time ensembling (its headline numbers) does.
      five_crop=(),
      joint=entry("joint", "Joint"),
      # 'euclidean' | 'cosine' (the paper's) | 'reference_cos' (the reference KNNClassifier's 'cos': x.c_j / d)
      ncm=entry("ncm", "NCM", metric="euclidean"),
      tau_norm=entry("tau_norm", "τ-norm", taus=TAUS),
      logit_adjust=entry("logit_adjust", "Logit adj.", paper=False, taus=TAUS),
      crt=finetune("cRT", 10, 512, 0.2, 5e-4, reinit_head=True),
      crt_frozen_bn=finetune("cRT (frozen BN statistics)", 10, 512, 0.2, 5e-4, reinit_head=True, frozen=(BACKBONE,),
                             variant="the frozen backbone's BatchNorm runs in inference mode (its statistics stay "
                                     "stage 1's)"),
      crt_cached=entry("crt_on_features", "cRT (cached features)", variant=CACHED, epochs=10, batch_size=512, lr=0.2,
                       weight_decay=5e-4, sampling="class"),
      lws=finetune("LWS", 5, 512, 0.2, 5e-4, head_lws=True, frozen=(BACKBONE_PARAMS, "head/(kernel|bias)")),
      lws_cached=entry("lws_on_features", "LWS (cached features)", variant=CACHED, epochs=5, batch_size=512, lr=0.2,
                       weight_decay=5e-4),
      # Table 1 of the paper: the stage-1 model fine-tuned with class-balanced sampling on the cRT schedule, the
      # part named frozen (BatchNorm in training mode throughout, as the reference runs every stage-2 network).
      classifier=finetune("C", 10, 512, 0.2, 5e-4),
      last_block_classifier=finetune("LB+C", 10, 512, 0.2, 5e-4,
                                     frozen=("backbone/(?!{last_stage}/).*/(kernel|scale|bias)",)),
      backbone_classifier=finetune("B+C", 10, 512, 0.2, 5e-4, frozen=()),
      backbone_classifier_tenth_lr=finetune("B+C (0.1× lr)", 10, 512, 0.02, 5e-4, frozen=()),
      # Weight balancing's stage 2 (Alshammari et al. 2022), the values of its code on CIFAR-100-LT
      # (ShadeAlsha/LTR-weight-balancing at e89f292, demo2_second-stage-training / utils/trainval.py): the stage-1
      # classifier trained 10 epochs through the frozen encoder in training mode, batch 64, SGD lr 0.01 cosine,
      # weight decay 0.1, instance-balanced batches, Cui's class-balanced weights (beta 0.9999) on the softmax-BCE
      # of its CB_loss('softmax'), MaxNorm radius min + 0.1 (max - min) of the stage-1 class norms; projected
      # after every step ('step', the paper and its author in that repository's issue 5) or every epoch ('epoch',
      # its released code).
      wb=through_backbone("wb", "WB", 10, 64, 0.01, 0.1, paper=False, sampling="instance", loss="cb_softmax_bce",
                          cb_beta=0.9999, max_norm=0.1, project_every="step"),
      wb_cached=entry("wb_on_features", "WB (cached features)", paper=False, variant=CACHED, epochs=10,
                      batch_size=64, lr=0.01, weight_decay=0.1, sampling="instance", loss="cb_softmax_bce",
                      cb_beta=0.9999, max_norm=0.1, project_every="step"),
      # MiSLAS's stage 2 (Zhong et al. 2021, train_stage2.py): the stage-1 classifier and learned per-class scales
      # trained with label-aware smoothing, the classifier at 0.05 x the lr (ImageNet-LT, iNaturalist, Places-LT),
      # while every BatchNorm of the frozen backbone re-estimates its statistics (shift learning).
      mislas=finetune("MiSLAS", 10, 512, 0.2, 5e-4, paper=False, lr_mults=(("head/(kernel|bias)", 0.05),),
                      head_lws=True, loss="las", las_eps_head=0.4, las_eps_tail=0.1, las_mapping="concave",
                      per_imbalance_ratio=()),
      # LIFT (Shi et al., ICML 2024) on a ViT (shijxcs/LIFT at 661ead9, configs/model/clip_vit_b16.yaml:13-22,
      # models/peft_vit.py, trainer.py): an AdaptFormer beside every block's MLP (bottleneck 0: 2^floor(log2(C / 2L))),
      # trained with a cosine head of scale 25 without bias (the joint classifier's class vectors, normalised: an
      # imported CLIP's zero-shot head gives its text initialisation), everything else frozen; logit-adjusted
      # cross-entropy (tau 1); SGD lr 0.01 at batch 128, momentum 0.9, weight decay 5e-4, cosine over 10 epochs;
      # instance-balanced batches (no re-sampling). adapter='lora': LoRA on q and v instead; 'none': what `frozen`
      # leaves trains, e.g. BitFit frozen=("backbone/(?!.*/bias$).*",), LayerNorm tuning
      # frozen=("backbone/(?!.*/ln_[^/]*/).*",).
      lift=through_backbone("lift", "LIFT", 10, 128, 0.01, 5e-4, paper=False, sampling="instance",
                            frozen=("backbone/(?!.*/(adapter|lora_q|lora_v)/).*",), loss="logit_adjusted", logit_adjust_tau=1.0,
                            adapter="adaptformer", adapter_dim=0, head_scale=25.0),
  ))

  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=1, process_id=0, auto=False))
  # yapf: enable
  return c
