"""Host-side image transforms (uint8 HWC in, uint8 HWC out).

Mean/std normalisation happens on the device inside the jitted step, so batches cross to the device
as uint8 (4x fewer bytes). Each random transform takes an explicit numpy Generator, which the pipeline
keys by the sample's global position: augmentations are identical whatever the number of workers, and
a resumed run sees the same pixels as an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from PIL import Image

from ltr_jax.errors import ConfigError


class Transform(Protocol):
  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR))
  return out[..., None] if out.ndim == 2 else out


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 grey, as PIL and torchvision


class PadCropFlip:
  """CIFAR-style augmentation: zero-pad by `pad`, random `size` crop, horizontal flip with p = 0.5."""

  def __init__(self, size: int, pad: int = 4):
    self.size, self.pad = size, pad

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width, channels = image.shape
    # Window origin in padded coordinates; copy the part of the image it overlaps (np.pad is slower).
    y = int(rng.integers(0, height + 2 * self.pad - self.size + 1)) - self.pad
    x = int(rng.integers(0, width + 2 * self.pad - self.size + 1)) - self.pad
    out = np.zeros((self.size, self.size, channels), image.dtype)
    y0, y1, x0, x1 = max(y, 0), min(y + self.size, height), max(x, 0), min(x + self.size, width)
    out[y0 - y:y1 - y, x0 - x:x1 - x] = image[y0:y1, x0:x1]
    return out[:, ::-1] if rng.random() < 0.5 else out


class RandomResizedCropFlip:
  """Inception-style crop (area scale, aspect ratio as in torchvision), flip, and optional colour jitter.

  `jitter` is the ColorJitter strength for brightness, contrast and saturation (0.4 for ImageNet-LT,
  0 for iNaturalist); the three are applied in a random order, like torchvision.
  """

  def __init__(self, size: int = 224, scale: tuple[float, float] = (0.08, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3), jitter: float = 0.0):
    self.size, self.scale, self.ratio, self.jitter = size, scale, ratio, jitter

  def _crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    area = height * width
    log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
    for _ in range(10):
      target = area * rng.uniform(*self.scale)
      aspect = math.exp(rng.uniform(*log_ratio))
      w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
      if 0 < w <= width and 0 < h <= height:
        return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    # Fallback: the largest centre crop whose aspect ratio is within bounds.
    aspect = width / height
    if aspect < self.ratio[0]:
      w, h = width, int(round(width / self.ratio[0]))
    elif aspect > self.ratio[1]:
      h, w = height, int(round(height * self.ratio[1]))
    else:
      h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w

  def _color_jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.astype(np.float32)
    factors = rng.uniform(1 - self.jitter, 1 + self.jitter, size=3).astype(np.float32)
    for op in rng.permutation(3):
      if op == 0:  # brightness
        out *= factors[0]
      elif op == 1:  # contrast: blend with the mean grey level
        grey = out.mean() if out.shape[-1] == 1 else (out @ _LUMA).mean()
        out = factors[1] * out + (1 - factors[1]) * grey
      elif out.shape[-1] == 3:  # saturation: blend with the grey image, as one 3x3 colour matrix
        out = out @ (factors[2] * np.eye(3, dtype=np.float32) + (1 - factors[2]) * _LUMA[:, None])
      np.clip(out, 0, 255, out=out)
    return out.round().astype(np.uint8)

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y, x, h, w = self._crop_box(image.shape[0], image.shape[1], rng)
    out = _resize(np.ascontiguousarray(image[y:y + h, x:x + w]), self.size, self.size)
    if rng.random() < 0.5:
      out = out[:, ::-1]
    return self._color_jitter(out, rng) if self.jitter > 0 else out


class ResizeCenterCrop:
  """Evaluation transform: resize the shorter side to `resize`, then centre-crop `size` x `size`."""

  def __init__(self, resize: int = 256, size: int = 224):
    self.resize, self.size = resize, size

  def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    height, width = image.shape[:2]
    scale = self.resize / min(height, width)
    new_h, new_w = max(self.size, round(height * scale)), max(self.size, round(width * scale))
    out = _resize(image, new_w, new_h)
    y, x = (new_h - self.size) // 2, (new_w - self.size) // 2
    return out[y:y + self.size, x:x + self.size]


class Identity:
  """Evaluation transform for data already at the model's input size (28x28, 32x32)."""

  def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    return image


def train_transform(kind: str, image_size: int, jitter: float = 0.0) -> Transform:
  """The training augmentation named by config key `data.train_transform`."""
  if kind == "pad_crop_flip":
    return PadCropFlip(image_size)
  if kind == "random_resized_crop":
    return RandomResizedCropFlip(image_size, jitter=jitter)
  raise ConfigError(f"config key data.train_transform: unknown transform {kind!r} "
                   "(expected 'pad_crop_flip' or 'random_resized_crop')")


def eval_transform(kind: str, image_size: int, resize: int = 256) -> Transform:
  """The evaluation transform named by config key `data.eval_transform`."""
  if kind == "identity":
    return Identity()
  if kind == "resize_center_crop":
    return ResizeCenterCrop(resize, image_size)
  raise ConfigError(f"config key data.eval_transform: unknown transform {kind!r} "
                   "(expected 'identity' or 'resize_center_crop')")
