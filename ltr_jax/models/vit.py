"""Vision Transformer backbones that hold CLIP (OpenAI / open_clip) and timm checkpoints, and LIFT's PEFT modules.

One Flax module, `ViT`, serves both layouts; its parameter names follow OpenAI's CLIP (as scenic's CLIP port does),
so every PyTorch layout maps onto it by a rename table plus transposes (ltr_jax.import_vit). Params of a ViT:

  conv1/kernel [P, P, C, D] (+ conv1/bias [D] for timm's own ViTs)   patch embedding, a P x P stride-P conv
  class_embedding [D], positional_embedding [1 + N, D]               the class token has its own position slot
  ln_pre/{scale, bias}                                               CLIP only (timm's `norm_pre`)
  transformer/resblocks_{i}/ln_1, attn/{q, k, v, out_proj}/{kernel [D, D], bias [D]}, ln_2,
                            mlp/c_fc/{kernel [D, M], bias}, mlp/c_proj/{kernel [M, D], bias}
  ln_post/{scale, bias}                                              on the pooled token (timm: `norm` / `fc_norm`)
  proj [D, E]                                                        CLIP's projection, only with proj_dim
With scan=True the blocks are one module `transformer/resblocks` whose leaves carry a leading [layers] axis
(`stack_blocks` / `unstack_blocks` convert). Parameter-efficient fine-tuning adds, per block:
  transformer/resblocks_{i}/adapter/{ln, down, up}/..., adapter/scale [1]       AdaptFormer (adaptformer_dim > 0)
  transformer/resblocks_{i}/attn/lora_q/{a [D, r], b [r, D]}, attn/lora_v/...   LoRA on q and v (lora_rank > 0)
BitFit and LayerNorm tuning only choose what trains: biases are '.../bias', LayerNorms are 'ln_*' (ltr_jax.masks
patterns such as '.*/bias' or '.*/ln_[^/]*/.*').

Computation (pre-norm blocks): x = x + attn(ln_1 x); x = x + mlp(ln_2 x) [+ adapter(x)]. The pooled feature is
ln_post of the class token ('token') or of the mean patch token ('avg'), returned in float32 BEFORE `proj`: LIFT's
head reads it without `proj`; CLIP's zero-shot head holds `proj` as its projection (z @ proj, ltr_jax.models.heads).

Sources (repository @ commit, file:line):
- OpenAI / open_clip visual tower, mlfoundations/open_clip v3.3.0 @ 30573618fc375b12f094ef64cb3a1391cf611c45,
  src/open_clip/transformer.py: conv1 without bias :624-630; class_embedding :634 and positional_embedding
  [grid^2 + 1, width] :636-637; ln_pre :652; ln_post :705; proj [width, output_dim] :706, used as `pooled @ proj`
  :912-913; pre-norm block ln_1, attn (torch's nn.MultiheadAttention: q, k, v = the three row blocks of
  in_proj_weight, scaled by head_dim ** -0.5, as open_clip's own Attention spells out at :159, :114), ln_2, mlp
  c_fc / c_proj :252-263, residuals :298-299; QuickGELU x * sigmoid(1.702 x) :32-35; LayerNorm (torch's default eps
  1e-5) :23-29; ln_post then x[:, 0] ('tok') or the mean of x[:, 1:] ('avg') :773-779, :820-821.
  src/open_clip/model.py: heads = width // head_width, head_width 64 :38, :170; mlp_ratio 4 :39; QuickGELU for
  OpenAI's weights :719, :765 ("OpenAI models were trained with QuickGELU"), nn.GELU otherwise :145.
- timm ViTs, huggingface/pytorch-image-models @ aa4b5850c1543fa488abf260f18390eda46cf85d (timm 1.0.29.dev0;
  the installed timm 1.0.31 has the same code at other lines, which the tests check numerically),
  timm/models/vision_transformer.py: patch conv bias = not pre_norm :829; norm_pre only if pre_norm :852; `norm`
  unless fc_norm :879, `fc_norm` for global_pool 'avg' :800, :902; LayerNorm default :801 with eps 1e-6
  (timm/layers/norm.py:78); nn.GELU (exact erf) default :803; class token concatenated, then pos_embed added
  :1038-1073; vit_tiny_patch16_224 (192, 12 layers, 3 heads) :3105-3110; vit_base_patch16_224 :3188-3194;
  vit_base_patch16_clip_224 (pre_norm, LayerNorm eps 1e-5, GELU) :3480-3486; the _quickgelu variant :3623-3628;
  vit_base_patch32_clip_224 :3436; vit_large_patch14_clip_224 :3513.
- LIFT (Shi et al., ICML 2024), shijxcs/LIFT @ 661ead9b78368f05ba79abe4672d63154467f823: models/peft_modules.py
  AdaptFormer :54-78 (own LayerNorm :57, down :58, ReLU, up :60, scale = ones(1) :61, down kaiming_normal_
  a=sqrt(5) :63, up and both biases zero :64-66, output up(relu(down(ln x))) * scale :72-78); LoRA :81-99
  (A [in, r] kaiming_uniform_ a=sqrt(5) :84, :88, B [r, out] zero :85, :89, scaling 1 / r :86, x @ A @ B * scaling
  :95-99); models/peft_vit.py: bottleneck 2 ** max(0, int(log2(C / (2 L)))) :95; LoRA added to q and v after the
  in-projection of ln_1 x :374-379; AdaptFormer on the block input after attention (`identity`), added beside the
  MLP output :413, :450-453; ln_post on the class token, proj unused :457-459.
- Position-embedding resampling: timm/layers/pos_embed.py (same timm commit) :19-50 and open_clip model.py
  :792-822 both resize the patch grid with F.interpolate(mode='bicubic', antialias=True, align_corners=False) and
  keep the class slot; big_vision (google-research/big_vision @ 0127fb6b337ee2a27bf4e54dea79cff176527356,
  big_vision/models/vit.py:306-321) uses scipy.ndimage.zoom order=1 on a posemb without a class slot. We follow
  timm/open_clip: jax.image.resize(method='bicubic', antialias=True) equals torch's antialiased bicubic (Keys
  a = -0.5, half-pixel centres) to float32 rounding (tests/test_vit.py checks it against timm).
- Fresh initialisation (for training from scratch, e.g. the Fashion-MNIST 'vit_mini'), after big_vision
  vit.py: posemb normal(1 / sqrt(D)) :47-49, class token zeros :224, Dense kernels xavier_uniform :67, :95, MLP
  biases normal(1e-6) :68, patch conv Flax's default (lecun normal) :212-214; proj normal(D ** -0.5) as open_clip
  transformer.py:706.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

LN_EPS_CLIP = 1e-5  # torch.nn.LayerNorm's default, OpenAI / open_clip and timm's CLIP ViTs
LN_EPS_TIMM = 1e-6  # timm's LayerNorm default (timm/layers/norm.py:78)
ADAPTER_LN_EPS = 1e-5  # LIFT's AdaptFormer LayerNorm: nn.LayerNorm(in_dim), torch's default eps


def quick_gelu(x: jnp.ndarray) -> jnp.ndarray:
  """OpenAI CLIP's activation x * sigmoid(1.702 x) (open_clip transformer.py:32-35)."""
  return x * jax.nn.sigmoid(1.702 * x)


