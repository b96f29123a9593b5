"""Image transforms against torchvision's laws and independent PIL computations, on real-format files.

The test photo is a colourised mosaic of real Fashion-MNIST images upscaled (bicubic) to 1024 x 768 and
saved as a quality-90 JPEG: smooth regions, edges and texture like a photo, large enough that crops are
decoded at scales 1/2, 1/4 and 1/8. JPEG tests run with Pillow alone and with the simplejpeg fast path
(`jpeg_decoder`), which must give the same pixels.
"""
import io
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from ltr_jax.data import sources
from ltr_jax.data.sources import EncodedImage, ListFileSource
from ltr_jax.data.transforms import (FiveCrop, Identity, PadCropFlip, RandomResizedCropFlip, ResizeCenterCrop,
                                     _resized_region, color_jitter, draft_scale, eval_transform, jitter_params)
from ltr_jax.errors import ConfigError, DataError

# Mean absolute difference (grey levels of 255) allowed between a crop decoded at DCT scale 1/k and then
# resized, and the same crop resized from the full decode. Decoding at 1/k makes each pixel from the
# low-frequency DCT coefficients of its k x k block (close to their average), and the resize does the
# rest of the reduction; the full path does the whole reduction with one bilinear (triangle) kernel.
# Both are low-pass filters that differ only near the output's Nyquist frequency, plus sub-level rounding
# at each stage: measured 0.2-0.4 at k = 2 and 4, 0.9 at k = 8 on the test photo.
DRAFT_TOLERANCE = 1.5
ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


@pytest.fixture(scope="module")
def photo(fashion_mnist_dir) -> np.ndarray:
  """1024 x 768 RGB uint8: 12 Fashion-MNIST test images, tinted, upscaled 9.1x (bicubic)."""
  test = sources.fashion_mnist("test", data_dir=fashion_mnist_dir)
  tiles = np.stack([test[i][..., 0] for i in range(0, 84, 7)]).astype(np.float64)
  mosaic = tiles.reshape(3, 4, 28, 28).transpose(0, 2, 1, 3).reshape(84, 112)
  rgb = np.stack([mosaic * a + (255 - mosaic) * b for a, b in ((1.0, 0.2), (0.6, 0.45), (0.3, 0.5))], -1)
  return np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((1024, 768), Image.Resampling.BICUBIC))


def _encoded(pixels: np.ndarray, fmt: str, channels: int = 3, **options) -> EncodedImage:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, fmt, **options)
  return EncodedImage(buffer.getvalue(), channels, f"test.{fmt.lower()}")


@pytest.fixture(scope="module")
def photo_jpeg(photo) -> EncodedImage:
  return _encoded(photo, "JPEG", quality=90)


@pytest.fixture(params=["pillow", "simplejpeg"])
def jpeg_decoder(request, monkeypatch) -> str:
  """Runs a test once with Pillow alone (simplejpeg hidden, as where it is not installed) and once with the
  simplejpeg fast path (skipped where it is not installed)."""
  if request.param == "pillow":
    monkeypatch.setattr(sources, "simplejpeg", None)
  else:
    pytest.importorskip("simplejpeg")
  return request.param


def _ks_uniform(samples: np.ndarray, low: float, high: float) -> float:
  """Kolmogorov-Smirnov distance between the samples and the uniform law on [low, high]."""
  x = np.sort(samples)
  cdf = (x - low) / (high - low)
  n = len(x)
  return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


def _ks_two_sample(a: np.ndarray, b: np.ndarray) -> float:
  grid = np.sort(np.concatenate([a, b]))
  return float(
      np.max(
          np.abs(
              np.searchsorted(np.sort(a), grid, "right") / len(a) -
              np.searchsorted(np.sort(b), grid, "right") / len(b))))


