"""Every experiment config runs end to end on a tiny dataset in its own format, and the iNaturalist JSON
adapter reads the official format and rejects malformed files with one message.

Each config in configs/ (except base.py) is built, pointed at a synthetic dataset written here in the format
the config reads (OLTR list files + JPEGs for ImageNet-LT / Places-LT, iNaturalist JSON + JPEGs, a TFDS
array_record dataset written by ltr_jax.data.convert for CIFAR, Debian's Fashion-MNIST for the quickstart),
shrunk (32x32 images, 4 classes, batch 8, 2 stage-1 steps, 1 epoch of every stage-2 training, on the features
or through the backbone), and run through stage 1 and stage 2. Everything else (model family,
transforms, sampling, losses, mixup, stage-2 methods and recipes, trainable part, init_from) is the config's
own. The models too, except those in SMALLER_MODEL: one real step of those takes too long on 2 CPU cores (XLA
compile time, measured: see SMALLER_MODEL), so they run as the nearest architecture that does not. Configs
that this shrinking makes identical run once, as one test (see _distinct_runs).
"""
import ast
import glob
import importlib
import json
import os
import pickle
from typing import Callable, NamedTuple

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import base
from ltr_jax import checkpoints, models, parallel, train
from ltr_jax.data import convert, datasets, kinds, pipeline, preflight, sampling, transforms
from ltr_jax.data.sources import INatJsonSource, ListFileSource
from ltr_jax.errors import DataError
from ltr_jax.stage2 import registry, run as stage2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.basename(path)[:-3]
    for path in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if os.path.basename(path) not in ("__init__.py", "base.py"))

# model of a config -> model run here instead. Stage 1 + stage 2 of this test with the real model took 60 s
# (inat_r50, ResNet-50) and 90-100 s (inat_r101) on 2 busy CPU cores, nearly all of it XLA compilation;
# ResNet-152 and ResNeXt take longer still, and ResNet-32's 15 blocks about 10 s per config. ResNet-10 has the same
# stem, four stages and head as the ImageNet models; resnet_mini a 3x3 stem and three stages like the CIFAR ones.
# The real architectures are covered by tests/test_models.py (parameter counts, PyTorch twins). CLIP's ViT-B/16
# (12 blocks of width 768) runs as vit_mini (4 blocks of width 64, 7-pixel patches: 28 x 28 images); its layouts are
# covered by tests/test_vit.py and its import and stage 2 by tests/test_clip.py.
SMALLER_MODEL = {
    **{
        name: "resnet10" for name in ("resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x4d", "resnext152_32x4d")
    }, "resnet32": "resnet_mini", "resnet34_cifar": "resnet_mini", "clip_vit_b16": "vit_mini"
}

NUM_CLASSES = 4
TRAIN_COUNTS = (8, 5, 3, 2)  # 18 images: 2 steps of batch 8 (an epoch drops its last partial batch)


def _write_jpegs(root, names, seed, size=None):
  """Random RGB JPEGs at root/name, size x size, or of varied sizes around 24 x 26."""
  rng = np.random.default_rng(seed)
  for i, name in enumerate(names):
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    pixels = rng.integers(0, 256, (size or 20 + i % 7, size or 24 + i % 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, name), quality=90)


def _split_files(split, counts):
  """(relative image paths, labels) of a split with counts[c] images of class c."""
  labels = [c for c, n in enumerate(counts) for _ in range(n)]
  return [f"{split}/n{label:04d}/{split}_{i}.JPEG" for i, label in enumerate(labels)], labels


