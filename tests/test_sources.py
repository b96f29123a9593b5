"""Record sources on real files: list files + images, Fashion-MNIST IDX, TFDS array_record round trips; a TFDS
dataset not prepared stops at once without any download; a corrupt image stops the pipeline with its DataError."""

import gzip
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from ltr_jax.data import convert, pipeline, sources
from ltr_jax.data.longtail import Subset
from ltr_jax.data.sampling import IndexSampler
from ltr_jax.data.sources import (EncodedImage, IdxSource, ListFileSource, TfdsSource, class_counts, fashion_mnist,
                                  undecoded)
from ltr_jax.data.transforms import RandomResizedCropFlip
from ltr_jax.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_list_file_source_decodes_png_and_jpeg_to_rgb(list_file_dataset):
  d = list_file_dataset
  source = ListFileSource(d["list_file"], d["root"])
  assert source.paths == d["paths"]  # The blank line is skipped; "dogs/d e.png" keeps its space.
  np.testing.assert_array_equal(source.labels, d["labels"])
  assert source.labels.dtype == np.int64 and source.num_classes == 3 and len(source) == 5
  np.testing.assert_array_equal(source[0], d["pixels"][0])  # PNG RGB: exact.
  np.testing.assert_array_equal(source[1], np.repeat(d["pixels"][1][..., None], 3, -1))  # Grayscale -> RGB.
  np.testing.assert_array_equal(source[3], d["pixels"][3])
  for i in (2, 4):  # JPEG: shape exact, pixels within compression error.
    assert source[i].shape == d["pixels"][i].shape and source[i].dtype == np.uint8
    assert np.abs(source[i].astype(int) - d["pixels"][i]).mean() < 3
  assert ListFileSource(d["list_file"], d["root"], num_classes=5).num_classes == 5


@pytest.mark.parametrize("line", ["foo", "cats/a.png dog", "cats/a.png 1.5"])
def test_list_line_that_does_not_parse(tmp_path, line):
  list_file = tmp_path / "train.txt"
  list_file.write_text(f"cats/a.png 0\n{line}\n")
  with pytest.raises(DataError, match=rf"train\.txt:2: expected '<relative/path> <label>', got '{line}'"):
    ListFileSource(str(list_file), str(tmp_path))


@pytest.mark.parametrize("label", [3, -1])
def test_label_out_of_range(tmp_path, label):
  list_file = tmp_path / "train.txt"
  list_file.write_text(f"a.png 0\n\nb.png {label}\n")
  with pytest.raises(DataError, match=rf"train\.txt:3: label {label} outside \[0, 3\)"):
    ListFileSource(str(list_file), str(tmp_path), num_classes=3)


def test_missing_and_corrupt_images(list_file_dataset):
  d = list_file_dataset
  os.remove(os.path.join(d["root"], "cats/a.png"))
  with open(os.path.join(d["root"], "dogs/c.jpg"), "r+b") as f:
    f.truncate(40)  # A JPEG header without its data.
  with open(os.path.join(d["root"], "birds/f.jpeg"), "wb") as f:
    f.write(b"not an image")
  source = ListFileSource(d["list_file"], d["root"])
  with pytest.raises(DataError, match=r"cats/a\.png \(listed at .*train\.txt:1\): cannot read image \(No such file"):
    source[0]
  with pytest.raises(DataError, match=r"dogs/c\.jpg \(listed at .*train\.txt:4\): cannot decode image"):
    source[2]
  with pytest.raises(DataError, match=r"birds/f\.jpeg \(listed at .*train\.txt:6\): cannot decode image"):
    source[4]


def test_subset_passes_on_the_undecoded_files(list_file_dataset, fashion_mnist_dir):
  d = list_file_dataset
  files = ListFileSource(d["list_file"], d["root"])
  subset = Subset(files, np.array([4, 2]))
  for i, j in enumerate((4, 2)):
    encoded = undecoded(subset, i)
    assert isinstance(encoded, EncodedImage) and encoded == files.undecoded(j)
    np.testing.assert_array_equal(encoded.decode(), files[j])
  # Arrays in memory stay arrays.
  test = fashion_mnist("test", data_dir=fashion_mnist_dir)
  np.testing.assert_array_equal(undecoded(Subset(test, np.array([9])), 0), test[9])


def test_missing_list_file(tmp_path):
  with pytest.raises(DataError, match=r"nope\.txt: cannot read list file"):
    ListFileSource(str(tmp_path / "nope.txt"), str(tmp_path))