def _torchvision_law(height: int, width: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(area fraction, log aspect ratio) of n boxes drawn as torchvision's RandomResizedCrop.get_params
  does (10 tries of scale ~ U(0.08, 1), log ratio ~ U(log 3/4, log 4/3), else the clamped centre crop),
  vectorised over the n draws."""
  s = rng.uniform(0.08, 1.0, (n, 10))
  r = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), (n, 10)))
  w, h = np.round(np.sqrt(s * height * width * r)), np.round(np.sqrt(s * height * width / r))
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = np.argmax(fits, axis=1)
  w, h = w[np.arange(n), first], h[np.arange(n), first]
  assert fits.any(axis=1).all()  # no fallback on the test's image shape
  return w * h / (height * width), np.log(w / h)


def test_crop_boxes_follow_torchvision_law():
  rrc, rng = RandomResizedCropFlip(224), np.random.default_rng(0)
  height, width, n = 375, 500, 20000
  boxes = np.array([rrc.crop_box(height, width, rng) for _ in range(n)])
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
  area, log_ratio = h * w / (height * width), np.log(w / h)
  # Bounds, up to the rounding of w and h to whole pixels (the smallest crops are ~100 pixels wide).
  assert area.min() >= 0.08 * 0.98 and area.max() <= 1
  assert log_ratio.min() >= math.log(3 / 4) - 0.02 and log_ratio.max() <= math.log(4 / 3) + 0.02
  # The whole law, rejections of boxes that do not fit included: against an independent simulation
  # (KS distance; the two-sample 0.1% critical value at n = 20000 is 0.0195).
  ref_area, ref_log_ratio = _torchvision_law(height, width, n, np.random.default_rng(1))
  assert _ks_two_sample(area, ref_area) < 0.0195
  assert _ks_two_sample(log_ratio, ref_log_ratio) < 0.0195
  # The position is uniform over the places the box fits: top / (height - h) has mean 1/2, variance 1/12.
  spare = height - h > 50
  position = top[spare] / (height - h[spare])
  assert abs(position.mean() - 0.5) < 0.01 and abs(position.var() - 1 / 12) < 0.005


def test_crop_box_scale_and_log_ratio_are_uniform_where_nothing_is_rejected():
  # On a 1000 x 1000 image with scale <= 0.5 every first try fits: the law is the sampling law itself.
  rrc, rng = RandomResizedCropFlip(224, scale=(0.08, 0.5)), np.random.default_rng(2)
  boxes = np.array([rrc.crop_box(1000, 1000, rng) for _ in range(20000)])
  area, log_ratio = boxes[:, 2] * boxes[:, 3] / 1e6, np.log(boxes[:, 3] / boxes[:, 2])
  assert _ks_uniform(area, 0.08, 0.5) < 0.015  # one-sample 0.1% critical value at n = 20000: 0.0138, + rounding
  assert _ks_uniform(log_ratio, math.log(3 / 4), math.log(4 / 3)) < 0.015


def test_crop_box_fallback_is_the_clamped_centre_crop():
  rrc, rng = RandomResizedCropFlip(224), np.random.default_rng(0)
  # 10 x 1000: no box of area >= 8% with ratio <= 4/3 fits in 10 rows, so all 10 tries fail.
  assert rrc.crop_box(10, 1000, rng) == (0, (1000 - 13) // 2, 10, 13)  # ratio clamped to 4/3: w = round(13.3)
  assert rrc.crop_box(1000, 10, rng) == ((1000 - 13) // 2, 0, 13, 10)  # clamped to 3/4: h = round(10 / 0.75)


def test_draft_scale_never_upsamples():
  assert draft_scale(447, 447, (224, 224)) == 1 and draft_scale(223, 900, (224, 224)) == 1
  assert draft_scale(448, 448, (224, 224)) == 2 and draft_scale(1000, 740, (224, 224)) == 2
  assert draft_scale(900, 2000, (224, 224)) == 4 and draft_scale(1800, 1800, (224, 224)) == 8
  assert draft_scale(4000, 4000, (224, 224)) == 8  # 1/8 is libjpeg's smallest scale
  assert draft_scale(1024, 768, (128, 96)) == 8


@pytest.mark.parametrize("box, size, k", [((10, 20, 1010, 760), (224, 224), 2), ((3, 5, 1003, 765), (112, 112), 4),
                                          ((200, 101, 700, 600), (112, 112), 4), ((0, 0, 1024, 768), (128, 96), 8)])
def test_draft_decode_of_a_crop_matches_the_full_decode(photo_jpeg, box, size, k, jpeg_decoder):
  assert draft_scale(box[2] - box[0], box[3] - box[1], size) == k
  shapes = []
  drafted = np.asarray(_resized_region(photo_jpeg, lambda h, w: shapes.append((h, w)) or box, size)).astype(int)
  assert shapes == [(768, 1024)]  # the box is drawn once, from the full-resolution size
  full = np.asarray(Image.fromarray(photo_jpeg.decode()).resize(size, Image.Resampling.BILINEAR, box=box))
  difference = np.abs(drafted - full.astype(int)).mean()
  assert 0 < difference < DRAFT_TOLERANCE  # > 0: the crop was decoded at the reduced scale


def _resize_center_crop(pixels: np.ndarray, resize: int = 256, size: int = 224,
                        resample=Image.Resampling.BILINEAR) -> np.ndarray:
  """torchvision's Resize(resize) + CenterCrop(size) on a PIL image, written out."""
  return _resize_crops(pixels, resize, size, resample)[-1]


def _resize_crops(pixels: np.ndarray, resize: int = 248, size: int = 224,
                  resample=Image.Resampling.BILINEAR) -> list[np.ndarray]:
  """torchvision's Resize(resize) + FiveCrop(size) on a PIL image, written out: the corners, then the centre."""
  h, w = pixels.shape[:2]
  new_w, new_h = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
  resized = Image.fromarray(pixels).resize((new_w, new_h), resample)
  top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
  corners = [(0, 0), (new_w - size, 0), (0, new_h - size), (new_w - size, new_h - size), (left, top)]
  return [np.asarray(resized.crop((x, y, x + size, y + size))) for x, y in corners]


def test_eval_matches_resize_then_center_crop(photo, photo_jpeg, jpeg_decoder):
  evaluate = ResizeCenterCrop(256, 224)
  reference = _resize_center_crop(photo_jpeg.decode()).astype(int)
  out = evaluate(photo_jpeg)  # the 672-pixel centre box is decoded at scale 1/2
  assert out.shape == (224, 224, 3) and out.dtype == np.uint8
  assert 0 < np.abs(out - reference).mean() < DRAFT_TOLERANCE
  # From decoded pixels (no draft), resizing the crop's box is the same computation as resizing the
  # whole image and cropping, up to float rounding of the box.
  for pixels in (photo, photo[:700:2, :500].transpose(1, 0, 2).copy()):  # landscape; portrait 500 x 350
    difference = np.abs(evaluate(pixels).astype(int) - _resize_center_crop(pixels))
    assert difference.max() <= 1 and difference.mean() < 0.01


def test_bicubic_eval_matches_resize_then_center_crop_and_differs_from_bilinear(photo):
  """data.interpolation = 'bicubic' (OpenAI CLIP's preprocessing) resizes with the bicubic filter."""
  bicubic = ResizeCenterCrop(256, 224, "bicubic")(photo).astype(int)
  reference = _resize_center_crop(photo, resample=Image.Resampling.BICUBIC)
  difference = np.abs(bicubic - reference)
  assert difference.max() <= 1 and difference.mean() < 0.01
  assert np.abs(bicubic - _resize_center_crop(photo)).mean() > 10 * difference.mean() + 0.05


def test_five_crop_matches_resize_then_torchvision_five_crop(photo, photo_jpeg, jpeg_decoder):
  """FiveCrop(248, 224): the four corners and the centre of the image with its shorter side resized to 248, in
  torchvision's order, from one decode (of a JPEG at the draft scale of the crops)."""
  five = FiveCrop(248, 224)
  for pixels in (photo, photo[:700:2, :500].transpose(1, 0, 2).copy()):  # landscape; portrait 500 x 350
    out = five(pixels)
    assert out.shape == (5, 224, 224, 3) and out.dtype == np.uint8
    for crop, reference in zip(out, _resize_crops(pixels)):
      difference = np.abs(crop.astype(int) - reference)
      assert difference.max() <= 1 and difference.mean() < 0.01
    assert all(np.abs(out[i].astype(int) - out[j]).mean() > 5 for i in range(5) for j in range(i))
  decoded = five(photo_jpeg)
  for crop, reference in zip(decoded, _resize_crops(photo_jpeg.decode())):
    assert 0 < np.abs(crop.astype(int) - reference).mean() < DRAFT_TOLERANCE


def test_jitter_params_law():
  rng = np.random.default_rng(0)
  draws = [jitter_params(0.4, rng) for _ in range(6000)]
  factors = np.array([f for f, _ in draws])
  assert factors.min() >= 0.6 and factors.max() <= 1.4
  for j in range(3):
    assert _ks_uniform(factors[:, j], 0.6, 1.4) < 0.03  # 0.1% critical value at n = 6000: 0.025
  orders, counts = np.unique(np.array([o for _, o in draws]), axis=0, return_counts=True)
  assert len(orders) == 6 and all(sorted(o) == [0, 1, 2] for o in orders.tolist())
  assert np.abs(counts - 1000).max() < 4 * math.sqrt(6000 * (1 / 6) * (5 / 6))  # 4 sigma of a binomial


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_color_jitter_is_torchvision_colorjitter_in_the_given_order(photo, mode):
  image = Image.fromarray(photo).resize((224, 168), Image.Resampling.BILINEAR).convert(mode)
  factors = np.array([1.35, 0.65, 1.3])  # strong enough that clipping makes the order matter
  orders = [np.array(o) for o in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))]
  # torchvision's ColorJitter on PIL images: ImageEnhance brightness, contrast, saturation (Color).
  references = []
  for order in orders:
    out = image
    for op in order:
      out = ENHANCERS[op](out).enhance(factors[op])
    references.append(np.asarray(out).astype(int))
  for i, order in enumerate(orders):
    out = np.asarray(color_jitter(image, factors, order)).astype(int)
    errors = [np.abs(out - reference).mean() for reference in references]
    # Equal to the reference of its order, up to the mean grey level rounded one level apart now and
    # then (the mean of PIL's rounded grey image vs the grey of the channel means) ...
    assert errors[i] < 0.25 and np.abs(out - references[i]).max() <= 4
    # ... and at least twice as far from those of the other orders (0.4 to 3.7 levels away from each
    # other here; on a grey image saturation is the identity, so only brightness and contrast's order counts).
    different = [j for j in range(6) if not np.array_equal(references[j], references[i])]
    assert len(different) == (5 if mode == "RGB" else 3)
    assert min(errors[j] for j in different) > 2 * errors[i]


