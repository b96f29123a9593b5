"""A researcher's own data as class folders (train/<class>/*, val/, test/), made here from real Fashion-MNIST images:
both stages, class names in every report, the predictions of --mode=evaluate, --mode=predict on new images, and the
faults of a folder tree, each one line before any step. Class names from every other kind of data too."""
import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import quickstart
from ltr_jax.data import convert, datasets, kinds, sources
from ltr_jax.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [name.replace("/", "-") for name in sources.FASHION_MNIST_CLASSES]  # 'T-shirt/top' is no folder name
PROFILE = (200, 143, 103, 73, 52, 38, 27, 19, 14, 10)  # images per Fashion-MNIST class in train/ (IR 20)


def _write_tree(root, train_counts=PROFILE, val=20, test=50):
  """Fashion-MNIST's images as PNG files under root/{train,val,test}/<class name>/ (a class's images are the first of
  its label in the IDX training file, then its test images for test/)."""
  train, test_source = sources.fashion_mnist("train"), sources.fashion_mnist("test")
  for c, name in enumerate(NAMES):
    own = np.flatnonzero(train.labels == c)
    for split, indices, source in (("train", own[:train_counts[c]],
                                    train), ("val", own[train_counts[c]:train_counts[c] + val], train),
                                   ("test", np.flatnonzero(test_source.labels == c)[:test], test_source)):
      if not len(indices):
        continue
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in indices:
        Image.fromarray(source.images[i][..., 0]).save(folder / f"{i}.png")


def _main(workdir, image_root, *args, check=True):
  out = subprocess.run([
      sys.executable, "-m", "ltr_jax.main", "--config=configs/quickstart.py", f"--workdir={workdir}",
      "--config.data.kind=folder", f"--config.data.image_root={image_root}", "--config.data.imbalance_ratio=0",
      "--config.data.n_max=0", "--config.data.val_per_class=0", "--config.train.epochs=12",
      "--config.train.batch_size=64", "--config.stage2.methods=('joint','ncm','crt_cached','tau_norm')",
      "--config.stage2.crt_cached.epochs=2", *args
  ], cwd=ROOT, capture_output=True, text=True, timeout=600)
  if check:
    assert out.returncode == 0, out.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("folders")
  _write_tree(root / "data")
  _main(root / "work", root / "data")
  return root


def test_class_folders_run_both_stages_and_every_report_names_the_classes(folder_run):
  results = json.loads((folder_run / "work" / "results.json").read_text())
  assert results["class_names"] == sorted(NAMES)  # the class index is the sorted folder names
  assert results["class_counts"] == [PROFILE[NAMES.index(name)] for name in sorted(NAMES)]
  rows = list(csv.DictReader(io.StringIO((folder_run / "work" / "per_class.csv").read_text())))
  assert [row["name"] for row in rows] == sorted(NAMES) and len(rows) == 10
  assert [int(row["training_images"]) for row in rows] == results["class_counts"]
  assert float(rows[3]["tau_norm"]) == pytest.approx(results["methods"]["tau_norm"]["per_class"][3], abs=0.005)
  table = (folder_run / "work" / "results.md").read_text()
  assert "| Class | Name | Training images | Group | Top-1 |" in table
  assert sum(line.startswith("| ") and any(f" {name} |" in line for name in NAMES) for line in table.splitlines()) == 10
  assert results["methods"]["joint"]["many"] > 70 and results["methods"]["ncm"]["all"] > 45  # chance is 10%