def _list_dataset(data, tmp):
  """OLTR list files (`relative/path label`; the config's names, else train.txt, val.txt, test.txt) over tiny
  JPEGs; a class-names file where the config names its classes (ImageNet-LT's and Places-LT's CLIP configs)."""
  names = [data[f"{split}_list"] or f"{split}.txt" for split in ("train", "val", "test")]
  class_names = {}
  if data.class_names:
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "class_names.txt"), "w") as f:
      f.writelines(f"class {c}\n" for c in range(NUM_CLASSES))
    class_names = dict(class_names="class_names.txt")
  for split, name, counts in zip(("train", "val", "test"), names, (TRAIN_COUNTS, (2,) * 4, (2,) * 4)):
    paths, labels = _split_files(split, counts)
    _write_jpegs(os.path.join(tmp, "images"), paths, seed=len(split))
    with open(os.path.join(tmp, name), "w") as f:
      f.writelines(f"{path} {label}\n" for path, label in zip(paths, labels))
  return dict(list_dir=str(tmp), image_root=os.path.join(tmp, "images"), train_list=names[0], val_list=names[1],
              test_list=names[2], **class_names)


def _folder_dataset(data, tmp):
  """Class folders (train/<class>/*.JPEG, val/, test/: the layout of _split_files) of tiny JPEGs."""
  for split, counts in zip(("train", "val", "test"), (TRAIN_COUNTS, (2,) * 4, (2,) * 4)):
    _write_jpegs(os.path.join(tmp, "folders"), _split_files(split, counts)[0], seed=len(split))
  return dict(image_root=os.path.join(tmp, "folders"))


def _inat_json(path, paths, labels, num_classes=NUM_CLASSES):
  """The official iNaturalist 2018 layout: images, annotations (ids unrelated to positions), categories."""
  content = {
      "info": {"year": 2018},
      "licenses": [],
      "images":
          [{"id": 1000 + 7 * i, "file_name": p, "width": 24, "height": 20, "license": 0} for i, p in enumerate(paths)],
      "annotations":
          [{"id": i, "image_id": 1000 + 7 * i, "category_id": label} for i, label in reversed(list(enumerate(labels)))],
      "categories": [{"id": c, "name": f"species {c}", "supercategory": "Plantae"} for c in range(num_classes)],
  }
  with open(path, "w") as f:
    json.dump(content, f)


def _inat_dataset(tmp):
  """train2018.json / val2018.json over JPEGs under train_val2018/, as distributed."""
  for name, counts in (("train2018.json", TRAIN_COUNTS), ("val2018.json", (2,) * NUM_CLASSES)):
    paths, labels = _split_files("train_val2018/Plantae", counts)
    paths = [p.replace(".JPEG", f"_{name[:-5]}.jpg") for p in paths]
    _write_jpegs(os.path.join(tmp, "inat"), paths, seed=len(name))
    _inat_json(os.path.join(tmp, name), paths, labels)
  return dict(list_dir=str(tmp), image_root=os.path.join(tmp, "inat"), train_json="train2018.json",
              test_json="val2018.json")


def _tfds_dataset(tmp, name):
  """A TFDS array_record dataset `name` of 32 x 32 images (train: 12 per class, test: 2) written by convert."""
  splits = {}
  for split, counts in (("train", (12,) * NUM_CLASSES), ("test", (2,) * NUM_CLASSES)):
    paths, labels = _split_files(split, counts)
    _write_jpegs(os.path.join(tmp, "images"), paths, seed=len(split), size=32)
    with open(os.path.join(tmp, f"{split}.txt"), "w") as f:
      f.writelines(f"{path} {label}\n" for path, label in zip(paths, labels))
    splits[split] = ListFileSource(os.path.join(tmp, f"{split}.txt"), os.path.join(tmp, "images"))
  convert.convert(splits, name, os.path.join(tmp, "tfds"))
  return dict(tfds_name=name, data_dir=os.path.join(tmp, "tfds"))


class Tiny(NamedTuple):
  """A tiny dataset in one kind's format: `write(config.data, folder)` writes it and returns the data.* values that
  point at it; `values`: what every config of that kind gets whatever it says; `stage2_batch_size`: its feature
  extraction batch (None: the config's)."""
  write: Callable[[ml_collections.ConfigDict, str], dict]
  values: dict
  stage2_batch_size: int | None = 8  # 8 to 18 images per split