def test_random_resized_crop_from_jpeg_png_and_array(photo, photo_jpeg, jpeg_decoder):
  rrc = RandomResizedCropFlip(224, jitter=0.4)
  png = _encoded(photo, "PNG")

  def rng():
    return np.random.default_rng(7)

  out_png, out_array = rrc(png, rng()), rrc(photo, rng())
  np.testing.assert_array_equal(out_png, out_array)  # PNG: no reduced decode, same pixels
  assert out_array.shape == (224, 224, 3) and out_array.dtype == np.uint8
  # Independently: the same box, flip and jitter draws, applied to the decoded pixels with PIL.
  g = rng()
  top, left, h, w = rrc.crop_box(768, 1024, g)
  expected = Image.fromarray(photo).resize((224, 224), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
  if g.random() < 0.5:
    expected = expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  factors, order = jitter_params(0.4, g)
  for op in order:
    expected = ENHANCERS[op](expected).enhance(factors[op])
  assert np.abs(out_array.astype(int) - np.asarray(expected)).mean() < 0.5
  # The JPEG: the same draws; a reduced-scale decode where the box allows it.
  assert np.abs(rrc(photo_jpeg, rng()).astype(int) - rrc(photo_jpeg.decode(), rng())).mean() < DRAFT_TOLERANCE


def test_other_formats_and_modes_decode_as_the_source_does(photo, jpeg_decoder):
  grey = photo[..., 1]
  inputs = [
      _encoded(grey, "PNG"),
      _encoded(np.dstack([photo, grey]), "PNG"),  # grey; RGBA
      _encoded(grey, "JPEG", quality=90),  # a grey JPEG, decoded at reduced scale to an RGB output
      EncodedImage(_encoded(photo, "PNG").data, 1, "test.png"),  # RGB files read as grey
      EncodedImage(_encoded(photo, "JPEG", quality=90).data, 1, "test.jpg")
  ]
  palette = io.BytesIO()
  Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE).save(palette, "PNG")
  inputs.append(EncodedImage(palette.getvalue(), 3, "palette.png"))
  for encoded in inputs:
    decoded = encoded.decode()
    for transform in (ResizeCenterCrop(256, 224), RandomResizedCropFlip(224, jitter=0.4)):
      out = transform(encoded, np.random.default_rng(3))
      assert out.shape == (224, 224, encoded.channels) and out.dtype == np.uint8
      reference = transform(decoded, np.random.default_rng(3))
      assert np.abs(out.astype(int) - reference).mean() < DRAFT_TOLERANCE
  # A grey PNG read as RGB: the three channels are the grey image's.
  out = ResizeCenterCrop(256, 224)(inputs[0])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  np.testing.assert_array_equal(out, ResizeCenterCrop(256, 224)(np.repeat(grey[..., None], 3, -1)))


