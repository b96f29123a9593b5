"""A PyTorch twin of LIFT's training step: ltr_jax's stage-2 LIFT step against LIFT's own modules, step for step.

What is proved: on the same random CLIP-layout ViT (open_clip's VisionTransformer, QuickGELU, width 32, 2 blocks of
4 heads, 4-pixel patches on 16x16 images), the same AdaptFormer initialisation, the same text-initialised cosine
head and the same batches, ltr_jax's real stage-2 LIFT step and LIFT's training loop give the same loss at every
step and, after 3 SGD steps, the same adapter parameters (LayerNorm, down, up, learned scale, in every block) and the
same head; ltr_jax leaves every other backbone parameter bit-identical. The same with gradient accumulation
(ltr_jax's accumulate_steps=2 against LIFT's micro_batch_size = batch / 2).

Against what: LIFT (Shi et al., ICML 2024), shijxcs/LIFT @ 661ead9b78368f05ba79abe4672d63154467f823, re-written
below in plain PyTorch (LIFT imports its own copy of OpenAI's CLIP; open_clip's VisionTransformer has the same
modules and parameter names, and `_lift_features` without adapters is checked against open_clip's own forward):
- models/peft_modules.py AdaptFormer :54-78: its own LayerNorm :57, down-projection to r :58, ReLU :59,
  up-projection :60, learned scale ones(1) :61; down kaiming_normal_(a=sqrt(5)) :63, up-projection and both biases
  zero :64-66; output up(relu(down(ln x))) * scale :72-78.
- models/peft_vit.py: one AdaptFormer per block :152-157 of bottleneck r = 2 ** max(0, int(log2(C / 2L))) when
  adapter_dim is None :94-95; Peft_ViT.forward :286-464 for a CLIP ViT: patch embedding, class token, position
  embedding, ln_pre :288-293; pre-norm attention in LND layout through F.scaled_dot_product_attention :322-408; the
  MLP (mlp[0], act mlp[1], mlp[2]) :334-338, :413-442; the AdaptFormer reads the block's input after attention
  (`identity` :413) and is added beside the MLP output :450-453; ln_post on the class token, proj unused :457-459.
- models/classifiers.py CosineClassifier :33-41 (normalised features . normalised class vectors * scale, no bias);
  utils/config.py scale 25 :30; trainer.py init_head_text_feat :313-353: normalised text embeddings mapped back
  through proj^T and normalised (:349-351) become the head's weight (:353, apply_weight classifiers.py:19-20).
- utils/losses.py LogitAdjustedLoss :84-94: cross-entropy of logits + tau log(n_j / n), tau 1, n_j the training
  class counts as a float32 tensor (trainer.py:286, :300-301).
- trainer.py: everything but the tuner and the head frozen :257-265; SGD(lr 0.01, momentum 0.9, weight decay 5e-4)
  over tuner and head :278-280 (utils/config.py :24-26); CosineAnnealingLR(T_max=num_epochs) :281, stepped once per
  epoch :526; micro-batches of micro_batch_size from the loader :175-177, accum_step = batch_size /
  micro_batch_size :191-192, each micro-batch's loss / accum_step backpropagated and one optimizer step per
  accum_step micro-batches :462-469 (fp32: LIFT's prec 'fp32'; its 'amp' default changes only the arithmetic).

ltr_jax's side is the code the stage-2 run uses, not a re-implementation: configs/base.py's stage2.lift entry (its
values, with epochs, batch size and accumulation overridden; adapter_dim 0, i.e. LIFT's formula, r = 4 for 16 classes
and 2 blocks), ltr_jax.stage2.backbone.lift (the Setup: AdaptFormer bottleneck, cosine head of scale 25 without bias
initialised from the CLIP zero-shot head) and loop_recipe, ltr_jax.models.from_config (the tiny tower registered as
an architecture for the test), and train.make_optimizer / make_train_step wired as train.train wires them. The CLIP
weights move to Flax through ltr_jax.import_vit.openai_clip_to_variables; the adapters start from LIFT's own
initialisation, drawn in PyTorch and copied into the params tree (whose structure is checked against the model's),
where backbone.run would draw fresh ones from Flax (tests/test_vit.py checks that initialisation): both sides must
start from the same random numbers.

Schedule: LIFT's cosine is per epoch, ltr_jax's per step over epochs x steps_per_epoch. Each epoch here is one batch
(a dataset of 8 images, batch 8), so both run cosine over the 3 steps: lr 0.01, 0.0075, 0.0025. Each step sees other
images (the views augmentation would make in each epoch); augmentation itself is out of scope, so both sides read the
same uint8 images, normalised with CLIP's mean and std (LIFT trainer.py:94-95) by ltr_jax's step and by
ToTensor/Normalize's arithmetic here.

Tolerance: both sides compute in float32 (highest matmul precision) the same sums in other orders, so they differ by
float32 rounding only. Measured here: the losses (5.4-6.5, float32 spacing 4.8e-7) by at most 4.8e-7 without
accumulation and 9.5e-7 with it (the LA prior is float64 in ltr_jax, float32 in LIFT); the parameters after 3 steps
(adapter LayerNorm scales ~1, where the spacing is 1.2e-7; down kernels ~0.1; head entries ~0.2) by at most 8.9e-8.
LOSS_ATOL = 1e-5 and PARAM_ATOL = 2e-6 leave a 10-20x margin over that rounding and stay far below what a fault
moves: the up-projections, zero at first, reach 0.012-0.018 (asserted > 100 x PARAM_ATOL), and each fault of
test_a_faulty_twin_breaks_parity (the AdaptFormer after the MLP or on ln_2's output instead of beside the MLP, the LA
prior left out, the head not trained) moves the losses by 1.3e-2 to 1.7 and the parameters by 3.5e-3 to 0.16. The
zero up-projection makes every adapter's output zero at step 0, so the first loss cannot see a misplaced adapter: the
later losses and the parameters after the steps do.
"""
import copy
import math
import os
import re
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import checkpoints, import_vit, losses, masks, models, parallel, train, validate
from ltr_jax.data import pipeline
from ltr_jax.models import Classifier, vit
from ltr_jax.stage2 import backbone, run as stage2

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `configs`, as plain `pytest` runs
from benchmarks.torch_models import AdaptFormer  # noqa: E402
from configs import base, quickstart_vit  # noqa: E402

