"""The dataset kinds (config key data.kind): one record each, which datasets.build_splits and validate read.

A kind says how to build the raw (train, val or None, test) sources from config key `data`, how to check the paths
it names before anything is read (one ConfigError naming data.<key>, without reading a file or the network), which
val_* key names a validation split of its own, and which data.* keys it reads. README, "How to add a dataset
kind", says what else a new kind needs.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import re
from typing import Callable

import ml_collections

from ltr_jax.data import sources
from ltr_jax.errors import ConfigError, DataError

Raw = tuple[sources.Source, sources.Source | None, sources.Source]
# Either package lets etils.epath, hence TFDS, read gs:// paths (array_record reads gs:// by itself).
GCS_READERS = ("gcsfs", "tensorflow")


@dataclasses.dataclass(frozen=True)
class Kind:
  """One value of config key data.kind.

  build: config key `data` -> the raw (train, val or None, test) sources, before any long-tailed subset.
  check_paths: raises a ConfigError naming data.<key> where a path it names is absent; reads no file.
  val_key: the data.* key naming a validation split of its own (None: only data.val_per_class makes one).
  keys: the data.* keys it reads, besides those of every kind (imbalance_ratio, val_per_class, image_size, ...).
  url_keys: the keys of `keys` that may name a gs:// URL (read through etils.epath); the others must be local.
  own_val: for a kind whose validation split is found, not named (a val/ folder): whether config key `data` has one.
  """
  build: Callable[[ml_collections.ConfigDict], Raw]
  check_paths: Callable[[ml_collections.ConfigDict], None]
  val_key: str | None
  keys: tuple[str, ...]
  url_keys: tuple[str, ...] = ()
  own_val: Callable[[ml_collections.ConfigDict], bool] | None = None


def _exists(key: str, path: str, folder: bool = False) -> None:
  if not (os.path.isdir(path) if folder else os.path.exists(path)):
    raise ConfigError(f"config key data.{key}: {path} does not exist")


def _url(value) -> str | None:
  """The scheme of `value` where it is a URL ('gs' for gs://bucket/...), else None."""
  match = re.match(r"([a-z][a-z0-9+.-]*)://", value) if isinstance(value, str) else None
  return match and match.group(1)


def _check_urls(data: ml_collections.ConfigDict, kind: Kind) -> None:
  """No key of `kind` names a URL that ltr_jax would read with local file operations (open, Pillow)."""
  for key in kind.keys:
    value, scheme = data[key], _url(data[key])
    via_epath = key in kind.url_keys and scheme == "gs"
    if scheme is None or via_epath and any(importlib.util.find_spec(name) for name in GCS_READERS):
      continue
    reason = "TFDS reads gs:// without TensorFlow through gcsfs: pip install gcsfs" if via_epath else \
        f"ltr_jax reads data.{key} with local file operations"
    bucket, _, rest = value.split("://", 1)[1].partition("/")
    local = (f"mount the bucket with gcsfuse (e.g. on Cloud TPU VMs `gcsfuse --implicit-dirs {bucket} /gcs/{bucket}`) "
             f"and pass the local mount path, data.{key}=/gcs/{bucket}/{rest}") if scheme == "gs" else \
        "copy or mount it locally and pass the local path"
    raise ConfigError(f"config key data.{key}: {value}: {reason}; {'or ' if via_epath else ''}{local}")


def _check_data_dir(data: ml_collections.ConfigDict) -> None:
  if data.data_dir and not _url(data.data_dir):
    _exists("data_dir", data.data_dir, folder=True)


# Image files listed by list files ('list') or iNaturalist's JSON ('inat_json'), relative to data.list_dir, their
# images under data.image_root; `suffix` ('list' or 'json') ends the names of their keys data.<split>_<suffix>.


def _require_train_and_test(suffix: str, data: ml_collections.ConfigDict) -> None:
  for split in ("train", "test"):
    if not data[f"{split}_{suffix}"]:
      raise ConfigError(f"config key data.{split}_{suffix} must name a file when data.kind = {data.kind!r}")


def _in_list_dir(data: ml_collections.ConfigDict, name: str) -> str:
  return name if os.path.isabs(name) or not data.list_dir else os.path.join(data.list_dir, name)


def _check_listed(suffix: str, data: ml_collections.ConfigDict) -> None:
  _require_train_and_test(suffix, data)
  if data.list_dir:
    _exists("list_dir", data.list_dir, folder=True)
  for split in ("train", "val", "test"):
    if data[f"{split}_{suffix}"]:
      _exists(f"{split}_{suffix}", _in_list_dir(data, data[f"{split}_{suffix}"]))
  _exists("image_root", data.image_root or ".", folder=True)


# Class-names files ltr_jax ships (ltr_jax/data/, each naming its source), by the name config key data.class_names
# gives them: ImageNet-1k's (ImageNet-LT's labels) and Places-365's (Places-LT's).
SHIPPED_CLASS_NAMES = {"imagenet": "imagenet_classnames.txt", "places365": "places365_classnames.txt"}


def shipped_file(name: str) -> str:
  """The path of ltr_jax/data/<name>."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def read_class_names(path: str) -> list[str]:
  """A class-names file: one name per line in label order, or `wnid name` lines (ImageNet's 'n01440764 tench');
  blank lines and '#' comment lines left out. A name of SHIPPED_CLASS_NAMES reads the file ltr_jax ships."""
  if path in SHIPPED_CLASS_NAMES:
    path = shipped_file(SHIPPED_CLASS_NAMES[path])
  try:
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f]
  except OSError as e:
    raise DataError(f"config key data.class_names: {path}: cannot read it ({e.strerror})") from e
  names = [line for line in lines if line and not line.startswith("#")]
  return [re.sub(r"^n\d{8}\s+", "", name) for name in names]


def _build_listed(suffix: str, source: type[sources.ListFileSource], data: ml_collections.ConfigDict) -> Raw:
  _require_train_and_test(suffix, data)
  names = read_class_names(data.class_names if data.class_names in SHIPPED_CLASS_NAMES else _in_list_dir(
      data, data.class_names)) if suffix == "list" and data.class_names else None

  def read(split: str) -> sources.ListFileSource | None:
    name = data[f"{split}_{suffix}"]
    if not name:
      return None
    split_source = source(_in_list_dir(data, name), data.image_root, data.num_classes or None)
    if names is not None:
      if len(names) != split_source.num_classes:
        raise DataError(f"config key data.class_names: {data.class_names} names {len(names)} classes, the data has "
                        f"{split_source.num_classes}")
      split_source.class_names = names
    return split_source

  return read("train"), read("val"), read("test")


def _listed(suffix: str, source: type[sources.ListFileSource]) -> Kind:
  splits = tuple(f"{split}_{suffix}" for split in ("train", "val", "test"))
  names = ("class_names",) if suffix == "list" else ()
  return Kind(functools.partial(_build_listed, suffix, source), functools.partial(_check_listed, suffix),
              f"val_{suffix}", ("list_dir", "image_root", *splits, "num_classes", *names))


def _check_folders(data: ml_collections.ConfigDict) -> None:
  _exists("image_root", data.image_root, folder=True)
  for split in ("train", "test"):
    if not os.path.isdir(os.path.join(data.image_root, split)):
      raise ConfigError(f"config key data.image_root: {data.image_root} has no {split}/ folder (kind 'folder' reads "
                        "train/<class>/*, an optional val/<class>/* and test/<class>/*)")


def _has_val_folder(data: ml_collections.ConfigDict) -> bool:
  return os.path.isdir(os.path.join(data.image_root, "val"))


def _build_folders(data: ml_collections.ConfigDict) -> Raw:
  train = sources.FolderSource(data.image_root, "train")
  val = sources.FolderSource(data.image_root, "val", train.class_names) if _has_val_folder(data) else None
  return train, val, sources.FolderSource(data.image_root, "test", train.class_names)


def _build_fashion_mnist(data: ml_collections.ConfigDict) -> Raw:
  train, test = (sources.fashion_mnist(split, data.data_dir or None, data.download) for split in ("train", "test"))
  return train, None, test


def _check_tfds(data: ml_collections.ConfigDict) -> None:
  for key in ("tfds_name", "train_split", "test_split"):
    if not data[key]:
      raise ConfigError(f"config key data.{key} must be set when data.kind = 'tfds'")
  _check_data_dir(data)


def _build_tfds(data: ml_collections.ConfigDict) -> Raw:

  def read(split: str) -> sources.TfdsSource | None:
    return sources.TfdsSource(data.tfds_name, split, data.data_dir or None, download=data.download) if split else None

  return read(data.train_split), read(data.val_split), read(data.test_split)


KINDS: dict[str, Kind] = {
    # IDX files (Debian's dataset-fashion-mnist, or data.data_dir), else TFDS's fashion_mnist.
    "fashion_mnist": Kind(_build_fashion_mnist, _check_data_dir, None, ("data_dir", "download")),
    # OLTR list files (`relative/path label` lines) over an image folder: ImageNet-LT, Places-LT, iNaturalist.
    "list": _listed("list", sources.ListFileSource),
    # iNaturalist's official JSON files (train2018.json, val2018.json) over an image folder.
    "inat_json": _listed("json", sources.INatJsonSource),
    # One folder per class under data.image_root's train/, val/ (optional) and test/: a researcher's own data.
    "folder": Kind(_build_folders, _check_folders, None, ("image_root",), own_val=_has_val_folder),
    # A TFDS dataset prepared as array_record (TFDS's catalog, or ltr_jax.data.convert), read with tfds.data_source.
    "tfds": Kind(_build_tfds, _check_tfds, "val_split",
                 ("tfds_name", "data_dir", "train_split", "val_split", "test_split", "download"),
                 url_keys=("data_dir",)),
}


def kind_of(data: ml_collections.ConfigDict) -> Kind:
  """The record of config key data.kind; ConfigError for a kind not registered."""
  if data.kind not in KINDS:
    raise ConfigError(f"config key data.kind: {data.kind!r} is not one of {', '.join(KINDS)}")
  return KINDS[data.kind]


def check_paths(data: ml_collections.ConfigDict) -> None:
  """The files and folders config key `data` names are local (or URLs its kind reads) and exist; reads nothing."""
  kind = kind_of(data)
  _check_urls(data, kind)
  kind.check_paths(data)


def validation_keys(data: ml_collections.ConfigDict) -> str:
  """The config keys that give config key `data` a validation split, for messages: 'data.val_list or
  data.val_per_class', or 'data.val_per_class' alone for a kind without a split of its own."""
  kind = kind_of(data)
  own = f"data.{kind.val_key} or " if kind.val_key else "a val/ folder in data.image_root or " if kind.own_val else ""
  return f"{own}data.val_per_class"


def has_validation(data: ml_collections.ConfigDict) -> bool:
  """Whether config key `data` gives a validation split: its kind's own (data.<val_key>, or one it finds) or
  data.val_per_class."""
  kind = kind_of(data)
  own = bool(kind.val_key and data[kind.val_key]) or bool(kind.own_val and kind.own_val(data))
  return own or data.val_per_class > 0