def test_fashion_mnist_arrays(fashion_mnist_dir):
  test = sources.fashion_mnist("test", data_dir=fashion_mnist_dir)
  image = test[5]  # 28 x 28 x 1
  np.testing.assert_array_equal(ResizeCenterCrop(28, 28)(image), image)  # the identity at the same size
  np.testing.assert_array_equal(Identity()(image), image)
  rng = np.random.default_rng(0)
  out = RandomResizedCropFlip(28, jitter=0.4)(image, rng)
  assert out.shape == (28, 28, 1) and out.dtype == np.uint8
  # Files hold the same pixels: PadCropFlip and Identity decode an EncodedImage like the source does.
  png = _encoded(image[..., 0], "PNG", channels=1)
  np.testing.assert_array_equal(Identity()(png), image)
  np.testing.assert_array_equal(
      PadCropFlip(28)(png, np.random.default_rng(1)),
      PadCropFlip(28)(image, np.random.default_rng(1)))


def test_decode_errors_name_the_file(list_file_dataset, jpeg_decoder):
  d = list_file_dataset
  with open(f"{d['root']}/dogs/c.jpg", "r+b") as f:
    f.truncate(400)  # the header and part of the entropy-coded data
  with open(f"{d['root']}/birds/f.jpeg", "wb") as f:
    f.write(b"not an image")
  source = ListFileSource(d["list_file"], d["root"])
  for transform in (RandomResizedCropFlip(8, jitter=0.4), ResizeCenterCrop(8, 8), Identity()):
    with pytest.raises(DataError, match=r"dogs/c\.jpg \(listed at .*train\.txt:4\): cannot decode image"):
      transform(sources.undecoded(source, 2), np.random.default_rng(0))
    with pytest.raises(DataError, match=r"birds/f\.jpeg \(listed at .*train\.txt:6\): cannot decode image"):
      transform(sources.undecoded(source, 4), np.random.default_rng(0))