def gelu(x: jnp.ndarray) -> jnp.ndarray:
  """Exact (erf) GELU, torch.nn.GELU()'s default."""
  return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {"quick_gelu": quick_gelu, "gelu": gelu}
POOLS = ("token", "avg")

_DENSE_INIT = nn.initializers.xavier_uniform()
_MLP_BIAS_INIT = nn.initializers.normal(stddev=1e-6)


def _adapter_down_init(key, shape, dtype=jnp.float32):
  """LIFT's adapter down-projection: kaiming_normal_(a=sqrt(5)) on the torch weight [r, D]: fan_in D, gain^2 =
  2 / (1 + 5), so an untruncated normal of variance 1 / (3 D) (our kernel is [D, r])."""
  return jax.random.normal(key, shape, dtype) * math.sqrt(1.0 / (3.0 * shape[0]))


def _lora_a_init(key, shape, dtype=jnp.float32):
  """LIFT's LoRA A [in, r]: kaiming_uniform_(a=sqrt(5)); torch takes fan_in = size(1) = r for a 2-D tensor, so
  U(-1/sqrt(r), 1/sqrt(r))."""
  bound = 1.0 / math.sqrt(shape[1])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def lift_bottleneck(num_classes: int, num_blocks: int) -> int:
  """LIFT's adapter / LoRA bottleneck r = 2 ** max(0, int(log2(C / (2 L)))) (LIFT models/peft_vit.py:95).

  ImageNet-LT (1000 classes, ViT-B's 12 blocks): 32; Places-LT (365): 8; CIFAR-100: 4; iNaturalist 2018 (8142): 256.
  int() truncates toward zero, the max(0, .) makes that the floor for every ratio.
  """
  if num_classes < 1 or num_blocks < 1:
    raise ValueError(f"lift_bottleneck needs positive counts, got {num_classes} classes and {num_blocks} blocks")
  return 2**max(0, int(math.log2(num_classes / (num_blocks * 2))))


