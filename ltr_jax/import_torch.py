"""Import PyTorch weights: ResNets (torchvision layout, classifier-balancing checkpoints) and ViTs (CLIP, timm).

python -m ltr_jax.import_torch --config=configs/X.py --checkpoint=PATH --workdir=DIR
    [--kind=reference|torchvision|openai_clip|open_clip|timm] [--no_head] [--prompts=single|ensemble]
    [--allow_pickle]

writes `DIR/checkpoints` as a stage-1 checkpoint (step 0, the `model` and `meta` items, no optimizer state)
that --mode=decouple, --mode=evaluate and train.init_from then use (--mode=train starts from it with a fresh
optimizer). The key mapping is the one documented in models/resnet.py.
- kind='reference': a final_model_checkpoint.pth of facebookresearch/classifier-balancing, a dict whose
  'state_dict_best' (else 'state_dict') holds {'feat_model': ..., 'classifier': ...} with DataParallel's
  'module.' prefixes; the backbone uses torchvision names, the DotProduct classifier is `fc`.
- kind='torchvision': a plain state_dict (torchvision's downloads, torch.save(model.state_dict())).
num_classes is the row count of fc.weight (checked against config key data.num_classes when that is
non-zero); with head=False (e.g. an ImageNet backbone for Places-LT, the head stays freshly initialised)
it is config key data.num_classes, which must then be set.
ViT kinds (ltr_jax.import_vit maps the names; .pt TorchScript, .pth, .bin, .safetensors), for config key model.name
one of ltr_jax.models.vit.ARCHITECTURES, whose table gives what the weights cannot (the activation, LayerNorm eps,
heads); the weights must have its sizes, the position embedding is resampled to config key data.image_size:
- 'openai_clip' (OpenAI's released .pt) and 'open_clip' (open_clip's files): the visual tower is the backbone, and
  the head is CLIP's zero-shot classifier of the config's data (models.clip_text.zero_shot_head): the text tower
  embeds each class name (from the data: a names file, TFDS's label names, iNaturalist's JSON) in the prompt "a
  photo of a {}." (--prompts=single, LIFT's) or CLIP's 80 ImageNet templates (--prompts=ensemble), over the
  projected, normalised image features. Stage 2's `joint` row is then zero-shot CLIP, and LIFT's head starts from
  it. The text tower is not kept: the head is what the data needs of it.
- 'timm': timm's VisionTransformer; its classifier `head` is the head when it has the data's class count.
The class count is the data's (ViT kinds build the data's splits, for its class names and count).
torch is imported only here, inside functions: it stays an optional dependency.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltr_jax import checkpoints, import_vit, models, paths
from ltr_jax.data import datasets, kinds
from ltr_jax.errors import CheckpointError, ConfigError
from ltr_jax.models import LTRModel, clip_text, vit

# (collection, Flax leaf name) -> torch tensor name.
_LEAF_NAMES = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_FROM_TORCH = {4: (2, 3, 1, 0), 2: (1, 0), 1: (0,)}  # Flax axes as a transpose of the torch axes, by ndim
_MODULE_NAMES = {
    "stem_conv": "conv1", "stem_bn": "bn1", "downsample_conv": "downsample.0", "downsample_bn": "downsample.1"
}


def _torch_module(path: tuple[str, ...]) -> str:
  """('backbone', 'stage1', 'block0', 'conv1') -> 'layer1.0.conv1'; ('head',) -> 'fc'."""
  if path[0] == "head":
    return "fc"
  return ".".join(_MODULE_NAMES.get(p, p.replace("stage", "layer").replace("block", "")) for p in path[1:])


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """The torch shape of a Flax leaf of `shape`: kernel [kh, kw, I/g, O] -> [O, I/g, kh, kw], [d, C] -> [C, d]."""
  return tuple(shape[a] for a in np.argsort(_FROM_TORCH[len(shape)]))


def torch_state_dict_to_variables(state_dict: Mapping[str, Any], model: LTRModel, image_shape: tuple[int, int, int],
                                  head: bool = True) -> dict[str, Any]:
  """{'params', 'batch_stats'} of `model` from a torchvision-layout state_dict.

  Every Flax leaf takes exactly one tensor of the matching shape; a missing key, an unexpected key
  (num_batches_tracked aside) or a wrong shape raises CheckpointError. With head=False the `fc` tensors
  are ignored and params has no 'head' entry (merge it into a fresh init).
  """
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, *image_shape), model.dtype))
  expected: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {}
  for collection, tree in shapes.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      names = tuple(k.key for k in path)
      if head or names[0] != "head":
        key = f"{_torch_module(names[:-1])}.{_LEAF_NAMES[collection, names[-1]]}"
        expected[key] = (collection, names, leaf.shape)
  skipped = {k for k in state_dict if k.endswith("num_batches_tracked") or (not head and k.startswith("fc."))}
  missing = sorted(set(expected) - set(state_dict))
  unexpected = sorted(set(state_dict) - set(expected) - skipped)
  if missing:
    raise CheckpointError(f"missing key {import_vit.describe_keys(missing)}, which the model needs")
  if unexpected:
    raise CheckpointError(f"unexpected key {import_vit.describe_keys(unexpected)}, which the model has no variable for")
  variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
  for key, (collection, names, shape) in expected.items():
    value = import_vit.to_numpy(state_dict[key])
    if value.shape != _torch_shape(shape):
      raise CheckpointError(f"key {key!r} has shape {value.shape}, but the model expects {_torch_shape(shape)}")
    node = variables[collection]
    for name in names[:-1]:
      node = node.setdefault(name, {})
    node[names[-1]] = jnp.asarray(value.transpose(_FROM_TORCH[value.ndim]))
  return variables


def _strip_module(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Drops nn.DataParallel's 'module.' prefix."""
  return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_reference_checkpoint(path: str, allow_pickle: bool = False) -> dict[str, Any]:
  """The torchvision-named state_dict (feat_model + classifier) of a classifier-balancing checkpoint."""
  obj = import_vit.torch_load(path, allow_pickle)
  entry = next((k for k in ("state_dict_best", "state_dict") if isinstance(obj, Mapping) and k in obj), None)
  if entry is None:
    found = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: no 'state_dict_best' or 'state_dict' entry (found {found}), so not a "
                          "classifier-balancing checkpoint; --kind=torchvision reads a plain state_dict")
  networks = obj[entry]
  state: dict[str, Any] = {}
  for network in ("feat_model", "classifier"):
    if not isinstance(networks, Mapping) or network not in networks:
      raise CheckpointError(f"{path}: {entry!r} has no {network!r} state_dict")
    for key, value in _strip_module(networks[network]).items():
      if key in state:
        raise CheckpointError(f"{path}: key {key!r} is in both 'feat_model' and 'classifier'")
      state[key] = value
  return state


