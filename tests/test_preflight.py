"""The data check before training, on list-file datasets the tests write (tiny PNG / JPEG), an iNaturalist JSON
dataset, and real Fashion-MNIST (labels only)."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from configs import base, quickstart
from ltr_jax.data import datasets, preflight
from ltr_jax.errors import DataError


def _write_images(root, per_class: int, classes: int) -> list[tuple[str, int]]:
  """per_class tiny images (PNG for even classes, JPEG for odd) in one folder per class: [(path, label)]."""
  records = []
  for c in range(classes):
    os.makedirs(root / f"class{c}", exist_ok=True)
    for i in range(per_class):
      path = f"class{c}/img{i}.{'png' if c % 2 == 0 else 'jpg'}"
      Image.fromarray(np.full((4, 5, 3), 40 * c + i, np.uint8)).save(root / path)
      records.append((path, c))
  return records


def _list_data(tmp_path, train, test, **overrides):
  """Config key `data` of a list-file dataset: train.txt / test.txt with `path label` lines."""
  for split, records in (("train", train), ("test", test)):
    (tmp_path / f"{split}.txt").write_text("".join(f"{path} {label}\n" for path, label in records))
  data = base.get_config().data
  data.update(
      dict(name="tiny", kind="list", list_dir=str(tmp_path), image_root=str(tmp_path / "images"),
           train_list="train.txt", test_list="test.txt", **overrides))
  return data


@pytest.fixture
def tiny(tmp_path):
  """3 classes x 6 images; train lists 4 of each class, test the other 2."""
  records = _write_images(tmp_path / "images", per_class=6, classes=3)
  train = [r for r in records if int(r[0].split("img")[1][0]) < 4]
  test = [r for r in records if int(r[0].split("img")[1][0]) >= 4]
  return tmp_path, train, test


def test_clean_list_dataset_passes(tiny):
  tmp_path, train, test = tiny
  splits = datasets.build_splits(_list_data(tmp_path, train, test))
  preflight.check(splits)  # No exception.
  assert len(splits.train) == 12 and len(splits.test) == 6


def test_missing_images_counted_and_first_five_named_with_their_lines(tiny):
  tmp_path, train, test = tiny
  splits = datasets.build_splits(_list_data(tmp_path, train, test))
  # Train lines 2, 3, 5, 8 and 12 and test line 6: six missing, the first five in list order are train's.
  gone = [train[k][0] for k in (1, 2, 4, 7, 11)] + [test[5][0]]
  for path in gone:
    os.remove(tmp_path / "images" / path)
  with pytest.raises(DataError) as error:
    preflight.check(splits)
  message = str(error.value)
  assert "\n" not in message
  assert "6 of 18 listed images are missing" in message
  named = re.findall(r"(\S+) \(listed at (\S+)\)", message)
  assert named == [(os.path.join(str(tmp_path / "images"), gone[k]), f"{tmp_path / 'train.txt'}:{line}")
                   for k, line in enumerate((2, 3, 5, 8, 12))]
  assert test[5][0] not in message and "data.preflight" in message


def test_out_of_range_test_label_and_empty_class_in_one_error(tiny):
  tmp_path, train, test = tiny
  # C = 3 from the training labels (0 and 2); class 1 has no training image; test.txt:4 has label 7.
  test = test[:3] + [(test[3][0], 7)] + test[4:]
  train = [r for r in train if r[1] != 1]
  splits = datasets.build_splits(_list_data(tmp_path, train, test))
  os.remove(tmp_path / "images" / train[-1][0])
  with pytest.raises(DataError) as error:
    preflight.check(splits)
  message = str(error.value)
  assert f"1 test label(s) outside [0, 3): 7 at {tmp_path / 'test.txt'}:4" in message
  assert "1 of 3 classes have no training image: class(es) 1;" in message
  assert f"1 of 14 listed images are missing: {tmp_path / 'images' / train[-1][0]} (listed at " \
         f"{tmp_path / 'train.txt'}:{len(train)})" in message


def test_test_label_beyond_the_training_classes(tiny):
  # Without data.num_classes, C comes from the training split (0..2): test label 3 is out of range.
  tmp_path, train, test = tiny
  splits = datasets.build_splits(_list_data(tmp_path, train, test[:-1] + [(test[-1][0], 3)]))
  assert splits.num_classes == 3
  with pytest.raises(DataError, match=rf"1 test label\(s\) outside \[0, 3\): 3 at .*test\.txt:6$"):
    preflight.check(splits)


def test_subsets_check_only_their_own_records(tmp_path):
  # Long-tailed train subset (4, 2, 2 of 6 per class) and a held-out val subset (1 per class): 7 images are in
  # neither; removing those not in test.txt passes, removing a validation image fails and names it.
  records = _write_images(tmp_path / "images", per_class=6, classes=3)
  data = _list_data(tmp_path, records, records[:3], imbalance_ratio=2.0, n_max=4, val_per_class=1)
  splits = datasets.build_splits(data)
  train_ids, val_ids = splits.train.indices, splits.val.indices
  assert len(train_ids) == 8 and len(val_ids) == 3
  unused = np.setdiff1d(np.arange(18), np.concatenate([train_ids, val_ids, [0, 1, 2]]))
  assert len(unused) >= 4
  for i in unused:
    os.remove(tmp_path / "images" / records[i][0])
  preflight.check(splits)
  os.remove(tmp_path / "images" / records[val_ids[-1]][0])  # class 2's: not in test.txt
  with pytest.raises(
      DataError, match=rf"1 of 14 listed images are missing: \S+{records[val_ids[-1]][0]} "
      rf"\(listed at \S+train\.txt:{val_ids[-1] + 1}\)"):
    preflight.check(splits)


def test_inat_json_missing_image_named_by_image_id(tmp_path):
  records = _write_images(tmp_path / "images", per_class=2, classes=2)
  for split, ids in (("train", (10, 11, 12, 13)), ("test", (20, 21, 22, 23))):
    content = {
        "images": [{"id": i, "file_name": path} for i, (path, _) in zip(ids, records)],
        "annotations": [{"image_id": i, "category_id": label} for i, (_, label) in zip(ids, records)],
        "categories": [{"id": 0}, {"id": 1}]
    }
    (tmp_path / f"{split}.json").write_text(json.dumps(content))
  data = base.get_config().data
  data.update(
      dict(name="inat", kind="inat_json", list_dir=str(tmp_path), image_root=str(tmp_path / "images"),
           train_json="train.json", test_json="test.json"))
  splits = datasets.build_splits(data)
  preflight.check(splits)
  os.remove(tmp_path / "images" / records[2][0])  # image id 12 in train, 22 in test: one file, two sources
  with pytest.raises(
      DataError, match=rf"2 of 8 listed images are missing: \S+{records[2][0]} \(listed at "
      rf"\S+train\.json, image id 12\), \S+ \(listed at \S+test\.json, "
      r"image id 22\) "):
    preflight.check(splits)


def test_fashion_mnist_labels(fashion_mnist_dir):
  splits = datasets.build_splits(quickstart.get_config().data)
  preflight.check(splits)  # The quickstart's long-tailed Subsets of IDX arrays: labels only, no files.
  # With 9 classes, every 9 (ankle boot) is out of range: the message counts them and names the first five
  # records of each split, in the split's own record numbers.
  narrow = dataclasses.replace(splits, num_classes=9)
  with pytest.raises(DataError) as error:
    preflight.check(narrow)
  message = str(error.value)
  for split in ("train", "val", "test"):
    labels = getattr(splits, split).labels
    nines = np.flatnonzero(labels == 9)
    shown = ", ".join(f"9 at {split} record {k}" for k in nines[:5])
    assert f"{nines.size} {split} label(s) outside [0, 9): {shown}" in message
  assert "listed images" not in message


def test_fashion_mnist_empty_class(fashion_mnist_dir):
  data = base.get_config().data
  data.update(dict(name="fashion_mnist", kind="fashion_mnist", num_classes=12, image_size=28))
  with pytest.raises(
      DataError, match=r"data check of fashion_mnist: 2 of 12 classes have no training image: "
      r"class\(es\) 10, 11$"):
    preflight.check(datasets.build_splits(data))


def test_absent_directory_counts_every_image_in_it(tiny):
  tmp_path, train, test = tiny
  splits = datasets.build_splits(_list_data(tmp_path, train, test))
  for path, label in train + test:
    if label == 2:
      os.remove(tmp_path / "images" / path)
  os.rmdir(tmp_path / "images" / "class2")
  with pytest.raises(
      DataError, match=r"6 of 18 listed images are missing: \S+class2/img0\.png \(listed at "
      r"\S+train\.txt:9\), .*class2/img3\.png \(listed at \S+train\.txt:12\), "
      r"\S+class2/img4\.png \(listed at \S+test\.txt:5\), \.\.\. "):
    preflight.check(splits)


def test_preflight_decode_names_the_images_that_do_not_decode(tiny):
  tmp_path, train, test = tiny
  data = _list_data(tmp_path, train, test)
  (tmp_path / "images" / train[5][0]).write_bytes(b"\xff\xd8 not a JPEG")  # class1/img1.jpg, train.txt:6
  png = tmp_path / "images" / test[1][0]  # class0/img5.png, test.txt:2
  png.write_bytes(png.read_bytes()[:50])  # truncated in its pixel data
  preflight.check(datasets.build_splits(data))  # Without decoding: every file is there.
  data.preflight_decode = True
  with pytest.raises(DataError) as error:
    preflight.check(datasets.build_splits(data))
  message = str(error.value)
  assert "\n" not in message and message.startswith("data check of tiny: 2 of 18 images do not decode: ")
  named = re.findall(r"(\S+) \(listed at (\S+)\): cannot decode image", message)
  assert named == [(str(tmp_path / "images" / train[5][0]), f"{tmp_path / 'train.txt'}:6"),
                   (str(png), f"{tmp_path / 'test.txt'}:2")]


def test_two_hosts_share_the_decoding_and_report_the_same_bad_file(tmp_path):
  """With data.preflight_decode on 2 processes (jax.distributed over gloo on localhost), each decodes half of the
  images, and both stop with the same message naming the one corrupt file, as 1 process does."""
  import json
  import subprocess
  import sys
  sys.path.insert(0, os.path.dirname(__file__))
  from test_multihost_eval import _free_port
  root, lines = tmp_path / "images", []
  root.mkdir()
  for i in range(40):
    Image.fromarray(np.full((8, 8, 3), i * 5, np.uint8)).save(root / f"{i}.png")
    lines.append(f"{i}.png {i % 4}")
  (root / "17.png").write_bytes(b"not an image")
  (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
  script = os.path.join(os.path.dirname(__file__), "preflight_script.py")
  args = [sys.executable, script, str(tmp_path / "list.txt"), str(root)]
  subprocess.run([*args, str(tmp_path / "one.json")], check=True, timeout=300, capture_output=True)
  port = _free_port()
  procs = [
      subprocess.Popen([*args, str(tmp_path / f"p{p}.json"), f"127.0.0.1:{port}", "2",
                        str(p)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in range(2)
  ]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)
  one, *two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "p0", "p1"))
  assert one["here"] == one["total"] == 40
  assert [r["here"] for r in two] == [20, 20] and all(r["total"] == 40 for r in two)
  assert one["message"].startswith("data check of tiny: 1 of 40 images do not decode: ") and "17.png" in one["message"]
  assert two[0]["message"] == two[1]["message"] == one["message"]