def _layer_norm(eps: float, dtype: Dtype, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32, name=name)


class LoRA(nn.Module):
  """Low-rank update (x @ a) @ b / rank (LIFT's LoRA: a [in, r] uniform, b [r, out] zero, scaling 1 / r)."""
  rank: int
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    a = self.param("a", _lora_a_init, (x.shape[-1], self.rank), jnp.float32)
    b = self.param("b", nn.initializers.zeros, (self.rank, self.features), jnp.float32)
    return (x @ a.astype(self.dtype)) @ b.astype(self.dtype) * (1.0 / self.rank)


class AdaptFormer(nn.Module):
  """LIFT's AdaptFormer branch: scale * up(relu(down(ln x))), with its own LayerNorm; up and biases start at zero,
  the learned scalar scale at 1, so a fresh adapter adds exactly zero."""
  bottleneck: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, bias_init=nn.initializers.zeros)
    y = _layer_norm(ADAPTER_LN_EPS, self.dtype, "ln")(x)
    y = dense(self.bottleneck, kernel_init=_adapter_down_init, name="down")(y)
    y = dense(x.shape[-1], kernel_init=nn.initializers.zeros, name="up")(nn.relu(y))
    return y * self.param("scale", nn.initializers.ones, (1,), jnp.float32).astype(self.dtype)


def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, causal: bool = False) -> jnp.ndarray:
  """softmax(q k^T / sqrt(d) [+ causal mask]) v for q, k, v [B, L, heads, d], the scores and softmax in float32.

  Computed with the heads before the tokens ([B, heads, L, d]): XLA's CPU dot products run it in 13 ms per
  ViT-B/16 block at batch 8, against 24 ms for jax.nn.dot_product_attention's [B, L, heads, d] layout (2-core
  Xeon, idle; benchmarks/vit.py times whole passes)."""
  scale = q.shape[-1]**-0.5
  q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if causal:
    length = scores.shape[-1]
    scores = jnp.where(jnp.tril(jnp.ones((length, length), bool)), scores, -jnp.inf)
  weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, v), 1, 2)