def load_torchvision_checkpoint(path: str, allow_pickle: bool = False) -> dict[str, Any]:
  """A plain torchvision-layout state_dict file ('module.' prefixes dropped)."""
  obj = import_vit.torch_load(path, allow_pickle)
  if not isinstance(obj, Mapping) or not all(hasattr(v, "shape") for v in obj.values()):
    raise CheckpointError(f"{path}: not a state_dict (a mapping of tensor names to tensors); "
                          "--kind=reference reads classifier-balancing checkpoints")
  return _strip_module(obj)


LOADERS = {"reference": load_reference_checkpoint, "torchvision": load_torchvision_checkpoint}


def _num_classes(state_dict: Mapping[str, Any], config: ml_collections.ConfigDict, path: str, head: bool) -> int:
  """The class count of fc.weight, checked against config key data.num_classes when that is non-zero."""
  configured = config.data.num_classes
  if not head:
    if not configured:
      raise ConfigError("config key data.num_classes: set it (--config.data.num_classes=N) to import "
                        "without the head, whose class count the checkpoint then cannot give")
    return configured
  if "fc.weight" not in state_dict:
    raise CheckpointError(f"{path}: missing key 'fc.weight' (the classifier); pass --no_head to import "
                          "only the backbone")
  num_classes = int(state_dict["fc.weight"].shape[0])
  if configured and configured != num_classes:
    raise CheckpointError(f"{path}: key 'fc.weight' has {num_classes} classes, but config key "
                          f"data.num_classes is {configured}")
  return num_classes


def import_checkpoint(path: str, config: ml_collections.ConfigDict, workdir: str, kind: str = "reference",
                      head: bool = True, allow_pickle: bool = False, prompts: str = "single") -> str:
  """Writes the PyTorch checkpoint `path` as the stage-1 checkpoint of `workdir`; returns its directory.

  The checkpoint holds the imported weights (a fresh head if not `head`; CLIP's zero-shot head of the data's classes
  in `prompts` for the CLIP kinds) and no optimizer state; an existing checkpoint there is never overwritten.
  """
  if kind not in KINDS:
    raise ConfigError(f"--kind={kind}: not one of {', '.join(KINDS)}")
  if prompts not in PROMPTS:
    raise ConfigError(f"--prompts={prompts}: not one of {', '.join(PROMPTS)}")
  directory = paths.join(workdir, "checkpoints")
  if paths.is_dir(directory) and checkpoints.Manager(directory, read_only=True).latest_step() is not None:
    raise CheckpointError(f"{directory} already holds a checkpoint: import into another --workdir")
  extra: dict[str, Any] = {"imported_from": os.path.abspath(path), "imported_as": kind}
  if kind in LOADERS:
    variables, meta = _resnet_variables(path, config, kind, head, allow_pickle)
  else:
    variables, meta, zero_shot = _vit_variables(path, config, kind, head, allow_pickle, PROMPTS[prompts]())
    if zero_shot:
      extra["zero_shot_prompts"] = prompts
  manager = checkpoints.Manager(directory, max_to_keep=config.train.max_checkpoints)
  manager.save(0, variables, {**meta, **extra})
  manager.wait()
  return directory


