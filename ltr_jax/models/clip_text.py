"""CLIP's text tower in Flax, and class-prompt text embeddings (zero-shot classifiers, LIFT's head initialisation).

Params (OpenAI's names; ltr_jax.import_vit maps checkpoints onto them):
  token_embedding/embedding [V, W], positional_embedding [context, W],
  transformer/resblocks_{i}/... (the block of ltr_jax.models.vit, causal), ln_final/{scale, bias},
  text_projection [W, E] used as x @ text_projection.
The output for a row of token ids is text_projection of ln_final at the end-of-text token, the row's largest id
(<end_of_text> = 49407 is the last vocabulary entry), unnormalised, float32 [B, E].

Sources (mlfoundations/open_clip v3.3.0 @ 30573618fc375b12f094ef64cb3a1391cf611c45): src/open_clip/model.py
CLIP.encode_text :330-345 (token embedding + positional embedding, transformer with the causal mask, ln_final,
argmax pooling, x @ text_projection); CLIPTextCfg context 77, vocab 49408, width 512, heads 8, layers 12 :76-84,
text heads = width // 64 for OpenAI's weights :745; src/open_clip/transformer.py causal additive mask (-inf above
the diagonal) :1080-1086; text_global_pool 'argmax' :921-934; inits: token_embedding normal(0.02),
positional_embedding normal(0.01) :1035-1036, text_projection normal(width ** -0.5) :1055. Prompt ensembling:
src/open_clip/zero_shot_classifier.py:52-59 (encode_text(normalize=True), mean over templates, normalised again;
the same as OpenAI CLIP's ImageNet notebook, :100-106 there). LIFT (shijxcs/LIFT @
661ead9b78368f05ba79abe4672d63154467f823, models/clip_text.py:16-29) computes the same tower.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ltr_jax import progress
from ltr_jax.errors import ConfigError
from ltr_jax.models import heads, vit
from ltr_jax.models.clip_tokenizer import CONTEXT_LENGTH, ClipTokenizer

Dtype = Any

DEFAULT_TEMPLATES = ("a photo of a {}.",)  # LIFT's head initialisation and the plain zero-shot prompt


class CLIPTextTransformer(nn.Module):
  """CLIP's text encoder: int token ids [B, L <= context_length] -> float32 [B, embed_dim] (not normalised)."""
  width: int = 512
  layers: int = 12
  heads: int = 8
  embed_dim: int = 512
  mlp_dim: int = 0  # 0: 4 * width
  context_length: int = CONTEXT_LENGTH
  vocab_size: int = 49408
  act: str = "quick_gelu"  # 'quick_gelu' for OpenAI's weights, 'gelu' for open_clip's LAION ones
  ln_eps: float = vit.LN_EPS_CLIP
  dtype: Dtype = jnp.float32
  remat: bool = False
  scan: bool = False

  @nn.compact
  def __call__(self, tokens: jnp.ndarray) -> jnp.ndarray:
    batch, length = tokens.shape
    if length > self.context_length:
      raise ValueError(f"{length} tokens per text, more than the context length {self.context_length}")
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(stddev=0.02), dtype=self.dtype,
                 param_dtype=jnp.float32, name="token_embedding")(tokens)
    pos = self.param("positional_embedding", nn.initializers.normal(stddev=0.01), (self.context_length, self.width),
                     jnp.float32)
    x = x + pos[:length].astype(self.dtype)
    spec = vit.BlockSpec(self.heads, self.mlp_dim or 4 * self.width, self.act, self.ln_eps, causal=True,
                         dtype=self.dtype)
    x = vit.Transformer(self.layers, spec, self.remat, self.scan, name="transformer")(x)
    x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, param_dtype=jnp.float32, name="ln_final")(x)
    x = x[jnp.arange(batch), jnp.argmax(tokens, axis=-1)]
    projection = self.param("text_projection", nn.initializers.normal(stddev=self.width**-0.5),
                            (self.width, self.embed_dim), jnp.float32)
    return x.astype(jnp.float32) @ projection


# name -> CLIPTextTransformer fields: open_clip model_configs ViT-B-32.json, ViT-B-16.json, ViT-L-14.json (v3.3.0).
TEXT_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "clip_vit_b32": dict(width=512, layers=12, heads=8, embed_dim=512),
    "clip_vit_b16": dict(width=512, layers=12, heads=8, embed_dim=512),
    "clip_vit_l14": dict(width=768, layers=12, heads=12, embed_dim=768),
    "clip_vit_l14_336": dict(width=768, layers=12, heads=12, embed_dim=768),
    "clip_vit_b32_gelu": dict(width=512, layers=12, heads=8, embed_dim=512, act="gelu"),
    "clip_vit_b16_gelu": dict(width=512, layers=12, heads=8, embed_dim=512, act="gelu"),
    "clip_vit_l14_gelu": dict(width=768, layers=12, heads=12, embed_dim=768, act="gelu"),
}


