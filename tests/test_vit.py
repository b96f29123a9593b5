"""ViTs and CLIP towers in Flax against PyTorch (timm 1.0.31, open_clip 3.3.0) with random weights, loaded through
ltr_jax.import_vit from checkpoint files; the BPE tokenizer against open_clip's; LIFT's AdaptFormer and LoRA; and
negative checks showing that a wrong transpose or activation breaks the parity.

Tolerance: features are compared in float32. The Flax and PyTorch networks compute the same sums in other orders
(matmul blocking, fused softmax), so they differ by float32 rounding only: on ViT-B/16 (12 blocks) the largest
difference measured is 2-3.5e-6 on features of magnitude ~4 (the float32 spacing there is 4.8e-7). ATOL = 1e-4 leaves
a 30x margin. The faults the negative tests inject move the outputs far beyond it: a wrong transpose by 0.16-1.5,
GELU in place of QuickGELU by 8e-3-2.5e-2 even in a 2-block model; they assert > 10 x ATOL, i.e. that the parity
check would fail. Random PyTorch initialisations leave LayerNorm weights at 1 and most biases at 0, so every 1-D
parameter is perturbed first.
"""
import copy
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import import_vit
from ltr_jax.errors import CheckpointError, ConfigError
from ltr_jax.models import LTRModel, clip_text, clip_tokenizer, vit

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