F = torch.nn.functional

WIDTH, LAYERS, HEADS, PATCH, IMAGE, EMBED = 32, 2, 4, 4, 16, 16
NUM_CLASSES = 16  # with 2 blocks, LIFT's bottleneck 2 ** int(log2(16 / 4)) = 4 (peft_vit.py:95)
BATCH, STEPS = 8, 3
COUNTS = np.round(200 * 0.02**(np.arange(NUM_CLASSES) / (NUM_CLASSES - 1))).astype(np.int64)  # 200 ... 4 images
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
LOSS_ATOL, PARAM_ATOL = 1e-5, 2e-6  # see the module docstring
ARCH_NAME = "lift_twin_tiny_clip"

# --- LIFT in plain PyTorch -------------------------------------------------------------------------------------


class CosineClassifier(torch.nn.Module):
  """LIFT models/classifiers.py:33-41: scale * normalise(x) . normalise(w_j), no bias; weight [C, D]."""

  def __init__(self, weight, scale: float = 25.0):
    super().__init__()
    self.weight = torch.nn.Parameter(weight.clone())
    self.scale = scale

  def forward(self, x):
    return F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1)) * self.scale


def _lift_bottleneck(num_classes: int, layers: int) -> int:
  """LIFT models/peft_vit.py:95, for adapter_dim None."""
  return 2**max(0, int(math.log2(num_classes / (layers * 2))))