class Attention(nn.Module):
  """Multi-head self-attention with separate q, k, v projections (OpenAI's in_proj / timm's qkv split in three)."""
  heads: int
  qkv_bias: bool = True
  causal: bool = False
  lora_rank: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    batch, length, width = x.shape
    if width % self.heads:
      raise ValueError(f"width {width} is not a multiple of {self.heads} heads")
    dense = functools.partial(nn.Dense, width, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_DENSE_INIT,
                              bias_init=nn.initializers.zeros)
    q = dense(use_bias=self.qkv_bias, name="q")(x)
    k = dense(use_bias=self.qkv_bias, name="k")(x)
    v = dense(use_bias=self.qkv_bias, name="v")(x)
    if self.lora_rank:
      q = q + LoRA(self.lora_rank, width, self.dtype, name="lora_q")(x)
      v = v + LoRA(self.lora_rank, width, self.dtype, name="lora_v")(x)
    q, k, v = (t.reshape(batch, length, self.heads, width // self.heads) for t in (q, k, v))
    y = attention(q, k, v, self.causal)
    return dense(name="out_proj")(y.reshape(batch, length, width))


class MLP(nn.Module):
  """c_fc -> activation -> c_proj (timm's fc1 / fc2)."""
  hidden: int
  act: str = "gelu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_DENSE_INIT,
                              bias_init=_MLP_BIAS_INIT)
    y = ACTIVATIONS[self.act](dense(self.hidden, name="c_fc")(x))
    return dense(x.shape[-1], name="c_proj")(y)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """What each block of a Transformer computes: heads, MLP width and activation, LayerNorm eps, q/k/v biases, a
  causal mask (CLIP's text tower), LIFT's modules (AdaptFormer bottleneck, LoRA rank; 0: none), compute dtype."""
  heads: int
  mlp_dim: int
  act: str = "gelu"
  ln_eps: float = LN_EPS_CLIP
  qkv_bias: bool = True
  causal: bool = False
  adaptformer_dim: int = 0
  lora_rank: int = 0
  dtype: Dtype = jnp.float32


class ResidualAttentionBlock(nn.Module):
  """Pre-norm block: x + attn(ln_1 x), then + mlp(ln_2 x) [+ AdaptFormer(x) beside the MLP, as LIFT places it]."""
  spec: BlockSpec

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    s = self.spec
    x = x + Attention(s.heads, s.qkv_bias, s.causal, s.lora_rank, s.dtype, name="attn")(_layer_norm(
        s.ln_eps, s.dtype, "ln_1")(x))
    y = MLP(s.mlp_dim, s.act, s.dtype, name="mlp")(_layer_norm(s.ln_eps, s.dtype, "ln_2")(x))
    if s.adaptformer_dim:
      y = y + AdaptFormer(s.adaptformer_dim, s.dtype, name="adapter")(x)
    return x + y


class _ScanBlock(ResidualAttentionBlock):
  """The block as an nn.scan body: (carry) -> (carry, no output)."""

  def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, None]:  # type: ignore[override]
    return super().__call__(x), None


class Transformer(nn.Module):
  """`layers` blocks (`resblocks_{i}`, or one scanned `resblocks`), each optionally rematerialised
  (jax.checkpoint: activations recomputed in the backward pass, memory for compute)."""
  layers: int
  spec: BlockSpec
  remat: bool = False
  scan: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.scan:
      block = nn.remat(_ScanBlock, prevent_cse=False) if self.remat else _ScanBlock
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.layers)
      x, _ = stack(self.spec, name="resblocks")(x)
      return x
    block = nn.remat(ResidualAttentionBlock) if self.remat else ResidualAttentionBlock
    for i in range(self.layers):
      x = block(self.spec, name=f"resblocks_{i}")(x)
    return x


