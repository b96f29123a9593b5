"""Converts sources (list file + image folder, IDX files) into a TFDS array_record dataset, without TensorFlow.

The result is read with `tfds.data_source(name, split=..., data_dir=...)`, hence by `TfdsSource`.
Layout: `<data_dir>/<name>/1.0.0/` holds the TFDS files (features `image`: encoded image, `label`:
ClassLabel) and `<split>-labels.npy`, the labels in record order, so that `TfdsSource` gets them
without reading the images.
Images from a `ListFileSource` are stored as their original file bytes (checked to decode first);
other images are encoded as PNG (lossless).

  python -m ltr_jax.data.convert --name imagenet_lt --data_dir D \\
      --split train --list_file ImageNet_LT_train.txt --image_root R \\
      --split test --list_file ImageNet_LT_test.txt --image_root R
  python -m ltr_jax.data.convert --name fashion_mnist_idx --data_dir D \\
      --split train --idx_images train-images-idx3-ubyte.gz --idx_labels train-labels-idx1-ubyte.gz
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from ltr_jax import progress
from ltr_jax.data.sources import IdxSource, ListFileSource, Source
from ltr_jax.errors import DataError, LtrError

VERSION = "1.0.0"


class _SourcesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS builder whose splits are given sources; the files it writes need no builder to read."""

  # No downloads. Also keeps TFDS from resolving this module's code path, which imports
  # `importlib_resources`, a package TFDS 4.9.10 does not require on Python >= 3.9.
  url_infos = None

  def __init__(self, *, name: str, sources: Mapping[str, Source], channels: int, data_dir: str):
    self.name = name
    self.VERSION = tfds.core.Version(VERSION)  # pylint: disable=invalid-name
    self._sources = sources
    self._channels = channels
    super().__init__(data_dir=data_dir, file_format="array_record")

  def _info(self) -> tfds.core.DatasetInfo:
    first = next(iter(self._sources.values()))
    names = getattr(first, "class_names", None)  # kept as the ClassLabel's names, which TfdsSource reads back
    label = tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel(num_classes=first.num_classes)
    return tfds.core.DatasetInfo(
        builder=self,
        description="Converted by ltr_jax.data.convert.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, self._channels)),
            "label": label,
        }),
        disable_shuffling=True,  # Record i is source record i.
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, source) for split, source in self._sources.items()}

  def _generate_examples(self, split: str, source: Source) -> Iterator[tuple[int, dict]]:
    with progress.bar(len(source), f"{self.name} {split}", unit="image") as bar:
      for i in range(len(source)):
        yield i, {"image": self._encoded(source, i), "label": int(source.labels[i])}
        bar.update()

  def _encoded(self, source: Source, index: int) -> bytes:
    image = source[index]  # Decoding first reports a corrupt file here, not during training.
    if image.shape[-1] != self._channels:
      raise DataError(f"record {index}: {image.shape[-1]} channels, the first image has {self._channels}")
    if isinstance(source, ListFileSource):
      return source.read_bytes(index)
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if self._channels == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def convert(sources: Mapping[str, Source], name: str, data_dir: str) -> str:
  """Writes `sources` (split name -> source) as TFDS dataset `name` in `data_dir`; returns its folder."""
  snake = tfds.core.naming.camelcase_to_snakecase(name)
  if snake != name:
    raise DataError(f"dataset name {name!r} (--name): TFDS reads dataset names in snake_case, this one as {snake!r}: "
                    "use lowercase letters, digits and '_'")
  if len({source.num_classes for source in sources.values()}) != 1:
    raise DataError(f"{name}: the splits disagree on the number of classes")
  channels = next(iter(sources.values()))[0].shape[-1]
  builder = _SourcesBuilder(name=name, sources=sources, channels=channels, data_dir=data_dir)
  if os.path.exists(builder.data_dir):
    raise DataError(f"{builder.data_dir} already exists: delete it or choose another name")
  if not sys.stderr.isatty():  # TFDS's own bars (its splits, shuffling, writing) would redraw into a log file
    tfds.disable_progress_bar()
  builder.download_and_prepare(file_format="array_record")
  for split, source in sources.items():
    np.save(os.path.join(builder.data_dir, f"{split}-labels.npy"), np.asarray(source.labels, np.int64))
  return builder.data_dir


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--name", required=True, help="TFDS dataset name, e.g. imagenet_lt")
  parser.add_argument("--data_dir", required=True, help="TFDS data dir to write into")
  parser.add_argument("--split", action="append", required=True, help="split name; repeat per split")
  parser.add_argument("--list_file", action="append", help="list file of each --split")
  parser.add_argument("--image_root", action="append", help="image folder of each --split")
  parser.add_argument("--num_classes", type=int, help="list files: number of classes (default max label + 1)")
  parser.add_argument("--idx_images", action="append", help="IDX image file of each --split")
  parser.add_argument("--idx_labels", action="append", help="IDX label file of each --split")
  args = parser.parse_args(argv)
  n = len(args.split)
  if args.list_file or args.image_root:
    if len(args.list_file or []) != n or len(args.image_root or []) != n:
      parser.error("give one --list_file and one --image_root per --split")
    sources = [ListFileSource(f, r, args.num_classes) for f, r in zip(args.list_file, args.image_root)]
  elif args.idx_images or args.idx_labels:
    if len(args.idx_images or []) != n or len(args.idx_labels or []) != n:
      parser.error("give one --idx_images and one --idx_labels per --split")
    sources = [IdxSource(i, l) for i, l in zip(args.idx_images, args.idx_labels)]
  else:
    parser.error("give --list_file/--image_root or --idx_images/--idx_labels")
  print(convert(dict(zip(args.split, sources)), args.name, args.data_dir))


if __name__ == "__main__":
  try:
    main()
  except LtrError as e:
    sys.exit(f"error: {e}")