def test_idx_wrong_magic_and_size(tmp_path, fashion_mnist_dir):
  labels = os.path.join(fashion_mnist_dir, "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: IDX magic number 2049, expected 2051"):
    IdxSource(labels, labels)
  truncated = tmp_path / "images-idx3-ubyte"
  with gzip.open(os.path.join(fashion_mnist_dir, "t10k-images-idx3-ubyte.gz")) as f:
    truncated.write_bytes(f.read()[:1000])
  with pytest.raises(DataError, match=r"images-idx3-ubyte: 1000 bytes, the header \(10000, 28, 28\) implies 7840016"):
    IdxSource(str(truncated), labels)


def test_fashion_mnist_real_files(fashion_mnist_dir):
  for split, n in (("train", 60000), ("test", 10000)):
    source = fashion_mnist(split, data_dir=fashion_mnist_dir)
    assert len(source) == n and source.num_classes == 10
    assert source[n - 1].shape == (28, 28, 1) and source[0].dtype == np.uint8
    assert source.labels.dtype == np.int64
    np.testing.assert_array_equal(class_counts(source.labels, 10), np.full(10, n // 10))
  with pytest.raises(DataError, match="expected 'train' or 'test'"):
    fashion_mnist("val")


def test_class_counts_rejects_out_of_range_labels():
  np.testing.assert_array_equal(class_counts(np.array([0, 2, 2]), 4), [1, 0, 2, 0])
  with pytest.raises(DataError, match=r"label 4 outside \[0, 4\)"):
    class_counts(np.array([0, 4]), 4)


def _assert_same_records(a, b):
  assert len(a) == len(b) and a.num_classes == b.num_classes
  np.testing.assert_array_equal(a.labels, b.labels)
  for i in range(len(a)):
    np.testing.assert_array_equal(a[i], b[i])


def test_convert_idx_subset_round_trip(tmp_path, fashion_mnist_dir):
  test = fashion_mnist("test", data_dir=fashion_mnist_dir)
  sources = {"train": Subset(test, np.arange(0, 10000, 50)), "test": Subset(test, np.arange(7, 107))}
  folder = convert.convert(sources, "fm_small", str(tmp_path))
  assert os.path.exists(os.path.join(folder, "train-labels.npy"))
  for split, source in sources.items():
    _assert_same_records(TfdsSource("fm_small", split, data_dir=str(tmp_path)), source)
  # A split expression has no labels cache: labels come from the records.
  head = TfdsSource("fm_small", "train[:30]", data_dir=str(tmp_path))
  np.testing.assert_array_equal(head.labels, sources["train"].labels[:30])
  with pytest.raises(DataError, match="already exists"):
    convert.convert(sources, "fm_small", str(tmp_path))


def test_convert_cli_list_file_round_trip(tmp_path, list_file_dataset):
  d = list_file_dataset
  data_dir = str(tmp_path / "tfds")
  convert.main([
      "--name", "tiny", "--data_dir", data_dir, "--split", "train", "--list_file", d["list_file"], "--image_root",
      d["root"]
  ])
  _assert_same_records(TfdsSource("tiny", "train", data_dir=data_dir), ListFileSource(d["list_file"], d["root"]))


def test_convert_cli_idx(tmp_path, fashion_mnist_dir):
  """The command line, its output to a file (a log): the dataset's folder on stdout, and on stderr the project's
  plain progress line per split, no redrawn bar (no carriage return) of ltr_jax's or TFDS's."""
  images, labels = (os.path.join(fashion_mnist_dir, f"t10k-{k}-ubyte.gz") for k in ("images-idx3", "labels-idx1"))
  small = tmp_path / "small"
  small.mkdir()
  # The first 20 records, uncompressed, with the count in the headers rewritten to 20.
  with gzip.open(images) as f:
    data = f.read()
  (small / "images").write_bytes(data[:4] + (20).to_bytes(4, "big") + data[8:16 + 20 * 784])
  with gzip.open(labels) as f:
    data = f.read()
  (small / "labels").write_bytes(data[:4] + (20).to_bytes(4, "big") + data[8:8 + 20])
  data_dir = str(tmp_path / "tfds")
  out = subprocess.run([
      sys.executable, "-m", "ltr_jax.data.convert", "--name", "fm20", "--data_dir", data_dir, "--split", "test",
      "--idx_images",
      str(small / "images"), "--idx_labels",
      str(small / "labels")
  ], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().endswith(os.path.join("fm20", "1.0.0"))
  lines = out.stderr.strip().splitlines()
  assert "\r" not in out.stderr and len(lines) == 1 and lines[0].startswith("fm20 test: 20/20 (100%)"), out.stderr
  original = IdxSource(images, labels)
  _assert_same_records(TfdsSource("fm20", "test", data_dir=data_dir), Subset(original, np.arange(20)))


def test_convert_reports_corrupt_image(tmp_path, list_file_dataset):
  d = list_file_dataset
  shutil.copy(__file__, os.path.join(d["root"], "dogs/d e.png"))
  with pytest.raises(DataError, match=r"d e\.png \(listed at .*train\.txt:5\): cannot decode image"):
    convert.convert({"train": ListFileSource(d["list_file"], d["root"])}, "tiny", str(tmp_path / "tfds"))


def test_tfds_source_unknown_dataset(tmp_path):
  with pytest.raises(DataError, match="TFDS dataset 'no_such_dataset_ltr' split 'train'"):
    TfdsSource("no_such_dataset_ltr", "train", data_dir=str(tmp_path))
  # A folder that looks prepared: TFDS's own error, which lists every dataset it knows, in one line.
  (tmp_path / "no_such_dataset_ltr" / "1.0.0").mkdir(parents=True)
  (tmp_path / "no_such_dataset_ltr" / "1.0.0" / "dataset_info.json").write_text("{}")
  with pytest.raises(
      DataError, match=rf"^TFDS dataset 'no_such_dataset_ltr' split 'train' \(data_dir={tmp_path}\): "
      r"[^\n]*not found\.$"):
    TfdsSource("no_such_dataset_ltr", "train", data_dir=str(tmp_path))


def test_convert_refuses_a_name_tfds_reads_otherwise(tmp_path, list_file_dataset):
  d = list_file_dataset
  with pytest.raises(
      DataError, match=r"dataset name 'MyData' \(--name\): TFDS reads dataset names in snake_case, "
      r"this one as 'my_data'"):
    convert.convert({"train": ListFileSource(d["list_file"], d["root"])}, "MyData", str(tmp_path))


def test_tfds_dataset_not_prepared_stops_at_once_without_download(tmp_path):
  start = time.time()
  with pytest.raises(DataError) as error:
    TfdsSource("cifar10", "train", data_dir=str(tmp_path))
  assert time.time() - start < 1
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"TFDS dataset 'cifar10' split 'train' is not prepared in {tmp_path}")
  assert f"`tfds build cifar10 --data_dir={tmp_path} --file_format=array_record`" in message
  assert "data.download=True" in message
  assert not os.listdir(tmp_path)  # TFDS wrote nothing there (no download folder)


def test_fashion_mnist_without_idx_files_or_tfds_stops_at_once(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "FASHION_MNIST_DIR", str(tmp_path / "debian"))
  with pytest.raises(
      DataError, match=rf"Fashion-MNIST test: no t10k-images-idx3-ubyte\[\.gz\] .* in {tmp_path}, "
      rf"\S+debian \(`apt-get install dataset-fashion-mnist`.*, and TFDS dataset "
      rf"'fashion_mnist' split 'test' is not prepared in {tmp_path}: .*"
      r"data\.download=True"):
    fashion_mnist("test", data_dir=str(tmp_path))


def test_main_stops_on_a_tfds_dataset_not_prepared(tmp_path):
  """CIFAR-10-LT's config with an empty TFDS data_dir: one line naming the dataset, where it looked and the command
  that prepares it, in seconds (the config check before it needs no data)."""
  start = time.time()
  out = subprocess.run([
      sys.executable, "-m", "ltr_jax.main", "--config=configs/cifar10_lt_r32.py", f"--workdir={tmp_path / 'workdir'}",
      f"--config.data.data_dir={tmp_path}"
  ], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert time.time() - start < 30
  assert out.returncode == 1, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: TFDS dataset 'cifar10' split 'train' is not prepared in "
                                                 f"{tmp_path}"), out.stderr[-2000:]
  assert f"`tfds build cifar10 --data_dir={tmp_path} --file_format=array_record`" in lines[0]


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_stops_the_pipeline_with_its_data_error(list_file_dataset, workers):
  """The DataError naming the file and its list line comes out of grain's iterator as it is, whether the image was
  decoded in this process or in a worker process."""
  d = list_file_dataset
  with open(os.path.join(d["root"], "dogs/c.jpg"), "r+b") as f:
    f.truncate(40)  # A JPEG header without its data.
  source = ListFileSource(d["list_file"], d["root"])
  sampler = IndexSampler(source.labels, 3, "instance", seed=0)
  batches = pipeline.train_batches(source, sampler, RandomResizedCropFlip(8), global_batch=5, start_step=0, num_steps=1,
                                   seed=0, num_workers=workers)  # one batch: all 5 images
  with pytest.raises(DataError, match=r"^\S+dogs/c\.jpg \(listed at \S+train\.txt:4\): cannot decode image"):
    next(batches)