class ViT(nn.Module):
  """Vision Transformer backbone: NHWC images -> float32 pooled features [B, width] (before `proj`).

  The call signature matches ResNet's (`train` is accepted and unused: no BatchNorm, no dropout), so LTRModel
  takes it as its backbone. image_size fixes the position-embedding grid; other sizes need `resample_posemb`.
  """
  width: int
  layers: int
  heads: int
  patch_size: int
  image_size: int  # of the position embedding's grid; 0: the grid of the images it is initialised on
  mlp_dim: int = 0  # 0: 4 * width (mlp_ratio 4 in CLIP and timm)
  act: str = "gelu"  # ACTIVATIONS: 'quick_gelu' for OpenAI's CLIP weights, 'gelu' for timm's and open_clip's LAION
  ln_eps: float = LN_EPS_TIMM
  ln_pre: bool = False  # CLIP's ln_pre (timm's norm_pre)
  patch_bias: bool = True  # timm's own ViTs; CLIP's conv1 has none
  pool: str = "token"  # POOLS: the class token, or the mean patch token (timm 'avg' + fc_norm)
  proj_dim: int = 0  # CLIP's proj [width, proj_dim]; 0: none
  qkv_bias: bool = True
  adaptformer_dim: int = 0  # AdaptFormer bottleneck in every block (LIFT); 0: none
  lora_rank: int = 0  # LoRA on q and v in every block; 0: none
  dtype: Dtype = jnp.float32  # compute dtype; parameters stay float32
  remat: bool = False
  scan: bool = False

  @property
  def num_features(self) -> int:
    return self.width

  @property
  def grid_size(self) -> int:
    return self.image_size // self.patch_size

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    del train  # The same function in training and at test.
    if self.pool not in POOLS:
      raise ValueError(f"unknown pool {self.pool!r}; choose one of {POOLS}")
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", use_bias=self.patch_bias, dtype=self.dtype,
                param_dtype=jnp.float32, name="conv1")(x.astype(self.dtype))
    batch, gh, gw, width = x.shape
    if self.image_size and (gh, gw) != (self.grid_size, self.grid_size):
      raise ValueError(f"{x.shape[1] * p}x{x.shape[2] * p} images give a {gh}x{gw} grid of {p}-pixel patches, but the "
                       f"position embedding is for {self.image_size}x{self.image_size} images; resample it "
                       "(ltr_jax.models.vit.resample_posemb) and set image_size")
    cls = self.param("class_embedding", nn.initializers.zeros, (width,), jnp.float32)
    pos = self.param("positional_embedding", nn.initializers.normal(stddev=width**-0.5), (gh * gw + 1, width),
                     jnp.float32)
    x = x.reshape(batch, gh * gw, width)
    # The class token built from x's first row keeps x's batch sharding (a broadcast constant would be replicated).
    x = jnp.concatenate([jnp.zeros_like(x[:, :1]) + cls.astype(self.dtype), x], axis=1)
    x = x + pos.astype(self.dtype)
    if self.ln_pre:
      x = _layer_norm(self.ln_eps, self.dtype, "ln_pre")(x)
    spec = BlockSpec(self.heads, self.mlp_dim or 4 * width, self.act, self.ln_eps, self.qkv_bias, causal=False,
                     adaptformer_dim=self.adaptformer_dim, lora_rank=self.lora_rank, dtype=self.dtype)
    x = Transformer(self.layers, spec, self.remat, self.scan, name="transformer")(x)
    x = x[:, 0] if self.pool == "token" else jnp.mean(x[:, 1:], axis=1)
    x = _layer_norm(self.ln_eps, self.dtype, "ln_post")(x)
    if self.proj_dim:
      self.param("proj", nn.initializers.normal(stddev=width**-0.5), (width, self.proj_dim), jnp.float32)
    return x.astype(jnp.float32)

  def project(self, z: jnp.ndarray) -> jnp.ndarray:
    """z @ proj in float32: CLIP's image embedding of pooled features z (apply with method=ViT.project)."""
    if not self.proj_dim:
      raise ValueError("this ViT has no proj (proj_dim=0)")
    return z.astype(jnp.float32) @ self.get_variable("params", "proj")


_CLIP = dict(act="quick_gelu", ln_eps=LN_EPS_CLIP, ln_pre=True, patch_bias=False, pool="token")
_TIMM = dict(act="gelu", ln_eps=LN_EPS_TIMM, ln_pre=False, patch_bias=True, pool="token")
_TIMM_CLIP = dict(act="gelu", ln_eps=LN_EPS_CLIP, ln_pre=True, patch_bias=False, pool="token")

# name -> ViT fields (minus dtype, remat, scan and the PEFT options). CLIP sizes: open_clip model_configs
# ViT-B-32.json, ViT-B-16.json, ViT-L-14.json, ViT-L-14-336.json (v3.3.0) with heads = width // 64; OpenAI's
# weights use QuickGELU. timm sizes: vision_transformer.py (see the module docstring).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "clip_vit_b32": dict(_CLIP, width=768, layers=12, heads=12, patch_size=32, image_size=224, proj_dim=512),
    "clip_vit_b16": dict(_CLIP, width=768, layers=12, heads=12, patch_size=16, image_size=224, proj_dim=512),
    "clip_vit_l14": dict(_CLIP, width=1024, layers=24, heads=16, patch_size=14, image_size=224, proj_dim=768),
    "clip_vit_l14_336": dict(_CLIP, width=1024, layers=24, heads=16, patch_size=14, image_size=336, proj_dim=768),
    # open_clip's own (LAION-trained) weights of these sizes use GELU (model.py:145; the *-quickgelu ones QuickGELU).
    "clip_vit_b32_gelu": dict(_CLIP, act="gelu", width=768, layers=12, heads=12, patch_size=32, image_size=224,
                              proj_dim=512),
    "clip_vit_b16_gelu": dict(_CLIP, act="gelu", width=768, layers=12, heads=12, patch_size=16, image_size=224,
                              proj_dim=512),
    "clip_vit_l14_gelu": dict(_CLIP, act="gelu", width=1024, layers=24, heads=16, patch_size=14, image_size=224,
                              proj_dim=768),
    "vit_tiny_patch16_224": dict(_TIMM, width=192, layers=12, heads=3, patch_size=16, image_size=224),
    "vit_base_patch16_224": dict(_TIMM, width=768, layers=12, heads=12, patch_size=16, image_size=224),
    "vit_base_patch16_clip_224": dict(_TIMM_CLIP, width=768, layers=12, heads=12, patch_size=16, image_size=224),
    "vit_base_patch16_clip_quickgelu_224": dict(_TIMM_CLIP, act="quick_gelu", width=768, layers=12, heads=12,
                                                patch_size=16, image_size=224),
    # Ours: a ViT small enough to train on Fashion-MNIST (28x28, one channel) on a few CPU cores: 7x7 patches
    # (a 4x4 grid + the class token), width 64, 4 blocks of 4 heads; 204,416 parameters.
    "vit_mini": dict(_TIMM, width=64, layers=4, heads=4, patch_size=7, image_size=28),
}