# data.kind -> its tiny dataset; every kind of ltr_jax.data.kinds.KINDS has one (test_every_kind_has_a_tiny_dataset).
TINY = {
    # the quickstart's real Fashion-MNIST, 18 training images: 4, 3, 2, 2, 2, 1, 1, 1, 1, 1; its test split has 10,000
    "fashion_mnist": Tiny(lambda data, tmp: {}, dict(n_max=4, imbalance_ratio=4.0, val_per_class=2), None),
    "list": Tiny(_list_dataset, dict(num_classes=NUM_CLASSES)),
    "inat_json": Tiny(lambda data, tmp: _inat_dataset(tmp), dict(num_classes=NUM_CLASSES)),
    "folder": Tiny(_folder_dataset, {}),
    # profile 8, 5, 3, 2 (IR 4) of the 12 images per class; validation from the rest
    "tfds": Tiny(lambda data, tmp: _tfds_dataset(tmp, f"tiny_{data.tfds_name or 'tfds'}"),
                 dict(n_max=8, imbalance_ratio=4.0, val_per_class=2)),
}


def _tiny_values(config):
  """What _tiny_data sets in config whatever the config says, apart from the synthetic files' paths."""
  tiny = TINY[config.data.kind]
  config.data.update(tiny.values)
  config.stage2.batch_size = tiny.stage2_batch_size or config.stage2.batch_size


def _tiny_data(config, tmp):
  """Points config.data at a synthetic dataset in the config's format; keeps the rest of config.data."""
  config.data.update(TINY[config.data.kind].write(config.data, tmp))
  _tiny_values(config)


def _shrink(config):
  # Tiny images decode in this process: starting grain's worker processes (data.num_workers = -1) for every
  # iterator would take most of this test's time; tests/test_pipeline.py covers them.
  config.data.update(dict(image_size=min(config.data.image_size, 32), resize=36, num_workers=0))
  config.model.name = SMALLER_MODEL.get(config.model.name, config.model.name)
  if config.model.name == "vit_mini":
    config.data.update(dict(image_size=28, resize=32))
  config.train.update(dict(epochs=1, batch_size=8, warmup_epochs=0.0, log_every_steps=1))
  for name in config.stage2.methods:  # one epoch of every stage-2 training, on features or through the backbone
    # The values of the config's own imbalance ratio (MiSLAS's tables), not of the tiny data's.
    config.stage2[name] = registry.hyper_of(config, name)
    if "per_imbalance_ratio" in config.stage2[name]:
      config.stage2[name].per_imbalance_ratio = ()
    if "epochs" in config.stage2[name]:
      config.stage2[name].update(dict(epochs=1, batch_size=8))


def _init_checkpoint(config, directory):
  """A backbone checkpoint as `import_torch --no_head` writes one (another class count: the head is new)."""
  model = models.from_config(config.model, 7)
  image_shape = (config.data.image_size, config.data.image_size, 3)
  init = config.copy_and_resolve_references()
  init.update(dict(seed=123, train=dict(init.train.to_dict(), init_from="")))
  variables = train.initial_variables(model, init, image_shape, parallel.data_mesh())
  manager = checkpoints.Manager(directory)
  manager.save(0, variables, checkpoints.model_meta(config, 7))
  manager.wait()
  return variables