def _lift_features(visual, adapters, images, fault: str = ""):
  """LIFT's Peft_ViT.forward (models/peft_vit.py:286-459) on an OpenAI-layout CLIP tower, AdaptFormer only.

  adapters: one AdaptFormer per block, or None (no tuner). fault: 'after_mlp' feeds the adapter the MLP's output
  (sequential, where LIFT's plain Adapter sits, :447-448), 'on_ln_2' the MLP's normalised input; '' is LIFT's."""
  x = visual.conv1(images)  # [N, D, g, g]
  x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
  x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
  x = visual.ln_pre(x)
  for i, block in enumerate(visual.transformer.resblocks):
    x = x.permute(1, 0, 2)  # NLD -> LND, :322
    length, batch, dim = x.shape
    heads = block.attn.num_heads
    identity = x
    qkv = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias)
    q, k, v = (t.contiguous().view(length, batch * heads, dim // heads).transpose(0, 1) for t in qkv.chunk(3, dim=-1))
    y = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).contiguous().view(-1, dim)
    x = F.linear(y, block.attn.out_proj.weight, block.attn.out_proj.bias).view(length, batch, dim) + identity
    identity = x  # the AdaptFormer's input, :413
    normed = block.ln_2(x)
    y = F.linear(block.mlp[1](F.linear(normed, block.mlp[0].weight, block.mlp[0].bias)), block.mlp[2].weight,
                 block.mlp[2].bias)
    if adapters is not None:
      y = y + adapters[i]({"after_mlp": y, "on_ln_2": normed}.get(fault, identity))  # :450-451
    x = (y + identity).permute(1, 0, 2)  # :453, :455
  return visual.ln_post(x[:, 0])  # :457-459, proj unused


def _lift_train(visual, adapters, head, batches, accumulate_steps: int, fault: str = "") -> list[float]:
  """LIFT's loop (trainer.py:257-281, :438-469, :526) for one batch per epoch: the loss of every step.

  fault: 'no_prior' drops the LA prior (plain cross-entropy), 'frozen_head' leaves the head out of the optimizer;
  the others go to _lift_features."""
  for p in visual.parameters():
    p.requires_grad_(False)
  head.weight.requires_grad_(fault != "frozen_head")
  log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / COUNTS.sum())  # losses.py:87-88
  tau = 0.0 if fault == "no_prior" else 1.0
  groups = [{"params": adapters.parameters()}] + ([] if fault == "frozen_head" else [{"params": head.parameters()}])
  optim = torch.optim.SGD(groups, lr=0.01, weight_decay=5e-4, momentum=0.9)
  sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, STEPS)  # T_max = num_epochs, one step each here
  mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
  step_losses = []
  for batch in batches:  # one epoch
    images = (torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).float() / 255 - mean) / std  # ToTensor, Normalize
    labels = torch.from_numpy(batch["label"]).long()
    micro_losses = []
    for images_micro, labels_micro in zip(images.chunk(accumulate_steps), labels.chunk(accumulate_steps)):
      logits = head(_lift_features(visual, adapters, images_micro, fault))
      loss = F.cross_entropy(logits + tau * log_prior.unsqueeze(0), labels_micro)  # losses.py:92-94
      (loss / accumulate_steps).backward()
      micro_losses.append(loss.item())
    optim.step()
    optim.zero_grad()
    sched.step()  # :526, after the epoch
    step_losses.append(float(np.mean(micro_losses)))
  return step_losses


def _tiny_clip_visual():
  """open_clip's VisionTransformer (OpenAI layout, QuickGELU), random, every 1-D parameter perturbed by N(0, 0.1^2)
  (a fresh one has LayerNorm weights 1 and biases 0, which would hide a swapped scale and bias)."""
  from open_clip.model import QuickGELU
  from open_clip.transformer import VisionTransformer
  torch.manual_seed(0)
  visual = VisionTransformer(image_size=IMAGE, patch_size=PATCH, width=WIDTH, layers=LAYERS, heads=HEADS, mlp_ratio=4.0,
                             output_dim=EMBED, act_layer=QuickGELU)
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for p in visual.parameters():
      if p.ndim == 1:
        p.add_(0.1 * torch.randn(p.shape, generator=generator))
  return visual.eval()


def _as_flax(adapters, head=None) -> dict[str, np.ndarray]:
  """{ltr_jax param path: value} of LIFT's tuner (and head): Linear weights [out, in] -> Flax kernels [in, out]."""
  out = {} if head is None else {"head/kernel": head.weight.detach().numpy().T}
  for i, adapter in enumerate(adapters):
    prefix = f"backbone/transformer/resblocks_{i}/adapter"
    out[f"{prefix}/scale"] = adapter.scale.detach().numpy()
    out[f"{prefix}/ln/scale"] = adapter.ln.weight.detach().numpy()
    for module, name in ((adapter.ln, "ln"), (adapter.down_proj, "down"), (adapter.up_proj, "up")):
      if name != "ln":
        out[f"{prefix}/{name}/kernel"] = module.weight.detach().numpy().T
      out[f"{prefix}/{name}/bias"] = module.bias.detach().numpy()
  return out