def test_simplejpeg_decodes_the_same_pixels_as_pillow(photo, photo_jpeg, monkeypatch):
  pytest.importorskip("simplejpeg")
  grey = _encoded(photo[..., 1], "JPEG", quality=90)
  files = [
      photo_jpeg,
      _encoded(photo, "JPEG", quality=90, subsampling=0),  # 4:2:0 and 4:4:4 chroma
      _encoded(photo, "JPEG", quality=90, progressive=True),
      grey,
      EncodedImage(grey.data, 1, "grey.jpg"),
      EncodedImage(photo_jpeg.data, 1, "read as grey")
  ]
  boxes = [(10, 20, 1010, 760), (3, 5, 1003, 765), (0, 0, 1024, 768), (100, 100, 400, 300)]  # k = 2, 4, 8, 1
  transforms = (RandomResizedCropFlip(224, jitter=0.4), ResizeCenterCrop(256, 224))

  def outputs() -> list[np.ndarray]:
    out = [encoded.decode() for encoded in files if encoded.channels == 3]  # Pillow's: RGB -> L for grey reads
    out += [np.asarray(_resized_region(encoded, lambda h, w: box, (112, 112))) for encoded in files for box in boxes]
    out += [t(encoded, np.random.default_rng(i)) for i, encoded in enumerate(files) for t in transforms]
    return out

  fast = outputs()
  assert files[0].decode_jpeg("RGBX", 4).shape == (384, 512, 4)  # the fast path was taken
  monkeypatch.setattr(sources, "simplejpeg", None)
  assert files[0].jpeg_header() is None
  for a, b in zip(fast, outputs(), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("eighths", [1, 2, 4, 8])
def test_decode_jpeg_scales_by_eighths(eighths):
  pytest.importorskip("simplejpeg")
  encoded = _encoded(np.full((75, 101, 3), 90, np.uint8), "JPEG", quality=90)
  assert encoded.jpeg_header() == (75, 101, False)
  out = encoded.decode_jpeg("RGBX", eighths)
  assert out.shape == (-(-75 * eighths // 8), -(-101 * eighths // 8), 4)
  assert np.abs(out[..., :3].astype(int) - 90).max() <= 1 and (out[..., 3] == 255).all()
  assert encoded.decode_jpeg("GRAY", eighths).shape == out.shape[:2] + (1,)


def test_what_simplejpeg_does_not_decode_goes_to_pillow(photo):
  pytest.importorskip("simplejpeg")
  cmyk = io.BytesIO()
  Image.fromarray(photo).convert("CMYK").save(cmyk, "JPEG", quality=90)
  cmyk = EncodedImage(cmyk.getvalue(), 3, "cmyk.jpg")
  # Extra bytes before the scan: libjpeg-turbo warns, which simplejpeg raises and Pillow ignores.
  jpeg = _encoded(photo, "JPEG", quality=90).data
  scan = jpeg.index(b"\xff\xda")
  warned = EncodedImage(jpeg[:scan] + b"\x12\x34" + jpeg[scan:], 3, "warned.jpg")
  png = _encoded(photo, "PNG")
  assert cmyk.jpeg_header() is None and png.jpeg_header() is None and warned.decode_jpeg("RGB") is None
  with Image.open(io.BytesIO(cmyk.data)) as image:
    np.testing.assert_array_equal(cmyk.decode(), np.asarray(image.convert("RGB")))
  np.testing.assert_array_equal(warned.decode(), _encoded(photo, "JPEG", quality=90).decode())
  evaluate = ResizeCenterCrop(256, 224)
  for encoded in (cmyk, warned, png):
    assert np.abs(evaluate(encoded).astype(int) - evaluate(encoded.decode())).mean() < DRAFT_TOLERANCE


def test_eval_resize_smaller_than_the_crop_names_the_config_key():
  with pytest.raises(ConfigError, match=r"config key data.resize: 200 is smaller than data.image_size 224"):
    eval_transform("resize_center_crop", 224, resize=200)