def create_vit(name: str, **fields: Any) -> ViT:
  """The ViT `name` (a key of ARCHITECTURES), with `fields` (dtype, remat, scan, adaptformer_dim, lora_rank,
  image_size, ...) overriding the table."""
  if name not in ARCHITECTURES:
    raise ValueError(f"unknown ViT {name!r}; choose one of {sorted(ARCHITECTURES)}")
  return ViT(**{**ARCHITECTURES[name], **fields})


def resample_posemb(posemb: Any, new_grid: int | tuple[int, int], old_grid: int | tuple[int, int] | None = None,
                    num_prefix: int = 1) -> np.ndarray:
  """A [num_prefix + gh * gw, D] position embedding resampled to another patch grid, the prefix (class) slots kept.

  Bicubic with antialiasing on the patch grid, as timm's resample_abs_pos_embed and open_clip's resize_pos_embed
  (F.interpolate(mode='bicubic', antialias=True, align_corners=False)); jax.image.resize computes the same kernel.
  old_grid defaults to the square grid the length implies. Returns float32 numpy.
  """
  posemb = np.asarray(posemb, np.float32)
  if posemb.ndim != 2:
    raise ValueError(f"position embedding must be [tokens, D], got shape {posemb.shape}")
  new = (new_grid, new_grid) if isinstance(new_grid, int) else tuple(new_grid)
  prefix, grid = posemb[:num_prefix], posemb[num_prefix:]
  if old_grid is None:
    side = math.isqrt(grid.shape[0])
    if side * side != grid.shape[0]:
      raise ValueError(f"{grid.shape[0]} patch positions are not a square grid; pass old_grid")
    old_grid = side
  old = (old_grid, old_grid) if isinstance(old_grid, int) else tuple(old_grid)
  if old[0] * old[1] != grid.shape[0]:
    raise ValueError(f"{grid.shape[0]} patch positions do not make a {old[0]}x{old[1]} grid")
  if old == new:
    return posemb
  grid = grid.reshape(*old, -1)
  resized = jax.image.resize(jnp.asarray(grid), (*new, grid.shape[-1]), method="bicubic", antialias=True)
  return np.concatenate([prefix, np.asarray(resized, np.float32).reshape(new[0] * new[1], -1)])


def _block_names(tree: dict[str, Any]) -> list[str]:
  names = sorted((k for k in tree if k.startswith("resblocks_")), key=lambda k: int(k.split("_")[1]))
  if [int(k.split("_")[1]) for k in names] != list(range(len(names))):
    raise ValueError(f"block names are not resblocks_0..{len(names) - 1}: {names}")
  return names


def stack_blocks(transformer: dict[str, Any]) -> dict[str, Any]:
  """{'resblocks_0': t0, ..., 'resblocks_{L-1}': ...} -> {'resblocks': leaves stacked on a leading [L] axis}
  (the parameters of a `transformer` module for scan=True)."""
  names = _block_names(transformer)
  rest = {k: v for k, v in transformer.items() if k not in names}
  return {**rest, "resblocks": jax.tree.map(lambda *xs: jnp.stack(xs), *(transformer[k] for k in names))}


def unstack_blocks(transformer: dict[str, Any]) -> dict[str, Any]:
  """The inverse of `stack_blocks`."""
  stacked = transformer["resblocks"]
  layers = jax.tree.leaves(stacked)[0].shape[0]
  rest = {k: v for k, v in transformer.items() if k != "resblocks"}
  return {**rest, **{f"resblocks_{i}": jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(layers)}}