def _adapter_paths(tree) -> list[str]:
  return [p for p in masks.paths(tree) if "/adapter/" in p]


def _leaf(tree, path: str) -> np.ndarray:
  for key in path.split("/"):
    tree = tree[key]
  return np.asarray(tree)


def _set(tree: dict, path: str, value) -> None:
  *parents, last = path.split("/")
  for key in parents:
    tree = tree.setdefault(key, {})
  tree[last] = value


# --- ltr_jax's stage-2 LIFT step ------------------------------------------------------------------------------


def _ltr_jax_lift(twin, accumulate_steps: int, mesh=None):
  """ltr_jax's stage-2 LIFT run, built as backbone.run and train.train build it, from the imported CLIP tower and
  LIFT's initial adapters: (setup, initial params, params after the steps, the loss of every step)."""
  config = base.get_config()
  config.model.name = ARCH_NAME
  config.data.update(dict(mean=CLIP_MEAN, std=CLIP_STD, image_size=IMAGE))
  hyper = config.stage2.lift
  hyper.update(dict(epochs=STEPS, batch_size=BATCH, accumulate_steps=accumulate_steps))
  splits = types.SimpleNamespace(num_classes=NUM_CLASSES, class_counts=COUNTS, image_shape=(IMAGE, IMAGE, 3))
  setup = backbone.lift(twin.stage1, twin.joint, hyper, config, splits)
  recipe = backbone.loop_recipe(config, hyper)
  with pytest.MonkeyPatch.context() as mp:  # the tiny tower as a named architecture, so models.from_config builds it
    mp.setitem(vit.ARCHITECTURES, ARCH_NAME, twin.arch)
    model = models.from_config(config.model, NUM_CLASSES, recipe.frozen, setup.head_spec, setup.peft)
    last_stage = models.last_stage_name(config.model.name)
  # As backbone.run's init(), stage 1's params beside the new modules', which here are LIFT's initial adapters (the
  # same random numbers on both sides); their tree must be exactly the model's.
  params = {"backbone": jax.tree.map(np.asarray, twin.stage1["params"]["backbone"]), "head": setup.head}
  for path, value in _as_flax(twin.adapters).items():
    _set(params, path, value)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, IMAGE, IMAGE, 3)), train=False))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(lambda x: (x.shape, x.dtype),
                                                                            expected["params"])
  mesh = mesh or parallel.data_mesh()
  steps_per_epoch = pipeline.steps_per_epoch(BATCH, recipe.batch_size)  # a dataset of one batch
  tx = train.make_optimizer(recipe, steps_per_epoch,
                            masks.lr_groups(params, masks.resolve(recipe.frozen, last_stage), recipe.lr_mults))
  loss_fn = losses.get_loss(recipe.loss, splits.class_counts, steps_per_epoch, recipe.loss_hyper,
                            config.model.head_scale)
  step = train.make_train_step(model, tx, loss_fn, config.data, mesh, recipe.mixup_alpha, config.seed, setup.constraint,
                               steps_per_epoch, recipe.accumulate_steps)
  state = train.new_state({"params": params, "batch_stats": {}}, tx, mesh)
  step_losses = []
  with jax.default_matmul_precision("highest"):
    for batch in twin.batches:
      state, metrics = step(state, parallel.global_batch(batch, mesh))
      step_losses.append(float(metrics["loss"]))
  return setup, params, jax.device_get(state.params), step_losses


