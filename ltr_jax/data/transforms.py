"""Host-side image transforms (image in, uint8 HWC out).

A transform takes what `sources.undecoded` gives: a uint8 H x W x C array, or an `EncodedImage` (a file's
bytes). From a file, the crop and resize transforms read the size from the header, draw the crop box, and
decode a JPEG at the smallest DCT scale 1/k (k in 1, 2, 4, 8) at which the box still covers the output
size, with simplejpeg where installed (the `fast` extra) or Pillow's draft mode (the same pixels, slower),
then resize straight from the box (one antialiased bilinear or bicubic pass); colour jitter works on uint8 images
(lookup tables and one colour-matrix pass), so no full-image float copies are made.
Mean/std normalisation happens on the device inside the jitted step, so batches cross to the device
as uint8 (4x fewer bytes). Each random transform takes an explicit numpy Generator, which the pipeline
keys by the sample's global position: augmentations are identical whatever the number of workers, and
a resumed run sees the same pixels as an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import numpy as np
from PIL import Image

from ltr_jax.data.sources import EncodedImage
from ltr_jax.errors import ConfigError


class Transform(Protocol):

  def __call__(self, image: np.ndarray | EncodedImage, rng: np.random.Generator) -> np.ndarray:
    ...


_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey, as PIL and torchvision
_DRAFT_SCALES = (8, 4, 2, 1)  # the DCT scales 1/k at which Pillow decodes a JPEG (libjpeg-turbo also has n/8)

Box = tuple[float, float, float, float]  # left, top, right, bottom in the image's full-resolution pixels


def _as_array(image: np.ndarray | EncodedImage) -> np.ndarray:
  return image if isinstance(image, np.ndarray) else image.decode()


def _to_array(image: Image.Image) -> np.ndarray:
  out = np.asarray(image)
  return out[..., None] if out.ndim == 2 else out


def draft_scale(box_width: float, box_height: float, size: tuple[int, int]) -> int:
  """The largest k of 1, 2, 4, 8 with the box / k still at least `size` (width, height): the DCT scale 1/k
  at which a JPEG can be decoded without turning the resize of the box into an upsampling."""
  fit = min(box_width / size[0], box_height / size[1])
  return next((k for k in _DRAFT_SCALES if k <= fit), 1)


# config key data.interpolation -> Pillow's filter (antialiased when it shrinks, as torchvision's on PIL images):
# bilinear, torchvision's default (the references', LIFT's); bicubic, OpenAI CLIP's preprocessing.
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def _resized(image: Image.Image, mode: str, boxes: list[Box], size: tuple[int, int],
             interpolation: str) -> list[Image.Image]:
  """Each region of `boxes` of `image` resized to `size` (straight from the box), in `mode`."""
  if image.mode not in ("L", mode):  # palette, alpha, CMYK, 16-bit, ...: as EncodedImage.decode
    image = image.convert(mode)
  outs = [image.resize(size, INTERPOLATIONS[interpolation], box=box) for box in boxes]
  return [out if out.mode == mode else out.convert(mode) for out in outs]  # grey to RGB after the resize: 3x less


def _scaled(boxes: list[Box], k: float) -> list[Box]:
  return [(b[0] / k, b[1] / k, b[2] / k, b[3] / k) for b in boxes]


def _resized_regions(image: np.ndarray | EncodedImage, boxes_of: Callable[[int, int], list[Box]], size: tuple[int, int],
                     interpolation: str = "bilinear") -> list[Image.Image]:
  """The regions boxes_of(height, width) of `image` resized to `size`, 'L' (one channel) or 'RGB', from one decode.

  A JPEG is decoded at scale 1/draft_scale(the smallest box), the boxes divided accordingly: by libjpeg-turbo where
  `EncodedImage.decode_jpeg` applies, else by Pillow's draft mode. Both are libjpeg-turbo with the same
  settings, so the pixels are the same; simplejpeg is faster (no Python-side chunked reads). Colour is
  decoded as 3-byte RGB and copied into a Pillow 'RGB' image: Pillow resamples 3 bands of an 'RGB' image but 4
  of an 'RGBX' one (which would wrap simplejpeg's output without a copy), and the copy costs less than the
  fourth band (0.15 to 0.2 ms less per 500x375 JPEG, measured on the 2-core machine of benchmarks/results/).
  `boxes_of` is called once.
  """

  def scale(boxes: list[Box]) -> int:
    return min(draft_scale(b[2] - b[0], b[3] - b[1], size) for b in boxes)

  if isinstance(image, np.ndarray):
    grey = image.shape[-1] == 1
    return _resized(Image.fromarray(image[..., 0] if grey else image), "L" if grey else "RGB",
                    boxes_of(image.shape[0], image.shape[1]), size, interpolation)
  mode = "L" if image.channels == 1 else "RGB"
  boxes = None
  header = image.jpeg_header()
  if header is not None:
    boxes = boxes_of(header[0], header[1])
    k = scale(boxes)
    grey = header[2] or mode == "L"
    pixels = image.decode_jpeg("GRAY" if grey else "RGB", 8 // k)
    if pixels is not None:
      shape = (pixels.shape[1], pixels.shape[0])
      decoded = (Image.frombuffer("L", shape, pixels, "raw", "L", 0, 1) if grey else Image.frombytes(
          "RGB", shape, pixels))
      return _resized(decoded, mode, _scaled(boxes, k), size, interpolation)
  with image.open() as pil:
    if boxes is None:
      boxes = boxes_of(pil.height, pil.width)
    k = scale(boxes)
    width = pil.width
    drafted = pil.draft(mode, (pil.width // k, pil.height // k))  # None: not a JPEG
    if drafted is not None:
      k = round(width / drafted[1][2])  # Pillow picks the scale from the size asked for
      boxes = _scaled(boxes, k)
    return _resized(pil, mode, boxes, size, interpolation)


def _resized_region(image: np.ndarray | EncodedImage, box_of: Callable[[int, int], Box], size: tuple[int, int],
                    interpolation: str = "bilinear") -> Image.Image:
  """The region box_of(height, width) of `image` resized to `size` (see _resized_regions)."""
  return _resized_regions(image, lambda h, w: [box_of(h, w)], size, interpolation)[0]


def jitter_params(strength: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """ColorJitter's random draw: the (brightness, contrast, saturation) factors, uniform in
  [1 - strength, 1 + strength], and the order to apply them in (a permutation of 0, 1, 2)."""
  return rng.uniform(1 - strength, 1 + strength, size=3), rng.permutation(3)


def color_jitter(image: Image.Image, factors: np.ndarray, order: np.ndarray) -> Image.Image:
  """torchvision's ColorJitter on a PIL image ('L' or 'RGB') with the given `jitter_params`.

  As torchvision does on PIL images (ImageEnhance) and on uint8 tensors, each step is clipped to [0, 255]
  and truncated to an integer: brightness scales, contrast blends with the mean grey level (rounded),
  saturation blends with the grey image. Brightness and contrast map each channel value on its own, so
  consecutive ones compose into one lookup table (the mean grey is read off the histogram through the
  table); saturation is one colour-matrix pass.
  """
  identity = np.arange(256, dtype=np.float64)
  lut = identity
  for op in order:
    if op == 0:  # brightness
      lut = np.clip(np.floor(factors[0] * lut), 0, 255)
    elif op == 1:  # contrast
      histogram = np.asarray(image.histogram(), np.float64).reshape(-1, 256)
      band_means = histogram @ lut / histogram[0].sum()
      grey = round(float(band_means[0] if len(band_means) == 1 else np.dot(_LUMA, band_means)))
      lut = np.clip(np.floor(factors[1] * lut + (1 - factors[1]) * grey), 0, 255)
    elif image.mode == "RGB":  # saturation (none in a grey image)
      image = _apply_lut(image, lut)
      lut = identity
      matrix = factors[2] * np.eye(3) + (1 - factors[2]) * np.array([_LUMA] * 3)
      # PIL rounds (adds 0.5, then truncates); an offset of -0.5 makes it truncate.
      image = image.convert("RGB", tuple(np.concatenate([matrix, np.full((3, 1), -0.5)], axis=1).ravel()))
  return _apply_lut(image, lut)


def _apply_lut(image: Image.Image, lut: np.ndarray) -> Image.Image:
  """`image` with every channel value v replaced by lut[v] (unchanged where lut is the identity)."""
  if np.array_equal(lut, np.arange(256)):
    return image
  return image.point(lut.astype(np.int64).tolist() * len(image.getbands()))


class PadCropFlip:
  """CIFAR-style augmentation: zero-pad by `pad`, random `size` crop, horizontal flip with p = 0.5."""

  def __init__(self, size: int, pad: int = 4):
    self.size, self.pad = size, pad

  def __call__(self, image: np.ndarray | EncodedImage, rng: np.random.Generator) -> np.ndarray:
    image = _as_array(image)
    height, width, channels = image.shape
    # Window origin in padded coordinates; copy the part of the image it overlaps (np.pad is slower).
    y = int(rng.integers(0, height + 2 * self.pad - self.size + 1)) - self.pad
    x = int(rng.integers(0, width + 2 * self.pad - self.size + 1)) - self.pad
    out = np.zeros((self.size, self.size, channels), image.dtype)
    y0, y1, x0, x1 = max(y, 0), min(y + self.size, height), max(x, 0), min(x + self.size, width)
    out[y0 - y:y1 - y, x0 - x:x1 - x] = image[y0:y1, x0:x1]
    return out[:, ::-1] if rng.random() < 0.5 else out


class RandomResizedCropFlip:
  """torchvision's RandomResizedCrop, RandomHorizontalFlip and optional ColorJitter, in that order.

  `jitter` is the ColorJitter strength for brightness, contrast and saturation (0.4 for ImageNet-LT,
  0 for iNaturalist); the three are applied in a random order, like torchvision.
  """

  def __init__(self, size: int = 224, scale: tuple[float, float] = (0.08, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3), jitter: float = 0.0, interpolation: str = "bilinear"):
    self.size, self.scale, self.ratio, self.jitter, self.interpolation = size, scale, ratio, jitter, interpolation

  def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width): area fraction uniform in `scale`, log aspect ratio uniform in log `ratio`,
    10 tries, then the largest centre crop with the ratio clamped to `ratio`."""
    area = height * width
    log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
    for _ in range(10):
      target = area * rng.uniform(*self.scale)
      aspect = math.exp(rng.uniform(*log_ratio))
      w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
      if 0 < w <= width and 0 < h <= height:
        return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < self.ratio[0]:
      w, h = width, int(round(width / self.ratio[0]))
    elif aspect > self.ratio[1]:
      h, w = height, int(round(height * self.ratio[1]))
    else:
      h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w

  def __call__(self, image: np.ndarray | EncodedImage, rng: np.random.Generator) -> np.ndarray:

    def box_of(height: int, width: int) -> Box:
      y, x, h, w = self.crop_box(height, width, rng)
      return x, y, x + w, y + h

    out = _resized_region(image, box_of, (self.size, self.size), self.interpolation)
    if rng.random() < 0.5:
      out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _to_array(color_jitter(out, *jitter_params(self.jitter, rng)) if self.jitter > 0 else out)


def _crop_boxes(height: int, width: int, resize: int, size: int, corners: bool) -> list[Box]:
  """Boxes (left, top, right, bottom) in the image's pixels of `size` x `size` crops of the image with its shorter
  side resized to `resize` (the longer one truncated, as torchvision's Resize): the centre crop, or torchvision's
  FiveCrop (top-left, top-right, bottom-left, bottom-right, centre)."""
  if width <= height:
    new_w, new_h = resize, int(resize * height / width)
  else:
    new_w, new_h = int(resize * width / height), resize
  centre = (int(round((new_w - size) / 2)), int(round((new_h - size) / 2)))
  corners_at = [(0, 0), (new_w - size, 0), (0, new_h - size), (new_w - size, new_h - size)] if corners else []
  # Multiplied before divided: a crop edge on the resized image's edge maps to the image's edge exactly.
  return [(left * width / new_w, top * height / new_h, (left + size) * width / new_w, (top + size) * height / new_h)
          for left, top in [*corners_at, centre]]


class ResizeCenterCrop:
  """Evaluation transform, torchvision's Resize(resize) + CenterCrop(size) in one resize of the crop's box."""

  def __init__(self, resize: int = 256, size: int = 224, interpolation: str = "bilinear"):
    self.resize, self.size, self.interpolation = resize, size, interpolation

  def crop_box(self, height: int, width: int) -> Box:
    """The centre crop's box (left, top, right, bottom) in the image's pixels: the shorter side resized to
    `resize` (the longer one truncated, as torchvision), then `size` x `size` from the middle."""
    return _crop_boxes(height, width, self.resize, self.size, corners=False)[0]

  def __call__(self, image: np.ndarray | EncodedImage, rng: np.random.Generator | None = None) -> np.ndarray:
    return _to_array(_resized_region(image, self.crop_box, (self.size, self.size), self.interpolation))


class FiveCrop:
  """Test-time ensembling's transform, torchvision's Resize(resize) + FiveCrop(size): uint8 [5, size, size, C], the
  four corners and the centre (LIFT's five-crop test: shijxcs/LIFT @ 661ead9, trainer.py:116-122)."""

  def __init__(self, resize: int = 248, size: int = 224, interpolation: str = "bilinear"):
    self.resize, self.size, self.interpolation = resize, size, interpolation

  def __call__(self, image: np.ndarray | EncodedImage, rng: np.random.Generator | None = None) -> np.ndarray:
    crops = _resized_regions(image, lambda h, w: _crop_boxes(h, w, self.resize, self.size, corners=True),
                             (self.size, self.size), self.interpolation)
    return np.stack([_to_array(crop) for crop in crops])


class Identity:
  """Evaluation transform for data already at the model's input size (28x28, 32x32)."""

  def __call__(self, image: np.ndarray | EncodedImage, rng: np.random.Generator | None = None) -> np.ndarray:
    return _as_array(image)


TRAIN_TRANSFORMS = ("pad_crop_flip", "random_resized_crop")  # config key data.train_transform
EVAL_TRANSFORMS = ("identity", "resize_center_crop")  # config key data.eval_transform


def train_transform(kind: str, image_size: int, jitter: float = 0.0, interpolation: str = "bilinear") -> Transform:
  """The training augmentation named by config key `data.train_transform` (one of TRAIN_TRANSFORMS)."""
  if kind == "pad_crop_flip":
    return PadCropFlip(image_size)
  if kind == "random_resized_crop":
    return RandomResizedCropFlip(image_size, jitter=jitter, interpolation=interpolation)
  raise ConfigError(f"config key data.train_transform: unknown transform {kind!r} (expected one of "
                    f"{', '.join(TRAIN_TRANSFORMS)})")


def eval_transform(kind: str, image_size: int, resize: int = 256, interpolation: str = "bilinear") -> Transform:
  """The evaluation transform named by config key `data.eval_transform` (one of EVAL_TRANSFORMS)."""
  if kind == "identity":
    return Identity()
  if kind == "resize_center_crop":
    if resize < image_size:
      raise ConfigError(f"config key data.resize: {resize} is smaller than data.image_size {image_size}")
    return ResizeCenterCrop(resize, image_size, interpolation)
  raise ConfigError(f"config key data.eval_transform: unknown transform {kind!r} (expected one of "
                    f"{', '.join(EVAL_TRANSFORMS)})")


def train_transform_of(data: Any) -> Transform:
  """The training transform of config section `data` (train_transform, image_size, color_jitter, interpolation)."""
  return train_transform(data.train_transform, data.image_size, data.color_jitter, data.interpolation)


def eval_transform_of(data: Any) -> Transform:
  """The evaluation transform of config section `data` (eval_transform, image_size, resize, interpolation)."""
  return eval_transform(data.eval_transform, data.image_size, data.resize, data.interpolation)
