"""A CLIP checkpoint in, stage 2 on its frozen features out: python -m ltr_jax.import_torch --kind=open_clip, then
python -m ltr_jax.main --config=configs/imagenet_lt_clip_vit_b16.py --mode=decouple, on a tiny list-file dataset.

The checkpoint is open_clip's ViT-B-16-quickgelu (the layout and activation of OpenAI's ViT-B/16) with random
weights, saved as a state_dict .bin as open_clip writes one: no pretrained weights can be downloaded here. The data:
four classes of noisy colour patches as JPEG files with a list file per split and a class-names file, one of them
written with an underscore as Places-365's are. The images are 40 x 48, resized to 72 and centre-cropped to 64, so
the position embedding is resampled to a 4 x 4 grid (ViT-B/16's own 224 would cost minutes here).

What is checked, each against an independent computation:
- the imported head is CLIP's zero-shot classifier: open_clip's own text tower (PyTorch) on "a photo of a {}." with
  the class names (underscores as spaces, as LIFT writes them) gives the kernel's columns, times exp(logit_scale);
- the zero-shot row's test accuracy is that of numpy's logits from the cached features, the checkpoint's `proj`
  and PyTorch's text embeddings; tau-norm of that head is the head itself (every class vector has one norm);
- the zero-shot row of the five-crop test is numpy's mean of the five crops' logits, from their cached features;
- the linear probe and cRT learn the colours from the frozen random features (accuracy a method must reach).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import imagenet_lt_clip_vit_b16
from ltr_jax import checkpoints, import_torch, parallel
from ltr_jax.errors import CheckpointError, ConfigError

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("red_apple", "green leaf", "blue sky", "yellow banana")
COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30))
COUNTS = {"train": (12, 8, 5, 3), "val": (3, 3, 3, 3), "test": (5, 5, 5, 5)}
METHODS = ("joint", "linear_probe", "crt_cached", "tau_norm", "logit_adjust")


def _dataset(root: str) -> dict[str, object]:
  """The tiny list-file dataset under root; the config keys that point at it."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "img"))
  for split, counts in COUNTS.items():
    lines = []
    for label, count in enumerate(counts):
      for i in range(count):
        pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype(np.uint8)
        name = f"img/{split}_{label}_{i}.jpg"
        Image.fromarray(pixels).save(os.path.join(root, name), quality=90)
        lines.append(f"{name} {label}\n")
    with open(os.path.join(root, f"{split}.txt"), "w") as f:
      f.writelines(lines)
  with open(os.path.join(root, "names.txt"), "w") as f:
    f.write("\n".join(NAMES) + "\n")
  return dict(name="tiny_clip", list_dir=root, image_root=root, train_list="train.txt", val_list="val.txt",
              test_list="test.txt", class_names="names.txt", num_classes=0, image_size=64, resize=72,
              five_crop_resize=80, num_workers=0)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
  """(workdir, the open_clip model, the data keys, the checkpoint file) after the import and --mode=decouple."""
  tmp = tmp_path_factory.mktemp("clip")
  data = _dataset(str(tmp / "data"))
  torch.manual_seed(0)
  net = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
  checkpoint = str(tmp / "open_clip_model.bin")
  torch.save(net.state_dict(), checkpoint)
  workdir = str(tmp / "workdir")
  overrides = [f"--config.data.{key}={value}" for key, value in data.items()]
  overrides += [f"--config.stage2.methods={METHODS!r}".replace(" ", ""), "--config.stage2.five_crop=('joint',)"]
  config = os.path.join(ROOT, "configs", "imagenet_lt_clip_vit_b16.py")
  for command in (["ltr_jax.import_torch", "--kind=open_clip",
                   f"--checkpoint={checkpoint}"], ["ltr_jax.main", "--mode=decouple"]):
    run = subprocess.run([sys.executable, "-m", *command, f"--config={config}", f"--workdir={workdir}", *overrides],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
  return workdir, net, data, checkpoint


def _text_embeddings(net) -> np.ndarray:
  """PyTorch's normalised embeddings of LIFT's prompt for each class, [C, E]."""
  tokenizer = open_clip.get_tokenizer("ViT-B-16-quickgelu")
  with torch.no_grad():
    prompts = tokenizer([f"a photo of a {name.replace('_', ' ')}." for name in NAMES])
    return net.encode_text(prompts, normalize=True).numpy().astype(np.float64)


def _restored(workdir: str, data: dict) -> dict:
  config = imagenet_lt_clip_vit_b16.get_config()
  config.data.update(data)
  _, variables, meta = checkpoints.restore_for_inference(config, os.path.join(workdir, "checkpoints"),
                                                         parallel.data_mesh())
  return {"head": variables["params"]["head"], "backbone": variables["params"]["backbone"], "meta": meta}


def test_the_imported_head_is_clips_zero_shot_classifier(clip_run):
  workdir, net, data, _ = clip_run
  restored = _restored(workdir, data)
  head, meta = restored["head"], restored["meta"]
  assert meta["head"] == dict(kind="linear", scale=1.0, bias=False, lws=False, center=False, normalize=True,
                              project=512)
  assert meta["class_names"] == list(NAMES) and meta["imported_as"] == "open_clip"
  assert meta["zero_shot_prompts"] == "single"
  expected = float(net.logit_scale.detach().exp()) * _text_embeddings(net).T
  kernel = np.asarray(head["kernel"], np.float64)
  assert kernel.shape == (512, 4)
  assert np.abs(kernel - expected).max() < 1e-4 * np.abs(expected).max()
  np.testing.assert_allclose(np.asarray(head["projection"]), net.visual.proj.detach().numpy(), rtol=0, atol=0)
  np.testing.assert_allclose(np.asarray(restored["backbone"]["proj"]), net.visual.proj.detach().numpy(), atol=0)


def test_decouple_on_clip_features_reports_every_method(clip_run):
  workdir, net, data, _ = clip_run
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert tuple(results["methods"]) == (*METHODS[:1], "joint_five_crop", *METHODS[1:])
  assert results["class_names"] == list(NAMES)
  rows = results["methods"]
  assert rows["joint"]["label"] == "Zero-shot CLIP" and rows["linear_probe"]["label"] == "Linear probe"
  assert rows["joint_five_crop"]["label"] == "Zero-shot CLIP, five-crop test"
  # Zero-shot from the cached features, the visual projection and PyTorch's text embeddings, in numpy.
  labels = np.repeat(np.arange(4), COUNTS["test"])
  for row, crops in (("joint", 1), ("joint_five_crop", 5)):
    z = np.load(os.path.join(workdir, "features", f"{'test' if crops == 1 else 'test_five_crop'}.npy"))
    assert z.shape == ((20, 768) if crops == 1 else (20, 5, 768))
    embedded = z.astype(np.float64) @ net.visual.proj.detach().numpy().astype(np.float64)
    logits = (embedded / np.linalg.norm(embedded, axis=-1, keepdims=True)) @ _text_embeddings(net).T
    mean = logits.reshape(20, crops, 4).mean(axis=1)
    assert rows[row]["all"] == pytest.approx(100 * np.mean(mean.argmax(1) == labels), abs=1e-6)
  assert rows["tau_norm"]["all"] == rows["joint"]["all"]  # one norm for every class vector: tau changes nothing
  # The colours are linearly separable in the random tower's features: a trained classifier finds them.
  assert rows["linear_probe"]["all"] >= 90.0 and rows["crt_cached"]["all"] >= 90.0
  assert 0.0 <= rows["logit_adjust"]["tau"] <= 2.0


def test_import_names_what_does_not_fit(clip_run, tmp_path):
  """Weights of another size than config key model.name's, and a zero-shot head without class names: one line each,
  and no checkpoint written."""
  _, _, data, checkpoint = clip_run
  config = imagenet_lt_clip_vit_b16.get_config()
  config.data.update(data)
  config.model.name = "clip_vit_b32"
  with pytest.raises(CheckpointError, match=r"patch_size 16 \(the table: 32\), so not config key model.name = "
                     r"'clip_vit_b32'"):
    import_torch.import_checkpoint(checkpoint, config, str(tmp_path / "b32"), "open_clip")
  config.model.name = "clip_vit_b16"
  config.data.class_names = ""
  with pytest.raises(ConfigError, match="config key data.class_names: the data names no classes"):
    import_torch.import_checkpoint(checkpoint, config, str(tmp_path / "nameless"), "open_clip")
  assert not (tmp_path / "b32" / "checkpoints").exists() and not (tmp_path / "nameless" / "checkpoints").exists()