def _shrunk(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  _shrink(config)
  return config


def _distinct_runs():
  """The configs grouped by what this test runs of them: configs that differ only in a model of SMALLER_MODEL
  (inat_r101 and inat_r152 from inat_r50) or in what the tiny data replaces (CIFAR-10 and CIFAR-100) would run
  the very same computation, so each group runs once."""
  groups = {}
  for name in CONFIGS:
    config = _shrunk(name)
    _tiny_values(config)
    config.data.update(dict(name="", tfds_name=""))  # a TFDS dataset is written as tiny_<tfds_name>
    groups.setdefault(config.to_json_best_effort(sort_keys=True), []).append(name)
  return list(groups.values())


@pytest.mark.parametrize("names", _distinct_runs(), ids="+".join)
def test_config_runs_both_stages(names, tmp_path):
  config = _shrunk(names[0])
  methods = (*config.stage2.methods, *(f"{name}_five_crop" for name in config.stage2.five_crop))
  _tiny_data(config, str(tmp_path / "data"))
  init = None
  if config.train.init_from:
    config.train.init_from = str(tmp_path / "init")
    init = _init_checkpoint(config, config.train.init_from)
  workdir = str(tmp_path / "workdir")

  state = train.train_and_evaluate(config, workdir)
  results = stage2.run(config, workdir)

  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert set(on_disk["methods"]) == set(methods) == set(results["methods"])
  assert int(state.step) == sum(on_disk["class_counts"]) // 8 >= 1  # one epoch
  present = set(on_disk["groups"])
  for method, entry in on_disk["methods"].items():
    for group in ("all", "many", "medium", "few"):
      if group == "all" or group in present:
        assert 0.0 <= entry[group] <= 100.0, (method, group, entry[group])
  if init is not None:  # every layer trains (OLTR's Places-LT), or only the last stage (MiSLAS's convention)
    assert config.train.frozen in ((), ("backbone/(?!{last_stage}/).*",))
    last = f"stage{max(int(k[5:]) for k in state.params['backbone'] if k.startswith('stage'))}"
    for tree in ("params", "batch_stats"):
      trained, initial = getattr(state, tree)["backbone"], init[tree]["backbone"]
      assert trained.keys() == initial.keys()
      for part in trained:
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(trained[part]), jax.tree.leaves(initial[part])))
        assert same == (bool(config.train.frozen) and part != last), (tree, part)


def test_every_kind_has_a_tiny_dataset():
  assert set(TINY) == set(kinds.KINDS)


@pytest.mark.parametrize("kind", list(kinds.KINDS))
def test_every_kind_reads_its_tiny_dataset(kind, tmp_path):
  """Under base.py's defaults, a kind's tiny dataset passes its path check, builds its splits and passes the data
  check with every image decoded, and its pipeline runs in a worker process; the keys its record names are keys of
  configs/base.py."""
  record, config = kinds.KINDS[kind], base.get_config()
  assert set(record.keys) <= set(config.data.keys()) and set(record.url_keys) <= set(record.keys)
  assert record.val_key is None or record.val_key in record.keys
  config.data.update(dict(kind=kind, name=f"tiny {kind}", image_size=32, preflight_decode=True))
  _tiny_data(config, str(tmp_path))
  kinds.check_paths(config.data)
  splits = datasets.build_splits(config.data)
  preflight.check(splits)
  assert len(splits.train) and len(splits.test)
  # grain's worker processes receive the sources pickled (data.num_workers, one per core by default): every
  # split's source pickles, and a batch made in a worker equals the one made in this process.
  for source in (splits.train, splits.val, splits.test):
    if source is not None:
      copy = pickle.loads(pickle.dumps(source))
      np.testing.assert_array_equal(copy[len(source) - 1], source[len(source) - 1])
      np.testing.assert_array_equal(copy.labels, source.labels)
  sampler = sampling.IndexSampler(splits.train.labels, splits.num_classes, "class", seed=0, num_epochs=1)
  transform = transforms.train_transform(config.data.train_transform, 32, config.data.color_jitter)
  batches = [
      next(
          pipeline.train_batches(splits.train, sampler, transform, global_batch=4, start_step=0, num_steps=1, seed=0,
                                 num_workers=workers)) for workers in (0, 1)
  ]
  for key in ("image", "label"):
    np.testing.assert_array_equal(batches[0][key], batches[1][key])


def test_inat_validation_skips_the_smallest_classes(tmp_path):
  """data.val_min_class_size=3: the class of 2 images keeps both for training and has no validation image."""
  config = importlib.import_module("configs.inat_r50").get_config()
  config.data.update(dict(_inat_dataset(str(tmp_path)), num_classes=NUM_CLASSES))
  splits = datasets.build_splits(config.data)
  np.testing.assert_array_equal(splits.class_counts, np.array(TRAIN_COUNTS) - [1, 1, 1, 0])
  np.testing.assert_array_equal(np.bincount(splits.val.labels, minlength=NUM_CLASSES), [1, 1, 1, 0])
  assert len(splits.test) == 2 * NUM_CLASSES
  config.data.val_min_class_size = 0  # every class then gives one: the class of 2 keeps 1
  np.testing.assert_array_equal(datasets.build_splits(config.data).class_counts, np.array(TRAIN_COUNTS) - 1)