def _resnet_variables(path: str, config: ml_collections.ConfigDict, kind: str, head: bool,
                      allow_pickle: bool) -> tuple[dict[str, Any], dict[str, Any]]:
  """(variables, meta) of a ResNet checkpoint of `kind` (a key of LOADERS)."""
  state_dict = LOADERS[kind](path, allow_pickle)
  num_classes = _num_classes(state_dict, config, path, head)
  model = models.from_config(config.model, num_classes)
  channels = int(state_dict["conv1.weight"].shape[1]) if "conv1.weight" in state_dict else 3
  image_shape = (config.data.image_size, config.data.image_size, channels)
  try:
    variables = torch_state_dict_to_variables(state_dict, model, image_shape, head)
  except CheckpointError as e:
    raise CheckpointError(f"{path} as model {config.model.name!r}: {e}") from e
  if not head:
    variables["params"]["head"] = models.init_head(model, config.seed)
  return variables, checkpoints.model_meta(config, num_classes, image_shape=image_shape)


VIT_KINDS = ("openai_clip", "open_clip", "timm")
KINDS = (*LOADERS, *VIT_KINDS)
# --prompts: the templates of CLIP's zero-shot head. 'single': "a photo of a {}.", the prompt of LIFT's zero-shot
# CLIP and head initialisation (shijxcs/LIFT @ 661ead9, trainer.py:212, :343-346); 'ensemble': the 80 templates of
# CLIP's ImageNet notebook (ltr_jax/data/imagenet_templates.txt).
PROMPTS = {
    "single": lambda: clip_text.DEFAULT_TEMPLATES,
    "ensemble": lambda: clip_text.read_list(kinds.shipped_file("imagenet_templates.txt"))
}
# The ViT fields a checkpoint's weights give, checked against config key model.name's table.
_CHECKED = ("width", "layers", "patch_size", "mlp_dim", "ln_pre", "patch_bias", "pool", "proj_dim", "qkv_bias")


def _vit_variables(path: str, config: ml_collections.ConfigDict, kind: str, head: bool, allow_pickle: bool,
                   templates: tuple[str, ...] | list[str]) -> tuple[dict[str, Any], dict[str, Any], bool]:
  """(variables, meta, whether the head is CLIP's zero-shot one) of a ViT checkpoint of `kind` (VIT_KINDS)."""
  name = config.model.name
  if name not in vit.ARCHITECTURES:
    raise ConfigError(f"config key model.name: {name!r} is not a ViT, and --kind={kind} imports one: use one of "
                      f"{', '.join(vit.ARCHITECTURES)}")
  table = vit.create_vit(name)
  size = config.data.image_size
  state_dict = import_vit.load_torch_weights(path, allow_pickle)
  try:
    if kind == "timm":
      params, arch = import_vit.timm_vit_to_variables(state_dict, size, table.act, table.ln_eps, table.heads,
                                                      head_as_proj=bool(table.proj_dim))
    else:
      text_heads = clip_text.TEXT_ARCHITECTURES.get(name, {}).get("heads")
      params, arch = import_vit.openai_clip_to_variables(state_dict, size, table.act, table.heads, text_heads)
  except (CheckpointError, ConfigError) as e:
    raise CheckpointError(f"{path} as --kind={kind}: {e}") from e
  found = arch["visual"]
  expected = {key: getattr(table, key) for key in _CHECKED}
  expected["mlp_dim"] = table.mlp_dim or 4 * table.width
  wrong = [f"{key} {found[key]!r} (the table: {expected[key]!r})" for key in _CHECKED if found[key] != expected[key]]
  if wrong:
    raise CheckpointError(f"{path} holds a ViT with {', '.join(wrong)}, so not config key model.name = {name!r}: "
                          f"choose the model.name of these weights ({', '.join(vit.ARCHITECTURES)})")
  splits = datasets.build_splits(config.data)
  channels = params["visual"]["conv1"]["kernel"].shape[2]
  image_shape = (size, size, channels)
  zero_shot = head and kind != "timm"
  if zero_shot:
    head_params, spec = _zero_shot(params, arch, splits, templates, path)
  else:
    head_params, spec = _timm_head(params, splits, config, head, path)
  model = models.from_config(config.model, splits.num_classes, head_spec=spec)
  if head_params is None:
    head_params = models.init_head(model, config.seed)
  variables = {"params": {"backbone": params["visual"], "head": head_params}, "batch_stats": {}}
  _check_shapes(variables, model, image_shape, path)
  meta = checkpoints.model_meta(config, splits.num_classes, head_spec=spec, class_names=splits.names,
                                image_shape=image_shape)
  return jax.tree.map(jnp.asarray, variables), meta, zero_shot


