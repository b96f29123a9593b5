"""PyTorch ViT / CLIP weights -> Flax params of ltr_jax.models.vit.ViT and clip_text.CLIPTextTransformer.

Pure functions (no CLI): `load_torch_weights` reads a file into {name: float32 numpy array}; a converter maps such
a state_dict onto our parameter names (ltr_jax/models/vit.py's docstring) and returns (params, arch):
  params = {'visual': ViT params, 'text': CLIPTextTransformer params (CLIP only), 'head': {'kernel', 'bias'} (timm
            classifiers)}
  arch   = {'visual': ViT fields, 'text': CLIPTextTransformer fields, 'logit_scale': float, 'num_classes': int}
so that `ViT(**arch['visual'], dtype=..., adaptformer_dim=...)` is the checkpoint's network (PEFT params are not in
checkpoints: initialise the model and overwrite its backbone params with these). Renames and layouts:
  conv [O, I, kh, kw] -> kernel [kh, kw, I, O]; Linear weight [out, in] -> kernel [in, out];
  in_proj_weight / qkv.weight [3D, D] -> q, k, v kernels [D, D] (the three row blocks, in that order);
  LayerNorm weight -> scale; CLIP's `proj` [D, E] and `text_projection` [W, E] are used as x @ W: no transpose.
  OpenAI / open_clip                         timm                          ours
  visual.conv1.weight                        patch_embed.proj.weight/bias  conv1/kernel, conv1/bias
  visual.class_embedding [D]                 cls_token [1, 1, D]           class_embedding [D]
  visual.positional_embedding [1+N, D]       pos_embed [1, 1+N, D]         positional_embedding [1+N, D]
  visual.ln_pre                              norm_pre                      ln_pre
  visual.transformer.resblocks.{i}.ln_1      blocks.{i}.norm1              transformer/resblocks_{i}/ln_1
    .attn.in_proj_weight / _bias             .attn.qkv.weight / bias       .../attn/q, k, v
    .attn.out_proj                           .attn.proj                    .../attn/out_proj
    .ln_2, .mlp.c_fc, .mlp.c_proj            .norm2, .mlp.fc1, .mlp.fc2    .../ln_2, mlp/c_fc, mlp/c_proj
  visual.ln_post                             norm ('token') / fc_norm ('avg')  ln_post
  visual.proj [D, E]                         head (a classifier; or CLIP's proj with head_as_proj)  proj / head
  token_embedding.weight, positional_embedding, transformer.resblocks.{i}.*, ln_final, text_projection, logit_scale:
  the text tower's, same names (text/...).
Float16 (OpenAI's release) and bfloat16 tensors become float32. A missing key, an unexpected key or a wrong shape
raises CheckpointError naming the key. A target image_size other than the checkpoint's resamples the position
embedding (ltr_jax.models.vit.resample_posemb).

What cannot be read from the weights comes from arguments: the activation (OpenAI's CLIP weights were trained with
QuickGELU: open_clip v3.3.0 src/open_clip/model.py:719, :765; open_clip's LAION weights and timm's ViTs use GELU
unless named *quickgelu*, model.py:145, timm vision_transformer.py:803, :3623-3628) and the LayerNorm eps (1e-5 for
CLIP and timm's CLIP ViTs, vision_transformer.py:3480-3486; 1e-6 for timm's own, timm/layers/norm.py:78). Heads are
width // 64, as open_clip infers them for OpenAI's weights (model.py:745 for the text, head_width 64 :38, :170 for
the visual tower) and as every timm ViT size has them (tiny 192/3, small 384/6, base 768/12, large 1024/16).
Architecture inference follows open_clip's build_model_from_openai_state_dict (model.py:717-746); OpenAI's
TorchScript archives also hold the buffers input_resolution, context_length and vocab_size, which open_clip drops
(model.py:769-770, factory.py:170-173), as we do; `attn_mask` (the text tower's causal mask) is never saved by
open_clip (a non-persistent buffer since commit f447bd1, 2022-04-04; a plain attribute in OpenAI's code) and is
ignored should a re-saved state_dict hold it. Wrappers: open_clip's load_state_dict (factory.py:153-178:
safetensors, a 'state_dict' entry, a ScriptModule's state_dict(), a 'module.' prefix) and timm's
checkpoint_filter_fn ('model' / 'state_dict' entries, huggingface/pytorch-image-models @
aa4b5850c1543fa488abf260f18390eda46cf85d, timm/models/vision_transformer.py:1725-1726); OpenAI's clip.load reads
its archives with torch.jit.load and falls back to torch.load (shijxcs/LIFT @
661ead9b78368f05ba79abe4672d63154467f823, clip/clip.py:120-127, OpenAI's code). timm's own OpenAI -> timm renames:
_convert_openai_clip, vision_transformer.py:1576-1611.
torch is imported only inside functions: it stays an optional dependency (the `torch` extra).
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ltr_jax.errors import CheckpointError, ConfigError
from ltr_jax.models import vit

# Buffers of OpenAI's TorchScript archives, and the causal mask a re-saved state_dict may hold: no weights.
IGNORED_CLIP_KEYS = frozenset({"input_resolution", "context_length", "vocab_size", "attn_mask"})
HEAD_WIDTH = 64

CONV_AXES = (2, 3, 1, 0)  # torch conv weight [O, I, kh, kw] -> Flax kernel [kh, kw, I, O]


def linear_kernel(weight: np.ndarray) -> np.ndarray:
  """torch Linear weight [out, in] -> Flax Dense kernel [in, out]."""
  return weight.T


_OPENAI_BLOCK = dict(ln_1="ln_1", ln_2="ln_2", qkv_weight="attn.in_proj_weight", qkv_bias="attn.in_proj_bias",
                     out="attn.out_proj", fc="mlp.c_fc", proj="mlp.c_proj")
_TIMM_BLOCK = dict(ln_1="norm1", ln_2="norm2", qkv_weight="attn.qkv.weight", qkv_bias="attn.qkv.bias", out="attn.proj",
                   fc="mlp.fc1", proj="mlp.fc2")


def torch_load(path: str, allow_pickle: bool) -> Any:
  """torch.load on the CPU; tensors and plain containers only unless `allow_pickle`."""
  import torch
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such file")
  try:
    return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
  except pickle.UnpicklingError as e:
    if allow_pickle:
      raise CheckpointError(f"{path}: not a PyTorch checkpoint ({str(e).splitlines()[0]})") from e
    lines = str(e).splitlines()
    detail = next(
        (line.split("error: ", 1)[1].split(". Please")[0] for line in lines if "WeightsUnpickler error: " in line),
        lines[0])
    raise CheckpointError(
        f"{path}: holds Python objects besides tensors, which torch.load(weights_only=True) refuses "
        f"({detail}); if you trust the file, rerun with --allow_pickle (it runs code stored in the file)") from e
  except (RuntimeError, KeyError, EOFError, ValueError) as e:
    raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from e


def describe_keys(keys: list[str]) -> str:
  """The first five of `keys` (and how many more), for an error message."""
  shown = ", ".join(repr(k) for k in keys[:5])
  return shown + (f" (and {len(keys) - 5} more)" if len(keys) > 5 else "")


def to_numpy(value: Any) -> np.ndarray:
  """float32 numpy for floating tensors / arrays (float16 and bfloat16 cast), numpy as is for the rest."""
  if hasattr(value, "detach"):  # a torch.Tensor
    value = value.detach().cpu()
    return value.float().numpy() if value.is_floating_point() else value.numpy()
  value = np.asarray(value)
  return value.astype(np.float32, copy=False) if np.issubdtype(value.dtype, np.floating) else value


def _is_torchscript(path: str) -> bool:
  """A TorchScript archive (torch.jit.save) rather than a torch.save zip: it has code/ and constants.pkl."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
  """The state_dict inside a training checkpoint ('state_dict' / 'model' entry), 'module.' prefixes dropped."""
  for _ in range(2):
    if isinstance(obj, Mapping) and not all(hasattr(v, "shape") for v in obj.values()):
      entry = next((k for k in ("state_dict", "model") if k in obj and isinstance(obj[k], Mapping)), None)
      if entry is None:
        found = sorted(map(str, obj))[:8]
        raise CheckpointError(f"{path}: neither a state_dict nor a checkpoint with a 'state_dict' or 'model' entry "
                              f"(found {found})")
      obj = obj[entry]
  if not isinstance(obj, Mapping) or not all(hasattr(v, "shape") for v in obj.values()):
    raise CheckpointError(f"{path}: not a state_dict (a mapping of tensor names to tensors)")
  return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_torch_weights(path: str, allow_pickle: bool = False) -> dict[str, np.ndarray]:
  """{name: numpy array} of a PyTorch weights file, floating tensors as float32.

  .safetensors: safetensors; a TorchScript archive (OpenAI's released CLIP .pt): torch.jit.load(...).state_dict();
  any other file (.pth, .bin, .pt): torch.load(weights_only=True unless `allow_pickle`), unwrapping a
  'state_dict' / 'model' entry and 'module.' prefixes.
  """
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such file")
  try:
    if path.endswith(".safetensors"):
      from safetensors.torch import load_file
      state = load_file(path, device="cpu")
    elif _is_torchscript(path):
      import torch
      state = torch.jit.load(path, map_location="cpu").state_dict()
    else:
      state = torch_load(path, allow_pickle)
  except ImportError as e:
    raise CheckpointError(f"{path}: reading it needs {e.name}: pip install -e '.[torch]'") from e
  except (RuntimeError, KeyError, EOFError, ValueError, OSError) as e:
    raise CheckpointError(f"{path}: not a PyTorch weights file ({type(e).__name__}: {str(e).splitlines()[0]})") from e
  return {k: to_numpy(v) for k, v in _unwrap(state, path).items()}


