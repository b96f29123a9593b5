"""Record sources: random access to (image, label) records, labels known without decoding images.

Five kinds of storage, one interface (`Source`):
- `ListFileSource`: an image folder plus a list file of `relative/path label` lines (ImageNet-LT,
  Places-LT, iNaturalist as distributed with OLTR / the reference code).
- `FolderSource`: one folder per class (`train/<class>/*.jpg`, torchvision's ImageFolder layout), the classes in the
  sorted order of their folder names.
- `INatJsonSource`: an image folder plus iNaturalist's official COCO-style JSON (train2018.json, ...).
- `IdxSource`: MNIST / Fashion-MNIST IDX files (the offline quickstart).
- `TfdsSource`: a TFDS array_record dataset through `tfds.data_source` (TFDS catalog datasets and those
  written by `ltr_jax.data.convert`).
`source[i]` is the decoded image; `undecoded(source, i)` is what the transforms take: an `EncodedImage` where
the source holds files, so that a transform reads the size from the header before decoding and decodes a
JPEG at the smallest scale its crop allows, else the same array as `source[i]`. A source says its classes' names
where its data does (`class_names`; None where it does not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
from typing import Iterator, Protocol

import numpy as np
from etils import epath
from PIL import Image

from ltr_jax.errors import DataError, first_line

try:  # optional (the `fast` extra): libjpeg-turbo's decoder with its DCT scaling at every n/8
  import simplejpeg
except ImportError:
  simplejpeg = None

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# The ten classes of Fashion-MNIST, in label order (zalandoresearch/fashion-mnist README, "Labels").
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions.
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension.


class Source(Protocol):
  """Random access to records; `labels` is available without decoding any image.

  File-backed sources also have `undecoded(index) -> EncodedImage`, the image before decoding (see `undecoded`).
  """

  labels: np.ndarray  # int64 [N]
  num_classes: int
  class_names: list[str] | None  # in label order, where the data names its classes

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> np.ndarray:
    """The uint8 image, H x W x C (C = 1 grayscale, 3 RGB)."""
    ...


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Number of records of each class, int64 [num_classes]."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = labels[(labels < 0) | (labels >= num_classes)][0]
    raise DataError(f"label {bad} outside [0, {num_classes})")
  return np.bincount(labels, minlength=num_classes).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class EncodedImage:
  """An image file's bytes, not yet decoded, and how to decode them.

  `channels`: 1 decodes to grey, 3 to RGB; `what` names the image in decode errors.
  """
  data: bytes
  channels: int
  what: str

  @contextlib.contextmanager
  def open(self) -> Iterator[Image.Image]:
    """The image opened lazily (size and format read from the header, pixels not yet decoded).

    Decoding errors inside the `with` block, where the pixels are loaded, raise a DataError naming the image.
    """
    try:
      with Image.open(io.BytesIO(self.data)) as image:
        yield image
    except Image.UnidentifiedImageError as e:
      raise DataError(f"{self.what}: cannot decode image (not a format Pillow reads)") from e
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      raise DataError(f"{self.what}: cannot decode image ({e})") from e

  def jpeg_header(self) -> tuple[int, int, bool] | None:
    """(height, width, grey) where `decode_jpeg` applies: simplejpeg is installed and the file is a JPEG in
    YCbCr or grey; else None, and Pillow decodes the file (`open`)."""
    if simplejpeg is None or not self.data.startswith(b"\xff\xd8"):
      return None
    try:
      height, width, colourspace, _ = simplejpeg.decode_jpeg_header(self.data)
    except ValueError:
      return None
    return (height, width, colourspace == "Gray") if colourspace in ("YCbCr", "Gray") else None

  def decode_jpeg(self, layout: str, eighths: int = 8) -> np.ndarray | None:
    """The JPEG (one `jpeg_header` accepts) decoded by libjpeg-turbo at DCT scale eighths / 8, uint8
    ceil(H * eighths / 8) x ceil(W * eighths / 8) x (1, 3 or 4) for `layout` 'GRAY', 'RGB' or 'RGBX' (RGB
    and a padding byte: Pillow's own pixel layout, which PIL wraps without a copy).

    At eighths 8, 4, 2 and 1 the pixels are Pillow's (with draft mode below 8): both are libjpeg-turbo with
    its default accurate integer IDCT and fancy chroma upsampling. None where libjpeg-turbo rejects the data
    or warns about it (truncated or corrupt): Pillow then decodes the file or raises the DataError, as it
    does without simplejpeg.
    """
    header = self.jpeg_header()
    if header is None:
      return None
    height, width, _ = header
    try:
      return simplejpeg.decode_jpeg(self.data, layout, min_height=-(-height * eighths // 8),
                                    min_width=-(-width * eighths // 8))
    except ValueError:
      return None

  def decode(self) -> np.ndarray:
    """The whole image, uint8 H x W x `channels` (libjpeg-turbo's `decode_jpeg` where it applies, for RGB:
    the same pixels as Pillow, faster)."""
    pixels = self.decode_jpeg("RGB") if self.channels == 3 else None
    if pixels is not None:
      return pixels
    with self.open() as image:
      array = np.asarray(image.convert("L" if self.channels == 1 else "RGB"), dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def undecoded(source: Source, index: int) -> np.ndarray | EncodedImage:
  """Record `index` of `source` as the transforms take it: `source.undecoded(index)` where the source has
  that method (file-backed sources), else the decoded `source[index]`."""
  method = getattr(source, "undecoded", None)
  return method(index) if method is not None else source[index]


def read_list_file(list_file: str) -> list[tuple[int, str, int]]:
  """Parses a `relative/path label` list file into (line number, path, label), blank lines skipped.

  The label is the last whitespace-separated token; everything before it is the path, so paths may
  contain spaces.
  """
  try:
    with open(list_file, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise DataError(f"{list_file}: cannot read list file ({e.strerror})") from e
  except UnicodeDecodeError as e:
    raise DataError(f"{list_file}: not a UTF-8 text file ({e})") from e
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    tokens = line.strip().rsplit(maxsplit=1)
    try:
      path, label = tokens[0], int(tokens[1])
    except (IndexError, ValueError):
      raise DataError(f"{list_file}:{number}: expected '<relative/path> <label>', got {line!r}") from None
    records.append((number, path, label))
  if not records:
    raise DataError(f"{list_file}: no records")
  return records


class ListFileSource:
  """Images listed as `relative/path label` lines, decoded lazily with Pillow to RGB.

  `num_classes` defaults to the largest label + 1; when given, every label must lie in
  [0, num_classes).
  """

  def __init__(self, list_file: str, image_root: str, num_classes: int | None = None,
               class_names: list[str] | None = None):
    self.list_file = list_file
    self.image_root = image_root
    self.class_names = class_names
    records = read_list_file(list_file)
    self._line_numbers = [number for number, _, _ in records]
    self.paths = [path for _, path, _ in records]
    self.labels = np.array([label for _, _, label in records], dtype=np.int64)
    self.num_classes = int(self.labels.max()) + 1 if num_classes is None else num_classes
    for number, _, label in records:
      if not 0 <= label < self.num_classes:
        raise DataError(f"{list_file}:{number}: label {label} outside [0, {self.num_classes})")

  def __len__(self) -> int:
    return len(self.paths)

  def where(self, index: int) -> str:
    """The list file and line that listed record `index`, as `file:line`."""
    return f"{self.list_file}:{self._line_numbers[index]}"

  def image_path(self, index: int) -> str:
    """The image file of record `index`."""
    return os.path.join(self.image_root, self.paths[index])

  def _named(self, index: int) -> str:
    """The image file of record `index`, and where it was listed unless that is the file itself (a class folder)."""
    path, where = self.image_path(index), self.where(index)
    return path if where == path else f"{path} (listed at {where})"

  def read_bytes(self, index: int) -> bytes:
    """The encoded image file of record `index`, as stored."""
    try:
      with open(self.image_path(index), "rb") as f:
        return f.read()
    except OSError as e:
      raise DataError(f"{self._named(index)}: cannot read image ({e.strerror})") from e

  def undecoded(self, index: int) -> EncodedImage:
    """The image file of record `index`, read but not decoded."""
    return EncodedImage(self.read_bytes(index), 3, self._named(index))

  def __getitem__(self, index: int) -> np.ndarray:
    return self.undecoded(index).decode()


def _json_entries(content, key: str, fields: tuple[str, ...], json_file: str) -> list[tuple]:
  """The `fields` of every object in the top-level list content[key]; DataError names what is missing."""
  if not isinstance(content, dict) or not isinstance(content.get(key), list):
    raise DataError(f"{json_file}: no top-level list {key!r} (expected iNaturalist's COCO-style JSON)")
  rows = []
  for i, entry in enumerate(content[key]):
    missing = [field for field in fields if not isinstance(entry, dict) or field not in entry]
    if missing:
      raise DataError(f"{json_file}: {key}[{i}] has no {' or '.join(map(repr, missing))}")
    rows.append(tuple(entry[field] for field in fields))
  return rows


class INatJsonSource(ListFileSource):
  """Images listed by iNaturalist's official JSON, decoded lazily with Pillow to RGB as by ListFileSource.

  The COCO-style format of train2018.json / val2018.json: {"images": [{"id", "file_name", ...}],
  "annotations": [{"image_id", "category_id", ...}], "categories": [...]}, file names relative to
  `image_root`. Records follow the order of "images"; a label is the category_id of the image's annotation, read
  without decoding any image. `num_classes` defaults to the number of "categories" (8142 in iNaturalist
  2018), or the largest label + 1 where the file has none; every label must lie in [0, num_classes).
  """

  def __init__(self, json_file: str, image_root: str, num_classes: int | None = None):
    # Sets what ListFileSource's __init__ sets, from the JSON instead of a list file.
    self.list_file = json_file
    self.image_root = image_root
    try:
      with open(json_file, encoding="utf-8") as f:
        content = json.load(f)
    except OSError as e:
      raise DataError(f"{json_file}: cannot read JSON file ({e.strerror})") from e
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError
      raise DataError(f"{json_file}: not a JSON file ({e})") from e
    images = _json_entries(content, "images", ("id", "file_name"), json_file)
    annotations = _json_entries(content, "annotations", ("image_id", "category_id"), json_file)
    if not images:
      raise DataError(f"{json_file}: no images")
    image_ids = {image_id for image_id, _ in images}
    label_of = {}
    for i, (image_id, category) in enumerate(annotations):
      if image_id not in image_ids:
        raise DataError(f"{json_file}: annotations[{i}] names image id {image_id!r}, which is not in 'images'")
      if not isinstance(category, int) or isinstance(category, bool):
        raise DataError(f"{json_file}: annotations[{i}] has category_id {category!r}, not an integer")
      if label_of.setdefault(image_id, category) != category:
        raise DataError(f"{json_file}: image id {image_id!r} is annotated with categories "
                        f"{label_of[image_id]} and {category}")
    unlabelled = [image_id for image_id, _ in images if image_id not in label_of]
    if unlabelled:
      raise DataError(f"{json_file}: {len(unlabelled)} image(s) without annotation, e.g. image id "
                      f"{unlabelled[0]!r}")
    self._image_ids = [image_id for image_id, _ in images]
    self.paths = [file_name for _, file_name in images]
    self.labels = np.array([label_of[image_id] for image_id in self._image_ids], dtype=np.int64)
    categories = content.get("categories") or []
    self.num_classes = num_classes or len(categories) or int(self.labels.max()) + 1
    # iNaturalist's categories[].name (the species), where every class id has one.
    names = {c.get("id"): c.get("name") for c in categories if isinstance(c, dict)}
    self.class_names = [str(names[c]) for c in range(self.num_classes)] \
        if all(isinstance(names.get(c), str) for c in range(self.num_classes)) else None
    outside = np.flatnonzero((self.labels < 0) | (self.labels >= self.num_classes))
    if outside.size:
      raise DataError(f"{json_file}: image id {self._image_ids[outside[0]]!r} has category_id "
                      f"{self.labels[outside[0]]} outside [0, {self.num_classes})")

  def where(self, index: int) -> str:
    """The JSON file and image id of record `index`."""
    return f"{self.list_file}, image id {self._image_ids[index]!r}"


def image_extensions() -> frozenset[str]:
  """The file extensions Pillow reads (lower case, with the dot: '.jpg', '.png', '.webp', ...)."""
  return frozenset(ext.lower() for ext in Image.registered_extensions())


def visible_files(folder: str) -> Iterator[str]:
  """The paths of the files in `folder` and below it, hidden files and folders left out, in sorted order (a folder's
  files before its subfolders')."""
  for here, subfolders, names in os.walk(folder):
    subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
    yield from (os.path.join(here, n) for n in sorted(names) if not n.startswith("."))


def class_folders(folder: str) -> list[str]:
  """The sorted names of the class folders in `folder` (hidden ones left out); DataError for two names that differ
  only in case (one class on a case-insensitive file system, two here)."""
  try:
    names = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
  except OSError as e:
    raise DataError(f"{folder}: cannot list the class folders ({e.strerror})") from e
  seen: dict[str, str] = {}
  for name in names:
    if name.lower() in seen:
      raise DataError(f"{folder}: class folders {seen[name.lower()]!r} and {name!r} differ only in case: rename one")
    seen[name.lower()] = name
  return names


class FolderSource(ListFileSource):
  """One folder per class: `image_root/<split>/<class>/**/<image>`, as torchvision's ImageFolder reads them.

  The class index is the position of the folder name in `class_names` (default: the sorted folder names of this
  split, as ImageFolder sorts them); a split's class folder not in `class_names`, an empty class folder, or a file
  whose extension Pillow does not read (in any case: '.JPG' is a JPEG) is a DataError naming it. Hidden files and
  folders are left out. Records are in sorted path order; `where(i)` is the image's path. Decoded as
  ListFileSource (RGB).
  """

  def __init__(self, image_root: str, split: str, class_names: list[str] | None = None):
    # Sets what ListFileSource's __init__ sets, from the folders instead of a list file.
    self.image_root = image_root
    self.list_file = os.path.join(image_root, split)
    found = class_folders(self.list_file)
    self.class_names = found if class_names is None else list(class_names)
    index = {name: i for i, name in enumerate(self.class_names)}
    extensions = image_extensions()
    self.paths, labels = [], []
    for name in found:
      if name not in index:
        raise DataError(f"{os.path.join(self.list_file, name)}: a class folder that the training split lacks (its "
                        f"classes: {', '.join(self.class_names[:10])}{', ...' if len(self.class_names) > 10 else ''})")
      files = []
      for path in visible_files(os.path.join(self.list_file, name)):
        if os.path.splitext(path)[1].lower() not in extensions:
          raise DataError(f"{path}: not an image file (Pillow reads {', '.join(sorted(extensions)[:8])}, ...): "
                          "move it out of the class folder")
        files.append(os.path.relpath(path, image_root))
      if not files:
        raise DataError(f"{os.path.join(self.list_file, name)}: an empty class folder (no image files)")
      self.paths += files
      labels += [index[name]] * len(files)
    if not self.paths:
      raise DataError(f"{self.list_file}: no class folders")
    self.labels = np.asarray(labels, np.int64)
    self.num_classes = len(self.class_names)

  def where(self, index: int) -> str:
    """The image file of record `index`."""
    return self.image_path(index)


def _read_idx(path: str, magic: int) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (gzipped if the name ends in .gz), checking its header."""
  try:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f"{path}: cannot read IDX file ({e})") from e
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(data) < header:
    raise DataError(f"{path}: not an IDX file (only {len(data)} bytes)")
  found = int.from_bytes(data[:4], "big")
  if found != magic:
    raise DataError(f"{path}: IDX magic number {found}, expected {magic}")
  shape = tuple(int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
  expected = header + int(np.prod(shape))
  if len(data) != expected:
    raise DataError(f"{path}: {len(data)} bytes, the header {shape} implies {expected}")
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


class IdxSource:
  """MNIST-format IDX image and label files, loaded into memory as uint8 [N, H, W, 1].

  `num_classes` is a parameter (10 for MNIST and Fashion-MNIST) rather than the largest label + 1, so
  that a file missing the last classes still gives the right number of classes.
  """

  def __init__(self, images_path: str, labels_path: str, num_classes: int = 10, class_names: list[str] | None = None):
    self.images = _read_idx(images_path, _IDX_IMAGES_MAGIC)[..., None]
    self.labels = _read_idx(labels_path, _IDX_LABELS_MAGIC).astype(np.int64)
    self.num_classes = num_classes
    self.class_names = class_names
    if len(self.images) != len(self.labels):
      raise DataError(f"{labels_path}: {len(self.labels)} labels for {len(self.images)} images in {images_path}")
    if self.labels.size and self.labels.max() >= num_classes:
      raise DataError(f"{labels_path}: label {self.labels.max()} outside [0, {num_classes})")

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.images[index]


def _tfds_folder(name: str, data_dir: str) -> tuple[epath.Path, str]:
  """The folder of TFDS dataset `name` ('name' or 'name/config', either with ':version') in `data_dir`, as TFDS
  names it ('MyData' is my_data), and the glob pattern of its version folders."""
  from tensorflow_datasets.core import naming
  path, _, version = name.partition(":")
  dataset, _, config = path.partition("/")
  return epath.Path(data_dir) / naming.camelcase_to_snakecase(dataset) / config, version or "[0-9]*"


def tfds_prepared(name: str, data_dir: str) -> bool:
  """Whether TFDS dataset `name` is prepared in `data_dir`: a <version>/dataset_info.json in its folder (or in one of
  its config folders). Looks at the files only, never at the network, so that a dataset not prepared fails at once
  instead of in a download attempt."""
  folder, version = _tfds_folder(name, data_dir)
  return any(folder.glob(f"{version}/dataset_info.json")) or any(folder.glob(f"*/{version}/dataset_info.json"))


class TfdsSource:
  """A TFDS dataset read through `tfds.data_source` (array_record), without TensorFlow.

  Images are read undecoded (`SkipDecoding`) and decoded here with Pillow when stored encoded.
  Labels come from `<split>-labels.npy` next to the records when `ltr_jax.data.convert` wrote one,
  otherwise from one pass over the records (images left encoded).
  A dataset not prepared in `data_dir` (default: TFDS's, ~/tensorflow_datasets or $TFDS_DATA_DIR) is a DataError
  unless `download` (config key data.download), which lets TFDS download and prepare it.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None, image_key: str = "image",
               label_key: str = "label", download: bool = False):
    import tensorflow_datasets as tfds  # Slow to import: only where a TFDS source is used.
    self.image_key = image_key
    where = data_dir or tfds.core.constants.get_default_data_dir()
    if not download and not tfds_prepared(name, where):
      default = "" if data_dir else " (TFDS's default; config key data.data_dir sets another)"
      raise DataError(
          f"TFDS dataset {name!r} split {split!r} is not prepared in {where}{default}: no <version>/dataset_info.json "
          f"in {_tfds_folder(name, where)[0]}, and config key data.download is False. "
          f"Where there is network, run `tfds build {name} --data_dir={where} --file_format=array_record` or set "
          "data.download=True (TFDS's builders need TensorFlow: pip install tensorflow)")
    try:
      self._ds = tfds.data_source(name, split=split, data_dir=data_dir, download=download,
                                  decoders={image_key: tfds.decode.SkipDecoding()})
    except Exception as e:  # TFDS raises many types (not found, no network, bad split, ...).
      # TFDS appends lists of every dataset it knows.
      raise DataError(f"TFDS dataset {name!r} split {split!r} (data_dir={where}): {first_line(e, limit=None)}") from e
    info = self._ds.dataset_info
    self._channels = info.features[image_key].shape[-1] or 3
    cache = epath.Path(info.data_dir) / f"{split}-labels.npy"
    if split in info.splits and cache.exists():
      with cache.open("rb") as f:
        self.labels = np.load(f)
      if len(self.labels) != len(self._ds):
        raise DataError(f"{cache}: {len(self.labels)} labels for {len(self._ds)} records")
    else:
      self.labels = np.array([example[label_key] for example in self._ds], dtype=np.int64)
    label_feature = info.features[label_key]
    self.num_classes = getattr(label_feature, "num_classes", None) or int(self.labels.max()) + 1
    names = list(getattr(label_feature, "names", None) or [])
    # A ClassLabel made from a class count alone names its classes '0', '1', ...: no names.
    self.class_names = names if len(names) == self.num_classes and names != [str(i) for i in range(len(names))] \
        else None

  def __len__(self) -> int:
    return len(self._ds)

  def undecoded(self, index: int) -> np.ndarray | EncodedImage:
    """Record `index`'s image: its encoded bytes where stored encoded, else the uint8 array."""
    image = self._ds[index][self.image_key]
    if isinstance(image, bytes):
      return EncodedImage(image, self._channels, f"{self._ds.dataset_info.data_dir} record {index}")
    image = np.asarray(image, dtype=np.uint8)
    return image[..., None] if image.ndim == 2 else image

  def __getitem__(self, index: int) -> np.ndarray:
    image = self.undecoded(index)
    return image.decode() if isinstance(image, EncodedImage) else image


def fashion_mnist(split: str, data_dir: str | None = None, download: bool = False) -> Source:
  """Fashion-MNIST 'train' (60000) or 'test' (10000) as an `IdxSource`, else from TFDS.

  Looks for the IDX files (gzipped or not) in `data_dir`, then in /usr/share/datasets/fashion-mnist
  (Debian's dataset-fashion-mnist); if neither has them, reads TFDS's 'fashion_mnist' from `data_dir` (default
  TFDS's), which TFDS downloads and prepares only with `download` (config key data.download).
  """
  prefixes = {"train": "train", "test": "t10k"}
  if split not in prefixes:
    raise DataError(f"Fashion-MNIST split {split!r}: expected 'train' or 'test'")
  folders = [folder for folder in (data_dir, FASHION_MNIST_DIR) if folder]
  for folder in folders:
    for suffix in (".gz", ""):
      images, labels = (
          os.path.join(folder, f"{prefixes[split]}-{kind}-ubyte{suffix}") for kind in ("images-idx3", "labels-idx1"))
      if os.path.exists(images) and os.path.exists(labels):
        return IdxSource(images, labels, class_names=list(FASHION_MNIST_CLASSES))
  try:
    return TfdsSource("fashion_mnist", split, data_dir=data_dir, download=download)
  except DataError as e:
    raise DataError(
        f"Fashion-MNIST {split}: no {prefixes[split]}-images-idx3-ubyte[.gz] and {prefixes[split]}-labels-idx1-"
        f"ubyte[.gz] in {', '.join(folders)} (`apt-get install dataset-fashion-mnist`, or set config key "
        f"data.data_dir to a folder with the IDX files), and {e}") from e