# TorchScript (OpenAI's release format) is deprecated in torch 2.13: its tracer's and loader's notices.
pytestmark = [
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.(load|trace|trace_method)` is deprecated")
]

ATOL = 1e-4
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ltr_jax", "data")
_JITTED: dict = {}


def _perturb(model, seed: int):
  """Adds N(0, 0.1^2) to every 1-D parameter (LayerNorm weights and biases, linear biases, the class token)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      if p.ndim == 1:
        p.add_(0.1 * torch.randn(p.shape, generator=generator))
  return model.eval()


def _apply(model, params, x, method=None):
  """model.apply on {'params': params}, jitted once per (model, method): seeds reuse the compilation. Full float32
  matmuls (GPUs would otherwise use TF32 for float32)."""
  key = (model, method)
  train = {"train": False} if isinstance(model, vit.ViT) else {}
  if key not in _JITTED:
    if method is None:
      _JITTED[key] = jax.jit(lambda p, x: model.apply({"params": p}, x, **train))
    else:
      _JITTED[key] = jax.jit(
          lambda p, x: model.apply({"params": p}, model.apply({"params": p}, x, **train), method=method))
  with jax.default_matmul_precision("highest"):
    return np.asarray(_JITTED[key](params, x))


def _nchw(x: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
  return np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_timm_clip_vit_b16_matches_pytorch(seed, images, tmp_path):
  torch.manual_seed(seed)
  net = _perturb(timm.create_model("vit_base_patch16_clip_224", pretrained=False, num_classes=0), seed)
  with torch.no_grad():
    expected = net(_nchw(images)).numpy()
  path = tmp_path / "vit.pth"
  state = net.state_dict()
  # Seed 1 as a DataParallel training checkpoint: {'state_dict': {'module.<key>': ...}, 'epoch': ...}.
  torch.save(state if seed == 0 else {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
  params, arch = import_vit.timm_vit_to_variables(import_vit.load_torch_weights(str(path)))
  assert arch["visual"] == {
      **vit.ARCHITECTURES["vit_base_patch16_clip_224"], "mlp_dim": 3072, "proj_dim": 0, "qkv_bias": True
  }
  got = _apply(vit.ViT(**arch["visual"]), params["visual"], images)
  assert got.dtype == np.float32 and got.shape == (1, 768)
  diff = _max_diff(got, expected)
  scale = np.abs(expected).max()
  print(f"timm vit_base_patch16_clip_224 seed {seed}: max |diff| {diff:.2e}, max |feature| {scale:.1f}")
  assert diff < ATOL


@pytest.fixture(scope="module")
def timm_tiny():
  """timm's vit_tiny_patch16_224 with a 10-class head (random, perturbed), its state_dict and features / logits."""
  x = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype(np.float32)
  torch.manual_seed(0)
  net = _perturb(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10), 0)
  return (net, x, *_timm_outputs(net, x))


def _timm_outputs(net, x):
  """Pooled features and logits of a timm ViT."""
  with torch.no_grad():
    features = net.forward_head(net.forward_features(_nchw(x)), pre_logits=True)
    return features.numpy(), net.head(features).numpy()


@pytest.mark.parametrize("half", [False, True])
def test_timm_vit_tiny_matches_pytorch(half, timm_tiny, tmp_path):
  from safetensors.torch import save_file
  net, x, features, logits = timm_tiny
  state = {k: v.detach().clone() for k, v in net.state_dict().items()}
  if half:  # a float16 checkpoint: the reference runs on the same rounded weights, in float32
    net = copy.deepcopy(net)
    net.load_state_dict({k: v.half().float() for k, v in state.items()})
    features, logits = _timm_outputs(net, x)
    state = {k: v.half() for k, v in state.items()}
  save_file(state, str(tmp_path / "vit.safetensors"))
  params, arch = import_vit.timm_vit_to_variables(import_vit.load_torch_weights(str(tmp_path / "vit.safetensors")))
  assert arch["num_classes"] == 10
  assert arch["visual"] == {
      **vit.ARCHITECTURES["vit_tiny_patch16_224"], "mlp_dim": 768, "proj_dim": 0, "qkv_bias": True
  }
  assert arch["visual"]["ln_eps"] == 1e-6 and arch["visual"]["act"] == "gelu"
  got = _apply(vit.ViT(**arch["visual"]), params["visual"], x)
  got_logits = got @ params["head"]["kernel"] + params["head"]["bias"]
  diffs = _max_diff(got, features), _max_diff(got_logits, logits)
  print(f"timm vit_tiny_patch16_224 float16={half}: max |diff| features {diffs[0]:.2e}, logits {diffs[1]:.2e}")
  assert max(diffs) < ATOL


def test_timm_avg_pool_without_qkv_bias_matches_pytorch():
  """timm's global_pool='avg' (mean patch token, then fc_norm) and qkv_bias=False, on 32x32 images."""
  x = np.random.default_rng(7).normal(size=(2, 32, 32, 3)).astype(np.float32)
  torch.manual_seed(2)
  net = _perturb(
      timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, global_pool="avg", qkv_bias=False,
                        img_size=32), 2)
  with torch.no_grad():
    expected = net(_nchw(x)).numpy()
  params, arch = import_vit.timm_vit_to_variables(net.state_dict())
  assert arch["visual"]["pool"] == "avg" and not arch["visual"]["qkv_bias"] and arch["visual"]["image_size"] == 32
  assert "bias" not in params["visual"]["transformer"]["resblocks_0"]["attn"]["q"]
  diff = _max_diff(_apply(vit.ViT(**arch["visual"]), params["visual"], x), expected)
  print(f"timm vit_tiny global_pool=avg, qkv_bias=False: max |diff| {diff:.2e}")
  assert diff < ATOL


@pytest.fixture(scope="module")
def clip_tokenizer_pair():
  return clip_tokenizer.ClipTokenizer(), open_clip.get_tokenizer("ViT-B-16")


@pytest.mark.parametrize("seed", [0, 1])
def test_open_clip_vit_b16_matches_pytorch(seed, images, clip_tokenizer_pair, tmp_path):
  ours, theirs = clip_tokenizer_pair
  texts = ["a photo of a goldfish.", "A sculpture of the Great White Shark!", 'a "tattoo" of a café, 3 cats & 2 dogs']
  torch.manual_seed(seed)
  net = _perturb(open_clip.create_model("ViT-B-16", pretrained=None), seed)
  with torch.no_grad():
    image_emb = net.encode_image(_nchw(images)).numpy()
    text_emb = net.encode_text(theirs(texts)).numpy()
  torch.save(net.state_dict(), tmp_path / "open_clip_model.bin")
  params, arch = import_vit.open_clip_to_variables(import_vit.load_torch_weights(str(tmp_path / "open_clip_model.bin")))
  assert arch["visual"] == {**vit.ARCHITECTURES["clip_vit_b16"], "act": "gelu", "mlp_dim": 3072, "qkv_bias": True}
  assert arch["text"] == {
      **clip_text.TEXT_ARCHITECTURES["clip_vit_b16"], "act": "gelu", "mlp_dim": 2048, "context_length": 77,
      "vocab_size": 49408, "ln_eps": 1e-5
  }
  assert arch["logit_scale"] == pytest.approx(math.log(1 / 0.07), rel=1e-6)
  visual = vit.ViT(**arch["visual"])
  got_image = _apply(visual, params["visual"], images, method=vit.ViT.project)
  got_text = _apply(clip_text.CLIPTextTransformer(**arch["text"]), params["text"], ours(texts))
  diffs = _max_diff(got_image, image_emb), _max_diff(got_text, text_emb)
  print(f"open_clip ViT-B-16 seed {seed}: max |diff| image {diffs[0]:.2e}, text {diffs[1]:.2e}")
  assert max(diffs) < ATOL


def _tiny_clip(seed: int = 0):
  """A small OpenAI-style CLIP (QuickGELU) in open_clip, random and perturbed, with OpenAI's archive buffers."""
  from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
  torch.manual_seed(seed)
  net = CLIP(32, CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=8, image_size=32),
             CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=4, layers=2), quick_gelu=True)
  for name, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
    if hasattr(net, name):
      delattr(net, name)
    net.register_buffer(name, torch.tensor(value))
  return _perturb(net, seed)


@pytest.fixture(scope="module")
def openai_archive(tmp_path_factory, clip_tokenizer_pair):
  """OpenAI's release format: a TorchScript archive (torch.jit.trace) in float16; PyTorch's embeddings of the same
  float16-rounded weights in float32."""
  ours, theirs = clip_tokenizer_pair
  texts = ["a photo of a tench.", "a bad photo of the hard to see ballpoint pen."]
  x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
  net = _tiny_clip()
  with torch.no_grad():
    for p in net.parameters():
      p.copy_(p.half().float())
    image_emb = net.encode_image(_nchw(x)).numpy()
    text_emb = net.encode_text(theirs(texts)).numpy()
    archive = torch.jit.trace(net, (_nchw(x), theirs(texts)), check_trace=False).half()
  path = str(tmp_path_factory.mktemp("openai") / "ViT-tiny.pt")
  archive.save(path)
  return path, x, ours(texts), image_emb, text_emb


def test_openai_torchscript_float16_matches_pytorch(openai_archive):
  path, x, tokens, image_emb, text_emb = openai_archive
  state = import_vit.load_torch_weights(path)
  assert state["visual.conv1.weight"].dtype == np.float32 and "input_resolution" in state
  params, arch = import_vit.openai_clip_to_variables(state, heads=4, text_heads=4)
  assert arch["visual"]["act"] == arch["text"]["act"] == "quick_gelu"
  got_image = _apply(vit.ViT(**arch["visual"]), params["visual"], x, method=vit.ViT.project)
  got_text = _apply(clip_text.CLIPTextTransformer(**arch["text"]), params["text"], tokens)
  diffs = _max_diff(got_image, image_emb), _max_diff(got_text, text_emb)
  print(f"OpenAI-format TorchScript float16 CLIP: max |diff| image {diffs[0]:.2e}, text {diffs[1]:.2e}")
  assert max(diffs) < ATOL


def test_gelu_instead_of_quick_gelu_breaks_parity(openai_archive):
  path, x, tokens, image_emb, text_emb = openai_archive
  params, arch = import_vit.openai_clip_to_variables(import_vit.load_torch_weights(path), act="gelu", heads=4,
                                                     text_heads=4)
  got_image = _apply(vit.ViT(**arch["visual"]), params["visual"], x, method=vit.ViT.project)
  got_text = _apply(clip_text.CLIPTextTransformer(**arch["text"]), params["text"], tokens)
  diffs = _max_diff(got_image, image_emb), _max_diff(got_text, text_emb)
  print(f"GELU for QuickGELU: max |diff| image {diffs[0]:.2e}, text {diffs[1]:.2e}")
  assert min(diffs) > 10 * ATOL  # the parity check above would fail by 10x or more


@pytest.mark.parametrize("fault", ["linear_not_transposed", "conv_kh_kw_swapped"])
def test_wrong_transpose_breaks_parity(fault, timm_tiny, monkeypatch):
  net, x, features, _ = timm_tiny
  if fault == "linear_not_transposed":  # square Linear weights (q, k, v, out_proj) keep their shape
    monkeypatch.setattr(import_vit, "linear_kernel", lambda w: w if w.shape[0] == w.shape[1] else w.T)
  else:
    monkeypatch.setattr(import_vit, "CONV_AXES", (3, 2, 1, 0))
  params, arch = import_vit.timm_vit_to_variables(net.state_dict())
  diff = _max_diff(_apply(vit.ViT(**arch["visual"]), params["visual"], x), features)
  print(f"{fault}: max |diff| {diff:.2e}")
  assert diff > 10 * ATOL


def test_tokenizer_matches_open_clip(clip_tokenizer_pair):
  ours, theirs = clip_tokenizer_pair
  texts = [
      "a photo of a dog.",
      "A PHOTO of the Café — naïve façade!!",
      "Don't stop; it's 2024, we'll see'",
      "日本語のテキスト and 中文",
      "emoji 🐶🐱 test ²³ ½ Ⅻ",
      "&amp;amp; &lt;b&gt; bold &quot;q&quot;",
      "ﬁne ﬂour ｆｕｌｌｗｉｄｔｈ\u3000ＡＢＣ１２３",
      "‘curly’ “double” quotes",
      "e\u0301cole (decomposed)",
      "<start_of_text> inside <END_OF_TEXT> x",
      "tab\tand\nnewline\x0bvt  spaces",
      "hello<world> &amp;",
      "",
      "...",
      "Ελληνικά кириллица עברית العربية हिन्दी",
      "x" * 300,
      " ".join(f"word{i}" for i in range(100)),
  ]
  got, expected = ours(texts), theirs(texts).numpy()
  assert got.dtype == np.int32 and got.shape == (len(texts), 77)
  for text, a, b in zip(texts, got, expected):
    assert a.tolist() == b.tolist(), text
  assert got[-1, -1] == ours.eot_token_id and got[-1, 0] == ours.sot_token_id  # truncated, <end_of_text> last
  assert ours.vocab_size == 49408 and ours.decode(ours.encode("a photo of a Dog!")) == "a photo of a dog ! "


def test_tokenizer_without_vocabulary(monkeypatch, tmp_path):
  with pytest.raises(ConfigError, match="no such file.*pip install open_clip_torch"):
    clip_tokenizer.ClipTokenizer(str(tmp_path / "missing.txt.gz"))
  monkeypatch.setattr(clip_tokenizer, "default_vocab_path", lambda: None)
  with pytest.raises(ConfigError, match="bpe_simple_vocab_16e6.txt.gz not found"):
    clip_tokenizer.ClipTokenizer()


def test_class_text_embeddings_prompt_ensemble(clip_tokenizer_pair):
  ours, theirs = clip_tokenizer_pair
  net = _tiny_clip(3)
  params, arch = import_vit.openai_clip_to_variables(net.state_dict(), heads=4, text_heads=4)
  model = clip_text.CLIPTextTransformer(**arch["text"])
  classnames, templates = ["tench", "great white shark", "ballpoint pen"], ["a photo of a {}.", "a drawing of the {}."]
  got = clip_text.class_text_embeddings(model, params["text"], classnames, templates, ours, batch_size=2)
  with torch.no_grad():  # open_clip's zero_shot_classifier: normalised per prompt, mean over templates, normalised
    per_prompt = net.encode_text(theirs([t.format(c) for c in classnames for t in templates]), normalize=True)
    expected = torch.nn.functional.normalize(per_prompt.reshape(3, 2, -1).mean(1), dim=-1).numpy()
  assert got.shape == (3, 32) and got.dtype == np.float32
  assert _max_diff(got, expected) < 1e-5
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
  with pytest.raises(ConfigError, match="exactly once"):
    clip_text.class_text_embeddings(model, params["text"], classnames, ["a photo"], ours)


def _random_params(model, x, seed: int, **kwargs):
  """Random params of `model` for input x without compiling its initialisers: N(0, 0.2^2) leaves, LayerNorm (and
  adapter) scales 1 + N(0, 0.2^2)."""
  rng = np.random.default_rng(seed)
  kwargs = {"train": False, **kwargs} if isinstance(model, vit.ViT) else kwargs
  shapes = jax.eval_shape(lambda k, x: model.init(k, x, **kwargs), jax.random.key(0), x)["params"]
  return jax.tree_util.tree_map_with_path(
      lambda path, s: np.float32(path[-1].key == "scale") + 0.2 * rng.normal(size=s.shape).astype(np.float32), shapes)


def _overwrite(tree: dict, values: dict) -> dict:
  """`tree` with every leaf that `values` has replaced by it."""
  return {
      k: (_overwrite(v, values[k]) if isinstance(v, dict) else values[k]) if k in values else v
      for k, v in tree.items()
  }


_SMALL = dict(width=32, layers=2, heads=4, patch_size=4, image_size=16, act="quick_gelu", ln_eps=1e-5, ln_pre=True,
              patch_bias=False, proj_dim=8)


def test_fresh_adapters_leave_the_network_unchanged():
  x = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype(np.float32)
  plain = vit.ViT(**_SMALL)
  params = _random_params(plain, x, 1)
  adapted = vit.ViT(**_SMALL, adaptformer_dim=4, lora_rank=2)
  # The plain network's weights, and in every block freshly initialised adapters (initialised one module at a time:
  # compiling the whole network's initialisers takes seconds).
  merged = _overwrite(_random_params(adapted, x, 0), params)
  tokens = jnp.zeros((1, 17, 32))
  init_adapter = jax.jit(vit.AdaptFormer(4).init)
  init_lora = jax.jit(vit.LoRA(2, 32).init)
  for i, block in enumerate(merged["transformer"].values()):
    block["adapter"] = init_adapter(jax.random.key(i), tokens)["params"]
    block["attn"]["lora_q"], block["attn"]["lora_v"] = (
        init_lora(k, tokens)["params"] for k in jax.random.split(jax.random.key(10 + i)))
  block = merged["transformer"]["resblocks_1"]
  assert not np.any(block["adapter"]["up"]["kernel"]) and not np.any(block["attn"]["lora_v"]["b"])
  assert block["adapter"]["scale"].tolist() == [1.0] and not np.any(block["adapter"]["down"]["bias"])
  assert np.abs(block["attn"]["lora_q"]["a"]).max() <= 1 / math.sqrt(2)  # U(-1/sqrt(r), 1/sqrt(r))
  # Op by op (no jit): XLA compiles the two graphs apart and may then round the shared part differently.
  a = np.asarray(plain.apply({"params": params}, x, train=False))
  b = np.asarray(adapted.apply({"params": merged}, x, train=True))  # `train` changes nothing
  assert np.array_equal(a, b)
  down = vit._adapter_down_init(jax.random.key(0), (768, 4096))
  assert float(jnp.std(down)) == pytest.approx(1 / math.sqrt(3 * 768), rel=0.01)  # kaiming_normal_(a=sqrt(5))


def _layer_norm(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(((x - mean)**2).mean(-1, keepdims=True) + eps) * scale + bias


def test_adapted_block_matches_numpy():
  """One block with AdaptFormer and LoRA, every parameter random, against LIFT's forward written in numpy (float64):
  q = ln_1(x) W_q + b_q + ln_1(x) A_q B_q / r (v alike); x += out_proj(attention); x = x + mlp(ln_2 x) +
  scale * up(relu(down(ln x)))."""
  width, heads, rank, bottleneck = 16, 2, 2, 4
  block = vit.ResidualAttentionBlock(
      vit.BlockSpec(heads, 4 * width, act="quick_gelu", adaptformer_dim=bottleneck, lora_rank=rank))
  x = np.random.default_rng(4).normal(size=(2, 5, width))
  p = jax.tree.map(np.float64, _random_params(block, np.float32(x), 5))
  got = _apply(block, jax.tree.map(np.float32, p), np.float32(x))

  def dense(h, d):
    return h @ d["kernel"] + d["bias"]

  a = p["attn"]
  h = _layer_norm(x, p["ln_1"]["scale"], p["ln_1"]["bias"], 1e-5)
  q = dense(h, a["q"]) + h @ a["lora_q"]["a"] @ a["lora_q"]["b"] / rank
  k = dense(h, a["k"])
  v = dense(h, a["v"]) + h @ a["lora_v"]["a"] @ a["lora_v"]["b"] / rank

  def split(t):
    return t.reshape(2, 5, heads, width // heads).transpose(0, 2, 1, 3)

  logits = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(width // heads)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  x = x + dense((weights @ split(v)).transpose(0, 2, 1, 3).reshape(2, 5, width), a["out_proj"])
  h = dense(_layer_norm(x, p["ln_2"]["scale"], p["ln_2"]["bias"], 1e-5), p["mlp"]["c_fc"])
  mlp = dense(h / (1 + np.exp(-1.702 * h)), p["mlp"]["c_proj"])
  ad = p["adapter"]
  adapter = dense(np.maximum(dense(_layer_norm(x, ad["ln"]["scale"], ad["ln"]["bias"], 1e-5), ad["down"]), 0), ad["up"])
  expected = x + mlp + adapter * ad["scale"]
  assert _max_diff(got, expected) < 1e-5


def test_lift_bottleneck():
  # LIFT models/peft_vit.py:95 on ViT-B (12 blocks): ImageNet-LT, Places-LT, CIFAR-100-LT, iNaturalist 2018; and tiny
  assert [vit.lift_bottleneck(c, 12) for c in (1000, 365, 100, 8142, 10, 24, 47, 48)] == [32, 8, 4, 256, 1, 1, 1, 2]
  assert vit.lift_bottleneck(1000, 24) == 16
  with pytest.raises(ValueError):
    vit.lift_bottleneck(0, 12)


def test_resample_posemb_matches_timm(timm_tiny):
  from timm.layers import resample_abs_pos_embed
  posemb = np.random.default_rng(5).normal(size=(1 + 14 * 14, 8)).astype(np.float32)
  for new in (16, 10, 7):
    expected = resample_abs_pos_embed(torch.from_numpy(posemb[None]), (new, new), (14, 14), num_prefix_tokens=1)[0]
    got = vit.resample_posemb(posemb, new)
    assert got.shape == (1 + new * new, 8) and np.array_equal(got[0], posemb[0])
    assert _max_diff(got, expected.numpy()) < 1e-5
  net, *_ = timm_tiny
  params, arch = import_vit.timm_vit_to_variables(net.state_dict(), image_size=256)
  assert arch["visual"]["image_size"] == 256 and params["visual"]["positional_embedding"].shape == (257, 192)
  np.testing.assert_allclose(params["visual"]["positional_embedding"],
                             vit.resample_posemb(net.pos_embed.detach().numpy()[0], 16), atol=0)
  with pytest.raises(ValueError, match="resample"):  # the table's 224 model on 256 images
    jax.eval_shape(
        vit.ViT(**arch["visual"] | {"image_size": 224}).init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)),
        train=False)


def test_scan_remat_bfloat16_and_ltr_model():
  x = np.random.default_rng(6).normal(size=(2, 16, 16, 3)).astype(np.float32)
  model = vit.ViT(**_SMALL, adaptformer_dim=2)
  params = _random_params(model, x, 7)
  scanned = vit.ViT(**_SMALL, adaptformer_dim=2, scan=True, remat=True)
  stacked = {**params, "transformer": vit.stack_blocks(params["transformer"])}
  assert jax.tree.structure(jax.eval_shape(scanned.init, jax.random.key(0), x,
                                           train=False)["params"]) == (jax.tree.structure(stacked))

  def loss(m, p):
    z = m.apply({"params": p}, x, train=True)
    return jnp.sum(z**2), z

  (value, z), grads = jax.jit(jax.value_and_grad(lambda p: loss(model, p), has_aux=True))(params)
  (value_s, _), grads_s = jax.jit(jax.value_and_grad(lambda p: loss(scanned, p), has_aux=True))(stacked)
  assert float(value_s) == pytest.approx(float(value), rel=1e-6)
  grads_s = {**grads_s, "transformer": vit.unstack_blocks(grads_s["transformer"])}
  assert max(jax.tree.leaves(jax.tree.map(_max_diff, grads, grads_s))) < 1e-5
  low = _apply(vit.ViT(**_SMALL, adaptformer_dim=2, dtype=jnp.bfloat16), params, x)
  assert low.dtype == np.float32 and _max_diff(low, z) < 0.2
  net = LTRModel(vit.create_vit("vit_mini"), num_classes=10)
  images = np.ones((2, 28, 28, 1), np.float32)
  variables = {"params": _random_params(net, images, 9, train=False)}
  logits, features = jax.jit(net.apply, static_argnames="train")(variables, images, train=True)
  assert logits.shape == (2, 10) and features.shape == (2, net.backbone.num_features) == (2, 64)
  assert sum(v.size for v in jax.tree.leaves(variables["params"]["backbone"])) == 204_416


def test_checkpoint_errors_name_the_key(timm_tiny, tmp_path):
  net, *_ = timm_tiny
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  with pytest.raises(CheckpointError, match="missing key 'blocks.3.norm2.weight'"):
    import_vit.timm_vit_to_variables({k: v for k, v in state.items() if k != "blocks.3.norm2.weight"})
  with pytest.raises(CheckpointError, match="unexpected key 'blocks.0.ls1.gamma'"):
    import_vit.timm_vit_to_variables({**state, "blocks.0.ls1.gamma": np.ones(192, np.float32)})
  with pytest.raises(CheckpointError, match=r"key 'blocks.5.mlp.fc2.bias' has shape \(100,\)"):
    import_vit.timm_vit_to_variables({**state, "blocks.5.mlp.fc2.bias": np.ones(100, np.float32)})
  with pytest.raises(CheckpointError, match="missing key 'visual.proj'"):
    import_vit.openai_clip_to_variables(
        {f"visual.{k}": v for k, v in _tiny_clip().visual.state_dict().items() if k != "proj"})
  with pytest.raises(CheckpointError, match="no such file"):
    import_vit.load_torch_weights(str(tmp_path / "none.pth"))
  torch.save({"epoch": 1, "optimizer": {}}, tmp_path / "bad.pth")
  with pytest.raises(CheckpointError, match="'state_dict' or 'model' entry"):
    import_vit.load_torch_weights(str(tmp_path / "bad.pth"))


def test_imagenet_data_files():
  from open_clip import zero_shot_metadata
  names = clip_text.read_list(os.path.join(DATA, "imagenet_classnames.txt"))
  templates = clip_text.read_list(os.path.join(DATA, "imagenet_templates.txt"))
  assert names == list(zero_shot_metadata.IMAGENET_CLASSNAMES) and len(names) == 1000
  assert templates == [t("{}") for t in zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES] and len(templates) == 80