def test_inat_json_source_reads_the_official_format(tmp_path):
  root = str(tmp_path / "images")
  paths, labels = ["a/x.jpg", "b/y z.jpg", "a/w.jpg"], [2, 0, 2]
  _write_jpegs(root, paths, seed=0)
  _inat_json(str(tmp_path / "train2018.json"), paths, labels, num_classes=5)
  source = INatJsonSource(str(tmp_path / "train2018.json"), root)
  assert source.paths == paths and len(source) == 3 and source.num_classes == 5
  np.testing.assert_array_equal(source.labels, labels)
  reference = np.asarray(Image.open(os.path.join(root, paths[1])).convert("RGB"))
  np.testing.assert_array_equal(source[1], reference)
  assert INatJsonSource(str(tmp_path / "train2018.json"), root, num_classes=3).num_classes == 3
  os.remove(os.path.join(root, paths[2]))
  with pytest.raises(DataError, match=r"a/w\.jpg \(listed at .*train2018\.json, image id 1014\): cannot read image"):
    source[2]


def _malformed(tmp_path, content):
  path = tmp_path / "bad.json"
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  return str(path)


@pytest.mark.parametrize("content, message", [
    ("{", r"bad\.json: not a JSON file"),
    ({"images": []}, r"bad\.json: no top-level list 'annotations'"),
    ({"images": [{"id": 1}], "annotations": []}, r"bad\.json: images\[0\] has no 'file_name'"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}]
     }, r"bad\.json: annotations\[0\] has no 'category_id'"),
    ({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [{"image_id": 1, "category_id": 0}]
    }, r"bad\.json: 1 image\(s\) without annotation, e\.g\. image id 2"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 9, "category_id": 0}]
     }, r"bad\.json: annotations\[0\] names image id 9, which is not in 'images'"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": "0"}]
     }, r"bad\.json: annotations\[0\] has category_id '0', not an integer"),
    ({
        "images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": 0},
                                                                     {"image_id": 1, "category_id": 1}]
    }, r"bad\.json: image id 1 is annotated with categories 0 and 1"),
    ({
        "images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": 3}],
        "categories": [{"id": 0}, {"id": 1}]
    }, r"bad\.json: image id 1 has category_id 3 outside \[0, 2\)"),
])
def test_malformed_inat_json(tmp_path, content, message):
  with pytest.raises(DataError, match=message):
    INatJsonSource(_malformed(tmp_path, content), str(tmp_path))


def test_missing_inat_json(tmp_path):
  with pytest.raises(DataError, match=r"train2018\.json: cannot read JSON file"):
    INatJsonSource(str(tmp_path / "train2018.json"), str(tmp_path))


def _depth(name: str) -> int:
  """How many get_config() calls lie between config `name` and base.py (base.py: 0)."""
  if name == "base":
    return 0
  tree = ast.parse(open(os.path.join(ROOT, "configs", f"{name}.py")).read())
  built_on = {
      node.func.value.id for node in ast.walk(tree) if isinstance(node, ast.Call) and
      isinstance(node.func, ast.Attribute) and node.func.attr == "get_config" and isinstance(node.func.value, ast.Name)
  }
  assert built_on, f"configs/{name}.py builds on no config"
  return 1 + max(_depth(other) for other in built_on)


def test_every_config_is_at_most_two_files_from_base():
  """A config builds on base.py or on one that does: what it sets is read in at most two files besides base.py."""
  depths = {name: _depth(name) for name in CONFIGS}
  assert max(depths.values()) <= 2, depths
  assert depths["cifar10_lt_r34_wb"] == depths["cifar100_lt_r32_ldam_drw"] == 2