class _Reader:
  """Takes tensors out of a state_dict by key, checking shapes; `finish` reports the keys never taken."""

  def __init__(self, state_dict: Mapping[str, Any]):
    self.state = {str(k): v for k, v in state_dict.items()}
    self.taken: set[str] = set()

  def has(self, key: str) -> bool:
    return key in self.state

  def shape(self, key: str) -> tuple[int, ...]:
    if key not in self.state:
      raise CheckpointError(f"missing key {key!r}, which the model needs")
    return tuple(self.state[key].shape)

  def take(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    value = to_numpy(self.state[key]) if key in self.state else None
    if value is None:
      raise CheckpointError(f"missing key {key!r}, which the model needs")
    if shape is not None and value.shape != tuple(shape):
      raise CheckpointError(f"key {key!r} has shape {value.shape}, but the model expects {tuple(shape)}")
    self.taken.add(key)
    return value.astype(np.float32, copy=False)

  def dense(self, prefix: str, features_in: int, features_out: int) -> dict[str, np.ndarray]:
    return {
        "kernel": linear_kernel(self.take(f"{prefix}.weight", (features_out, features_in))),
        "bias": self.take(f"{prefix}.bias", (features_out,))
    }

  def layer_norm(self, prefix: str, features: int) -> dict[str, np.ndarray]:
    return {"scale": self.take(f"{prefix}.weight", (features,)), "bias": self.take(f"{prefix}.bias", (features,))}

  def finish(self, ignored: frozenset[str] = frozenset()) -> None:
    left = sorted(k for k in self.state if k not in self.taken and k not in ignored)
    if left:
      raise CheckpointError(f"unexpected key {describe_keys(left)}, which the model has no parameter for")


def _count_blocks(reader: _Reader, prefix: str) -> int:
  """The number of blocks `prefix{i}.` in the state_dict; they must be 0..L-1."""
  pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
  indices = sorted({int(m.group(1)) for k in reader.state if (m := pattern.match(k))})
  if not indices:
    raise CheckpointError(f"missing key {prefix}0.*: no transformer blocks")
  if indices != list(range(len(indices))):
    missing = sorted(set(range(indices[-1] + 1)) - set(indices))
    raise CheckpointError(f"missing key {prefix}{missing[0]}.*: the blocks are not numbered 0..{indices[-1]}")
  return len(indices)


def _blocks(reader: _Reader, prefix: str, layers: int, width: int, mlp_dim: int, names: dict[str, str],
            qkv_bias: bool) -> dict[str, Any]:
  """{'resblocks_{i}': block params} of `layers` blocks under `prefix{i}.`."""
  out = {}
  for i in range(layers):
    p = f"{prefix}{i}."
    qkv = reader.take(p + names["qkv_weight"], (3 * width, width))
    attn = {n: {"kernel": linear_kernel(qkv[j * width:(j + 1) * width])} for j, n in enumerate("qkv")}
    if qkv_bias:
      bias = reader.take(p + names["qkv_bias"], (3 * width,))
      for j, n in enumerate("qkv"):
        attn[n]["bias"] = bias[j * width:(j + 1) * width]
    attn["out_proj"] = reader.dense(p + names["out"], width, width)
    out[f"resblocks_{i}"] = {
        "ln_1": reader.layer_norm(p + names["ln_1"], width), "attn": attn,
        "ln_2": reader.layer_norm(p + names["ln_2"], width), "mlp": {
            "c_fc": reader.dense(p + names["fc"], width, mlp_dim),
            "c_proj": reader.dense(p + names["proj"], mlp_dim, width)
        }
    }
  return out


def _heads(width: int, heads: int | None) -> int:
  heads = heads or width // HEAD_WIDTH
  if heads < 1 or width % heads:
    raise CheckpointError(f"width {width} does not split into {heads} attention heads; pass heads=")
  return heads


def _posemb(posemb: np.ndarray, patch: int, image_size: int | None) -> tuple[np.ndarray, int]:
  """The [1+N, D] position embedding for `image_size` (resampled if its grid differs) and the image size."""
  side = int(round((posemb.shape[0] - 1)**0.5))
  if side * side + 1 != posemb.shape[0]:
    raise CheckpointError(f"the position embedding has {posemb.shape[0]} rows, not 1 + a square grid")
  if image_size is None or image_size == side * patch:
    return posemb, side * patch
  if image_size % patch:
    raise ConfigError(f'image size {image_size} is not a multiple of the checkpoint\'s patch size {patch}')
  return vit.resample_posemb(posemb, image_size // patch, side), image_size


def _check_act(act: str) -> str:
  if act not in vit.ACTIVATIONS:
    raise ConfigError(f"unknown activation {act!r}; choose one of {sorted(vit.ACTIVATIONS)}")
  return act


def openai_clip_to_variables(state_dict: Mapping[str, Any], image_size: int | None = None, act: str = "quick_gelu",
                             heads: int | None = None,
                             text_heads: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, arch) of an OpenAI / open_clip CLIP ViT state_dict ('visual.*' and, where present, the text tower).

  act: 'quick_gelu' for OpenAI's weights (and open_clip's *-quickgelu models), 'gelu' for open_clip's others.
  image_size: the input size to build for (the position embedding is resampled); default the checkpoint's.
  heads, text_heads: attention heads of the visual and text towers (default: width // 64 each).
  """
  act = _check_act(act)
  r = _Reader(state_dict)
  if not r.has("visual.conv1.weight") and r.has("visual.layer1.0.conv1.weight"):
    raise CheckpointError("a ResNet CLIP (key 'visual.layer1.0.conv1.weight'): only ViT towers are supported")
  if any(k.startswith("visual.trunk.") for k in r.state):
    raise CheckpointError("an open_clip model with a timm tower (key 'visual.trunk.*'): convert the 'visual.trunk.' "
                          "entries with timm_vit_to_variables")
  width, channels, patch, _ = r.shape("visual.conv1.weight")
  layers = _count_blocks(r, "visual.transformer.resblocks.")
  mlp_dim = r.shape("visual.transformer.resblocks.0.mlp.c_fc.weight")[0]
  proj_dim = r.shape("visual.proj")[1]
  qkv_bias = r.has("visual.transformer.resblocks.0.attn.in_proj_bias")
  posemb, size = _posemb(r.take("visual.positional_embedding", (r.shape("visual.positional_embedding")[0], width)),
                         patch, image_size)
  visual = {
      "conv1": {"kernel": r.take("visual.conv1.weight", (width, channels, patch, patch)).transpose(CONV_AXES)},
      "class_embedding": r.take("visual.class_embedding", (width,)),
      "positional_embedding": posemb,
      "ln_pre": r.layer_norm("visual.ln_pre", width),
      "transformer": _blocks(r, "visual.transformer.resblocks.", layers, width, mlp_dim, _OPENAI_BLOCK, qkv_bias),
      "ln_post": r.layer_norm("visual.ln_post", width),
      "proj": r.take("visual.proj", (width, proj_dim)),
  }
  arch: dict[str, Any] = {
      "visual": dict(width=width, layers=layers, heads=_heads(width, heads), patch_size=patch, image_size=size,
                     mlp_dim=mlp_dim, act=act, ln_eps=vit.LN_EPS_CLIP, ln_pre=True, patch_bias=False, pool="token",
                     proj_dim=proj_dim, qkv_bias=qkv_bias)
  }
  params: dict[str, Any] = {"visual": visual}
  if r.has("token_embedding.weight"):
    vocab, text_width = r.shape("token_embedding.weight")
    text_layers = _count_blocks(r, "transformer.resblocks.")
    text_mlp = r.shape("transformer.resblocks.0.mlp.c_fc.weight")[0]
    context = r.shape("positional_embedding")[0]
    embed_dim = r.shape("text_projection")[1]
    text_bias = r.has("transformer.resblocks.0.attn.in_proj_bias")
    if not text_bias:
      raise CheckpointError("missing key 'transformer.resblocks.0.attn.in_proj_bias', which the text tower needs")
    params["text"] = {
        "token_embedding": {"embedding": r.take("token_embedding.weight", (vocab, text_width))},
        "positional_embedding": r.take("positional_embedding", (context, text_width)),
        "transformer": _blocks(r, "transformer.resblocks.", text_layers, text_width, text_mlp, _OPENAI_BLOCK, True),
        "ln_final": r.layer_norm("ln_final", text_width),
        "text_projection": r.take("text_projection", (text_width, embed_dim)),
    }
    arch["text"] = dict(width=text_width, layers=text_layers, heads=_heads(text_width, text_heads), embed_dim=embed_dim,
                        mlp_dim=text_mlp, context_length=context, vocab_size=vocab, act=act, ln_eps=vit.LN_EPS_CLIP)
  if r.has("logit_scale"):
    arch["logit_scale"] = float(np.reshape(r.take("logit_scale"), -1)[0])
  r.finish(IGNORED_CLIP_KEYS)
  return params, arch


def open_clip_to_variables(state_dict: Mapping[str, Any], image_size: int | None = None, act: str = "gelu",
                           heads: int | None = None,
                           text_heads: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, arch) of an open_clip CLIP ViT state_dict: OpenAI's layout (open_clip loads OpenAI's weights into the
  same modules); its LAION-trained models use GELU, the *-quickgelu ones and OpenAI's weights QuickGELU."""
  return openai_clip_to_variables(state_dict, image_size, act, heads, text_heads)


def timm_vit_to_variables(state_dict: Mapping[str, Any], image_size: int | None = None, act: str = "gelu",
                          ln_eps: float | None = None, heads: int | None = None,
                          head_as_proj: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, arch) of a timm VisionTransformer state_dict (class token, learned position embedding, no layer scale
  or register tokens). Pooling: 'avg' when the checkpoint has fc_norm (timm's global_pool='avg'), else 'token' on
  `norm`; timm's rarer global_pool='avg' with fc_norm=False (norm before pooling) cannot be told from the weights
  and is not supported.

  act: 'gelu' (timm's default) or 'quick_gelu' (its *_quickgelu CLIP models). ln_eps: default 1e-5 when the
  checkpoint has norm_pre (timm's CLIP ViTs), else 1e-6. The classifier `head` becomes params['head'] (kernel
  [D, C], bias) and arch['num_classes']; with head_as_proj (timm's CLIP towers, whose head is CLIP's projection
  with a zero bias) it becomes the visual `proj`.
  """
  act = _check_act(act)
  r = _Reader(state_dict)
  if r.has("visual.class_embedding"):
    raise CheckpointError("an OpenAI / open_clip CLIP state_dict (key 'visual.class_embedding'): use "
                          "openai_clip_to_variables")
  width, channels, patch, _ = r.shape("patch_embed.proj.weight")
  layers = _count_blocks(r, "blocks.")
  mlp_dim = r.shape("blocks.0.mlp.fc1.weight")[0]
  patch_bias = r.has("patch_embed.proj.bias")
  qkv_bias = r.has("blocks.0.attn.qkv.bias")
  ln_pre = r.has("norm_pre.weight")
  pool = "avg" if r.has("fc_norm.weight") else "token"
  tokens = r.shape("pos_embed")[1]
  posemb, size = _posemb(r.take("pos_embed", (1, tokens, width))[0], patch, image_size)
  conv = {"kernel": r.take("patch_embed.proj.weight", (width, channels, patch, patch)).transpose(CONV_AXES)}
  if patch_bias:
    conv["bias"] = r.take("patch_embed.proj.bias", (width,))
  visual: dict[str, Any] = {
      "conv1": conv,
      "class_embedding": r.take("cls_token", (1, 1, width)).reshape(width),
      "positional_embedding": posemb,
      "transformer": _blocks(r, "blocks.", layers, width, mlp_dim, _TIMM_BLOCK, qkv_bias),
      "ln_post": r.layer_norm("fc_norm" if pool == "avg" else "norm", width),
  }
  if ln_pre:
    visual["ln_pre"] = r.layer_norm("norm_pre", width)
  visual_arch = dict(width=width, layers=layers, heads=_heads(width, heads), patch_size=patch, image_size=size,
                     mlp_dim=mlp_dim, act=act, ln_eps=ln_eps or (vit.LN_EPS_CLIP if ln_pre else vit.LN_EPS_TIMM),
                     ln_pre=ln_pre, patch_bias=patch_bias, pool=pool, proj_dim=0, qkv_bias=qkv_bias)
  params: dict[str, Any] = {"visual": visual}
  arch: dict[str, Any] = {"visual": visual_arch}
  if r.has("head.weight"):
    classes = r.shape("head.weight")[0]
    head = r.dense("head", width, classes)
    if head_as_proj:
      if np.any(head["bias"]):
        raise CheckpointError("key 'head.bias' is not zero, so 'head' is a classifier, not CLIP's projection")
      visual["proj"] = head["kernel"]
      visual_arch["proj_dim"] = classes
    else:
      params["head"] = head
      arch["num_classes"] = classes
  elif head_as_proj:
    raise CheckpointError("missing key 'head.weight', which head_as_proj makes CLIP's projection")
  r.finish()
  return params, arch