def _zero_shot(params: dict[str, Any], arch: dict[str, Any], splits: datasets.Splits, templates, path: str):
  """CLIP's zero-shot head over the data's class names (models.clip_text.zero_shot_head)."""
  if "text" not in params:
    raise CheckpointError(f"{path} has no text tower (key 'token_embedding.weight'), which CLIP's zero-shot head "
                          "needs: pass --no_head to import the visual tower only")
  if not splits.class_names:
    raise ConfigError("config key data.class_names: the data names no classes, and CLIP's zero-shot head needs "
                      "their names: set data.class_names to a file of them (one per line, in label order), or pass "
                      "--no_head")
  if "logit_scale" not in arch:
    raise CheckpointError(f"{path}: missing key 'logit_scale', which CLIP's zero-shot head needs")
  text = clip_text.CLIPTextTransformer(**arch["text"])
  return clip_text.zero_shot_head(text, params["text"], params["visual"]["proj"], arch["logit_scale"],
                                  splits.class_names, templates)


def _timm_head(params: dict[str, Any], splits: datasets.Splits, config: ml_collections.ConfigDict, head: bool,
               path: str):
  """timm's classifier as the head (None: a fresh one) and config key model.head's spec."""
  spec = models.HeadSpec.of_config(config.model)
  if not head:
    return None, spec
  if "head" not in params:
    raise CheckpointError(f"{path}: missing key 'head.weight' (the classifier); pass --no_head to import only the "
                          "backbone (or --kind=openai_clip / open_clip for CLIP's zero-shot head)")
  classes = params["head"]["kernel"].shape[1]
  if classes != splits.num_classes:
    raise CheckpointError(f"{path}: key 'head.weight' has {classes} classes, the data {splits.num_classes}: pass "
                          "--no_head to import only the backbone")
  if spec != models.HeadSpec():
    raise ConfigError(f"config key model.head: {config.model.head!r}, but timm's classifier is a linear one: set "
                      "model.head='linear', or pass --no_head")
  return params["head"], spec


def _check_shapes(variables: dict[str, Any], model: LTRModel, image_shape: tuple[int, ...], path: str) -> None:
  """CheckpointError unless `variables` has exactly `model`'s params, shape for shape."""
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]}
  have = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_flatten_with_path(variables["params"])[0]}
  problems = sorted(set(want) ^ set(have)) or [k for k in want if tuple(want[k]) != tuple(have[k])]
  if problems:
    raise CheckpointError(f"{path}: the imported params do not fit model {model.backbone.__class__.__name__} at "
                          f"{problems[0]} (and {len(problems) - 1} more)")


def _define_flags() -> None:
  from absl import flags

  from ltr_jax import cli

  cli.define_config_flag()
  flags.DEFINE_string("checkpoint", None, "The PyTorch checkpoint file.")
  flags.DEFINE_string("workdir", None, "Workdir whose checkpoints/ directory receives the stage-1 checkpoint.")
  flags.DEFINE_enum(
      "kind", "reference", KINDS, "reference: a classifier-balancing checkpoint; torchvision: a "
      "plain state_dict; openai_clip, open_clip: a CLIP ViT (the visual tower, with the zero-shot head of "
      "the data's classes); timm: a timm VisionTransformer.")
  flags.DEFINE_bool("no_head", False, "Import the backbone only; the head stays freshly initialised.")
  flags.DEFINE_enum("prompts", "single", list(PROMPTS), "CLIP's zero-shot head: 'a photo of a {}.' (single) or CLIP's "
                    "80 ImageNet templates (ensemble).")
  flags.DEFINE_bool("allow_pickle", False, "torch.load(weights_only=False): only for files you trust.")
  flags.mark_flags_as_required(["config", "checkpoint", "workdir"])


def main(argv: list[str]) -> None:
  from absl import app, flags

  from ltr_jax import cli, paths, validate

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  FLAGS = flags.FLAGS
  cli.quiet_logs()

  def work() -> str:
    validate.validate(FLAGS.config)
    paths.check_workdir(FLAGS.workdir)
    return import_checkpoint(FLAGS.checkpoint, FLAGS.config, FLAGS.workdir, FLAGS.kind, not FLAGS.no_head,
                             FLAGS.allow_pickle, FLAGS.prompts)

  directory = cli.run_or_exit(work)
  print(f"wrote {directory}; now run python -m ltr_jax.main --mode=decouple (or --mode=evaluate) with the "
        f"same --config and --workdir={FLAGS.workdir}")


if __name__ == "__main__":
  from absl import app

  from ltr_jax import cli

  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