def test_evaluate_writes_every_prediction_and_their_accuracy_is_the_reported_one(folder_run):
  _main(folder_run / "work", folder_run / "data", "--mode=evaluate")
  evaluated = json.loads((folder_run / "work" / "evaluate.json").read_text())
  rows = list(csv.DictReader(io.StringIO((folder_run / "work" / "predictions" / "test.csv").read_text())))
  assert len(rows) == 500  # 50 test images of each class, one row each
  accuracy = 100 * np.mean([row["label"] == row["predicted"] for row in rows])
  assert accuracy == pytest.approx(evaluated["test"]["all"], abs=1e-9)  # a balanced test split: All is accuracy
  assert all(row["label_name"] == sorted(NAMES)[int(row["label"])] for row in rows)
  assert all(row["predicted"] == row["top1_class"] and row["predicted_name"] == row["top1_name"] for row in rows)
  probs = np.array([[float(row[f"top{k}_prob"]) for k in range(1, 6)] for row in rows])
  assert np.all(np.diff(probs, axis=1) <= 0) and np.all(probs.sum(axis=1) <= 1 + 1e-6)
  assert rows[0]["image"].endswith(".png") and "/test/" in rows[0]["image"]
  assert (folder_run / "work" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_on_new_images_names_the_unreadable_one(folder_run, tmp_path):
  new = tmp_path / "new" / "deeper"
  new.mkdir(parents=True)
  test = sources.fashion_mnist("test")
  for i in range(49):
    Image.fromarray(test.images[1000 + i][..., 0]).save(new / f"img{i:02d}.PNG" if i % 2 else new / f"img{i:02d}.png")
  (new / "img49.jpg").write_bytes(b"not a jpeg at all")
  (new / "notes.txt").write_text("not an image file: left out")
  output = tmp_path / "predictions.csv"
  out = _main(folder_run / "work", folder_run / "data", "--mode=predict", f"--images={tmp_path / 'new'}",
              f"--output={output}")
  rows = list(csv.DictReader(io.StringIO(output.read_text())))
  assert len(rows) == 50 and sum(row["status"] == "ok" for row in rows) == 49
  bad = [row for row in rows if row["status"] != "ok"]
  assert len(bad) == 1 and bad[0]["image"].endswith("img49.jpg") and bad[0]["status"].startswith("unreadable: ")
  assert bad[0]["predicted"] == ""
  assert all(row["top1_name"] in NAMES for row in rows if row["status"] == "ok")
  # The model (the best on validation) predicts new Fashion-MNIST images far above chance (10%).
  truth = [NAMES[test.labels[1000 + i]] for i in range(49)]
  names = {row["image"]: row["top1_name"] for row in rows if row["status"] == "ok"}
  predicted = [names[str(p)] for p in sorted(new.iterdir()) if p.suffix.lower() == ".png"]
  assert np.mean([p == t for p, t in zip(predicted, truth)]) > 0.35
  assert out.stderr.strip().splitlines()[-1].startswith("predicted 49 images, 1 unreadable (listed as such)")


@pytest.mark.parametrize("fault, message", [
    ("a test class that train lacks", "test/Scarf: a class folder that the training split lacks"),
    ("an empty class folder", "train/Bag: an empty class folder (no image files)"),
    ("a file that is not an image", "train/Coat/notes.txt: not an image file"),
    ("two names that differ in case", "class folders 'Bag' and 'bag' differ only in case: rename one"),
])
def test_a_faulty_folder_tree_stops_in_one_line_before_any_step(tmp_path, fault, message):
  data = tmp_path / "data"
  _write_tree(data, train_counts=(3,) * 10, val=1, test=2)
  if fault == "a test class that train lacks":
    (data / "test" / "Scarf").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(data / "test" / "Scarf" / "0.png")
  elif fault == "an empty class folder":
    for file in (data / "train" / "Bag").iterdir():
      file.unlink()
  elif fault == "a file that is not an image":
    (data / "train" / "Coat" / "notes.txt").write_text("what these are")
  else:
    (data / "train" / "bag").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(data / "train" / "bag" / "0.png")
  out = _main(tmp_path / "work", data, check=False)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 1 and len(lines) == 1 and message in lines[0], out.stderr[-2000:]
  assert not (tmp_path / "work" / "checkpoints").exists()


def test_a_balanced_folder_tree_made_long_tailed_with_validation_held_out(tmp_path):
  """The long-tail options on class folders: the exponential profile over the sorted classes, a balanced validation
  split held out of the unused images."""
  _write_tree(tmp_path, train_counts=(60,) * 10, val=0, test=2)
  data = quickstart.get_config().data
  data.update(dict(kind="folder", image_root=str(tmp_path), imbalance_ratio=10.0, n_max=50, val_per_class=10))
  splits = datasets.build_splits(data)
  assert splits.class_counts.tolist() == [50, 38, 29, 23, 17, 13, 10, 8, 6, 5]
  assert np.bincount(splits.val.labels, minlength=10).tolist() == [10] * 10
  assert splits.names == sorted(NAMES)
  assert kinds.has_validation(data)
  data.val_per_class = 0
  assert not kinds.has_validation(data)
  (tmp_path / "val").mkdir()
  assert kinds.has_validation(data)  # a val/ folder of its own


def test_every_kind_says_the_class_names_its_data_has(tmp_path, list_file_dataset):
  """Fashion-MNIST its ten names; a list file its data.class_names file (plain or `wnid name` lines); iNaturalist's
  JSON its categories' names; a TFDS dataset its label names (ltr_jax.data.convert keeps a source's)."""
  assert datasets.build_splits(quickstart.get_config().data).names[0] == "T-shirt/top"
  d = list_file_dataset
  (tmp_path / "names.txt").write_text("# three classes\nn02123045 tabby cat\nn02085620 Chihuahua\nbird\n")
  config = quickstart.get_config()
  config.data.update(
      dict(kind="list", list_dir=str(tmp_path), image_root=d["root"], train_list=d["list_file"],
           test_list=d["list_file"], class_names="names.txt", imbalance_ratio=0.0, n_max=0, val_per_class=0,
           image_size=8))
  assert datasets.build_splits(config.data).names == ["tabby cat", "Chihuahua", "bird"]
  (tmp_path / "names.txt").write_text("cat\ndog\n")
  with pytest.raises(DataError, match="config key data.class_names: names.txt names 2 classes, the data has 3"):
    datasets.build_splits(config.data)
  inat = {
      "images": [{"id": 7, "file_name": d["paths"][0]}], "annotations": [{"image_id": 7, "category_id": 1}],
      "categories": [{"id": 0, "name": "Amanita muscaria"}, {"id": 1, "name": "Boletus edulis"}]
  }
  (tmp_path / "train.json").write_text(json.dumps(inat))
  assert sources.INatJsonSource(str(tmp_path / "train.json"),
                                d["root"]).class_names == ["Amanita muscaria", "Boletus edulis"]
  listed = sources.ListFileSource(d["list_file"], d["root"], class_names=["cat", "dog", "bird"])
  convert.convert({"train": listed}, "named", str(tmp_path / "tfds"))
  assert sources.TfdsSource("named", "train", data_dir=str(tmp_path / "tfds")).class_names == ["cat", "dog", "bird"]