@pytest.fixture(scope="module")
def twin():
  """LIFT's side (the torch CLIP tower, its initial adapters and text-initialised head), what ltr_jax reads of it
  (stage-1 variables, architecture, zero-shot head), the batches, and run(accumulate_steps): ltr_jax's run, once."""
  visual = _tiny_clip_visual()
  state = {f"visual.{k}": v.numpy() for k, v in visual.state_dict().items()}
  imported, arch = import_vit.openai_clip_to_variables(state, heads=HEADS)
  assert arch["visual"]["act"] == "quick_gelu" and arch["visual"]["image_size"] == IMAGE
  rng = np.random.default_rng(0)
  text = rng.normal(size=(NUM_CLASSES, EMBED)).astype(np.float32)  # stands in for CLIP's class text embeddings
  text /= np.linalg.norm(text, axis=1, keepdims=True)
  with torch.no_grad():  # LIFT's init_head_text_feat, trainer.py:349-353
    head = F.normalize(F.normalize(torch.tensor(text), dim=-1) @ visual.proj.t(), dim=-1)
  torch.manual_seed(2)
  adapters = torch.nn.ModuleList([AdaptFormer(WIDTH, _lift_bottleneck(NUM_CLASSES, LAYERS)) for _ in range(LAYERS)])
  batches = [{
      "image": rng.integers(0, 256, (BATCH, IMAGE, IMAGE, 3), dtype=np.uint8),
      "label": rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
  } for _ in range(STEPS)]
  twin = types.SimpleNamespace(
      visual=visual, adapters=adapters, head=head, arch=arch["visual"], batches=batches,
      joint=Classifier(text.T.copy(), np.zeros(NUM_CLASSES, np.float32), normalize=True,
                       projection=imported["visual"]["proj"]),
      stage1={"params": {"backbone": imported["visual"]}, "batch_stats": {}})
  runs = {}
  twin.run = lambda k: runs[k] if k in runs else runs.setdefault(k, _ltr_jax_lift(twin, k))
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # a tiny model: more threads only wait on each other (1.4 s a run instead of 0.02 s)
  yield twin
  torch.set_num_threads(threads)


def _torch_twin(twin):
  """Fresh copies of LIFT's initial tuner and head."""
  return copy.deepcopy(twin.adapters), CosineClassifier(twin.head)


def _max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_lift_features_rewrite_matches_open_clip(twin):
  """The PyTorch rewrite of LIFT's forward, without a tuner, is open_clip's tower (before proj)."""
  x = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
  with torch.no_grad():
    diff = _max_diff(_lift_features(twin.visual, None, x) @ twin.visual.proj, twin.visual(x))
  assert diff < 1e-5


def test_setup_matches_lift(twin):
  """backbone.lift: LIFT's bottleneck, a cosine head of scale 25 without bias, text-initialised as LIFT does."""
  setup, initial, _, _ = twin.run(1)
  assert setup.peft == models.Peft(adaptformer_dim=_lift_bottleneck(NUM_CLASSES, LAYERS)) == models.Peft(4)
  assert (setup.head_spec.kind, setup.head_spec.scale, setup.head_spec.bias) == ("cosine", 25.0, False)
  assert set(initial["head"]) == {"kernel"}
  assert _max_diff(np.asarray(initial["head"]["kernel"]).T, twin.head) < 1e-6


@pytest.mark.parametrize("accumulate_steps", [1, 2])
def test_training_step_matches_lift(twin, accumulate_steps):
  _, initial, after, jax_losses = twin.run(accumulate_steps)
  adapters, head = _torch_twin(twin)
  torch_losses = _lift_train(twin.visual, adapters, head, twin.batches, accumulate_steps)
  theirs = _as_flax(adapters, head)
  assert set(theirs) == set(_adapter_paths(after)) | {"head/kernel"}  # every trained parameter compared
  diffs = {p: _max_diff(_leaf(after, p), v) for p, v in theirs.items()}
  worst = max(diffs, key=diffs.get)
  loss_diff = _max_diff(jax_losses, torch_losses)
  print(f"accumulate_steps {accumulate_steps}: losses {np.round(jax_losses, 4).tolist()}, max |diff| loss "
        f"{loss_diff:.1e}, params {diffs[worst]:.1e} ({worst})")
  assert loss_diff < LOSS_ATOL
  assert diffs[worst] < PARAM_ATOL
  # Every adapter parameter trained; the up-projections, zero at first, moved far beyond the tolerance.
  for p in _adapter_paths(after):
    assert not np.array_equal(_leaf(after, p), _leaf(initial, p)), p
  assert not any(np.any(_leaf(initial, p)) for p in theirs if p.endswith("/up/kernel"))
  assert min(np.abs(_leaf(after, p)).max() for p in theirs if p.endswith("/up/kernel")) > 100 * PARAM_ATOL
  # The rest of the backbone is frozen: bit-identical.
  for p in masks.paths(after["backbone"]):
    if "/adapter/" not in p:
      np.testing.assert_array_equal(_leaf(after["backbone"], p), _leaf(initial["backbone"], p), err_msg=p)