def read_list(path: str) -> list[str]:
  """The entries of a list file of ltr_jax/data (imagenet_classnames.txt, imagenet_templates.txt): one per line,
  '#' comment lines skipped."""
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def text_encoder(model: CLIPTextTransformer, params: Any, tokenizer: ClipTokenizer | None = None,
                 batch_size: int = 256) -> Callable[[Sequence[str], Any], np.ndarray]:
  """encode(texts, bar): unnormalised text embeddings [len(texts), E] float32, in batches of `batch_size` (the last
  one padded: one compilation for every call); `bar` (a progress bar or None) advances by the texts of each batch.
  The tokenizer, the compiled tower and its parameters on the device are made once, for all the calls."""
  tokenizer = tokenizer or ClipTokenizer(context_length=model.context_length)
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t))
  params = jax.device_put(params)

  def encode(texts: Sequence[str], bar: Any = None) -> np.ndarray:
    tokens = tokenizer(texts, context_length=model.context_length)
    size = min(batch_size, len(tokens))
    out = []
    for start in range(0, len(tokens), size):
      chunk = tokens[start:start + size]
      padded = np.concatenate([chunk, np.zeros((size - len(chunk), chunk.shape[1]), chunk.dtype)])
      out.append(np.asarray(apply(params, padded))[:len(chunk)])
      if bar is not None:
        bar.update(len(chunk))
    return np.concatenate(out).astype(np.float32)

  return encode


def _unit_rows(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def class_text_embeddings(model: CLIPTextTransformer, params: Any, classnames: Sequence[str],
                          templates: Sequence[str] = DEFAULT_TEMPLATES, tokenizer: ClipTokenizer | None = None,
                          batch_size: int = 256) -> np.ndarray:
  """L2-normalised class embeddings [C, E] float32 of the prompts `templates` ('{}' = the class name).

  With several templates (the prompt ensemble), each prompt's embedding is L2-normalised, the C x T are averaged
  over templates, and the mean is normalised again, as in CLIP's zero-shot notebook.
  """
  if not classnames or not templates:
    raise ConfigError("class_text_embeddings needs at least one class name and one template")
  for template in templates:
    if template.count("{}") != 1:
      raise ConfigError(f"prompt template {template!r} must contain '{{}}' (the class name) exactly once")
  encode = text_encoder(model, params, tokenizer, batch_size)
  total = np.zeros((len(classnames), model.embed_dim), np.float64)
  with progress.bar(len(templates) * len(classnames), "text embeddings", unit="prompt") as bar:
    for template in templates:
      prompts = [template.replace("{}", name) for name in classnames]
      total += _unit_rows(encode(prompts, bar).astype(np.float64))
  return _unit_rows(total / len(templates)).astype(np.float32)


def prompt_name(name: str) -> str:
  """A class name as LIFT puts it into a prompt: underscores as spaces (shijxcs/LIFT @ 661ead9, trainer.py:306;
  Places-365's names are written with them)."""
  return name.replace("_", " ")


def zero_shot_head(text: CLIPTextTransformer, text_params: Any, proj: np.ndarray, logit_scale: float,
                   classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                   tokenizer: ClipTokenizer | None = None) -> tuple[dict[str, np.ndarray], heads.HeadSpec]:
  """CLIP's zero-shot classifier as a head over the visual tower's pooled features z: logits =
  exp(logit_scale) (z P / ||z P||) . t_j, t_j the normalised text embedding of class j's prompts (`templates`),
  P the visual projection `proj` [d, E]. Returns (params {'kernel' [E, C], 'projection' [d, E]}, its HeadSpec): a
  linear head over projected, normalised features, without bias (mlfoundations/open_clip @ 89fb801,
  src/open_clip/model.py:416-419, CLIP.get_logits; LIFT's ZeroShotCLIP, models/models.py:32-41)."""
  embeddings = class_text_embeddings(text, text_params, [prompt_name(n) for n in classnames], templates, tokenizer)
  kernel = np.float32(np.exp(logit_scale)) * embeddings.T
  spec = heads.HeadSpec("linear", bias=False, normalize=True, project=int(proj.shape[1]))
  return {"kernel": kernel.astype(np.float32), "projection": np.asarray(proj, np.float32)}, spec