@pytest.mark.parametrize("fault", ["after_mlp", "on_ln_2", "no_prior", "frozen_head"])
def test_a_faulty_twin_breaks_parity(twin, fault):
  """The parity check above would fail, by more than 10x its tolerance, if LIFT's step differed in any of these ways;
  a misplaced adapter only after the first update (its output is zero until then)."""
  _, _, after, jax_losses = twin.run(1)
  adapters, head = _torch_twin(twin)
  torch_losses = _lift_train(twin.visual, adapters, head, twin.batches, 1, fault)
  params = max(_max_diff(_leaf(after, p), v) for p, v in _as_flax(adapters, head).items())
  loss = _max_diff(jax_losses, torch_losses)
  print(f"{fault}: max |diff| loss {loss:.1e}, params {params:.1e}")
  assert loss > 10 * LOSS_ATOL or params > 10 * PARAM_ATOL
  if fault in ("after_mlp", "on_ln_2"):
    assert abs(jax_losses[0] - torch_losses[0]) < LOSS_ATOL and params > 10 * PARAM_ATOL


def test_lora_and_bitfit_train_only_their_parameters(tmp_path):
  """stage2.lift's other options, run on real data through the stage-2 driver: adapter='lora' adds and trains LoRA on
  the queries and values, adapter='none' with BitFit's frozen pattern trains the backbone's biases; besides those (and
  the new cosine head) every backbone parameter stays stage 1's, bit for bit. The quickstart's ViT on 18 training
  images of Fashion-MNIST-LT, one epoch each."""
  config = quickstart_vit.get_config()
  config.data.update(dict(n_max=4, imbalance_ratio=4.0, val_per_class=2, num_workers=0))
  config.train.update(dict(epochs=1, batch_size=8, warmup_epochs=0.0))
  short = dict(epochs=1, batch_size=8, paper=False)
  config.stage2.lift_lora = base.entry(**{**config.stage2.lift.to_dict(), **short, "adapter": "lora"})
  config.stage2.lift_bitfit = base.entry(
      **{**config.stage2.lift.to_dict(), **short, "adapter": "none", "frozen": ("backbone/(?!.*/bias$).*",)})
  config.stage2.update(dict(methods=("lift_lora", "lift_bitfit"), five_crop=(), batch_size=512))
  validate.validate(config)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  stage2.run(config, workdir)
  mesh = parallel.data_mesh()

  def backbone_leaves(directory):
    _, variables, meta = checkpoints.restore_for_inference(config, os.path.join(workdir, directory), mesh)
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(variables["params"]["backbone"]))[0]
    return {"/".join(k.key for k in path): np.asarray(v) for path, v in leaves}, meta

  stage1, _ = backbone_leaves("checkpoints")
  lora, meta = backbone_leaves("stage2/lift_lora/checkpoints")
  assert meta["peft"] == {"adaptformer_dim": 0, "lora_rank": 1}  # LIFT's rule: 2^floor(log2(10 / 8)) = 1
  added = sorted(set(lora) - set(stage1))
  assert added and all(_is_lora(p) for p in added) and set(stage1) <= set(lora)
  assert all(np.array_equal(stage1[p], lora[p]) for p in stage1)
  assert all(np.abs(lora[p]).max() > 0 for p in added if p.endswith("/b"))  # LoRA's b starts at zero, and trained
  bitfit, meta = backbone_leaves("stage2/lift_bitfit/checkpoints")
  assert "peft" not in meta and set(bitfit) == set(stage1)
  moved = {p for p in stage1 if not np.array_equal(stage1[p], bitfit[p])}
  assert moved and all(p.endswith("/bias") for p in moved)


def _is_lora(path: str) -> bool:
  """A LoRA parameter of the queries or values: transformer/resblocks_{i}/attn/lora_{q,v}/{a,b}."""
  return re.fullmatch(r"transformer/resblocks_\d+/attn/lora_[qv]/[ab]", path) is not None
