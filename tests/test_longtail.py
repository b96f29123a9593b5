"""Long-tailed subsets on real Fashion-MNIST labels, list-file subsets, many/medium/few groups."""

import numpy as np
import pytest

from ltr_jax.data.longtail import (Subset, balanced_holdout, exponential_profile, group_of_classes, longtail_indices,
                                   subset_from_list_file)
from ltr_jax.data.sources import ListFileSource, class_counts, fashion_mnist
from ltr_jax.errors import DataError

# int(6000 * 100 ** (-i / 9)): 6000 * 100 ** (-1 / 9) = 3596.9, truncated to 3596.
FASHION_MNIST_LT_100 = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]


@pytest.fixture(scope="module")
def train_labels(fashion_mnist_dir):
  return fashion_mnist("train", data_dir=fashion_mnist_dir).labels


def test_exponential_profile():
  np.testing.assert_array_equal(exponential_profile(6000, 10, 100), FASHION_MNIST_LT_100)
  # CIFAR-10-LT, imbalance 100, as published with LDAM.
  np.testing.assert_array_equal(exponential_profile(5000, 10, 100),
                                [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
  cifar100 = exponential_profile(500, 100, 100)
  assert cifar100[0] == 500 and cifar100[-1] == 5 and cifar100.sum() == 10847


def test_longtail_indices_counts_and_seeds(train_labels):
  indices = longtail_indices(train_labels, FASHION_MNIST_LT_100, seed=0)
  np.testing.assert_array_equal(class_counts(train_labels[indices], 10), FASHION_MNIST_LT_100)
  assert np.all(np.diff(indices) > 0)  # Sorted, no repeats.
  np.testing.assert_array_equal(indices, longtail_indices(train_labels, FASHION_MNIST_LT_100, seed=0))
  other = longtail_indices(train_labels, FASHION_MNIST_LT_100, seed=1)
  assert not np.array_equal(indices, other)
  np.testing.assert_array_equal(class_counts(train_labels[other], 10), FASHION_MNIST_LT_100)


def test_longtail_indices_class_order(train_labels):
  order = np.array([3, 1, 4, 0, 5, 9, 2, 6, 8, 7])
  indices = longtail_indices(train_labels, FASHION_MNIST_LT_100, class_order=order, seed=0)
  counts = class_counts(train_labels[indices], 10)
  np.testing.assert_array_equal(counts[order], FASHION_MNIST_LT_100)
  with pytest.raises(DataError, match="class_order must be a permutation"):
    longtail_indices(train_labels, FASHION_MNIST_LT_100, class_order=np.zeros(10, int))


def test_longtail_indices_too_few_images(train_labels):
  with pytest.raises(DataError, match="class 0 has 6000 available images, 7000 were asked"):
    longtail_indices(train_labels, exponential_profile(7000, 10, 100))


def test_subset_and_balanced_holdout(fashion_mnist_dir):
  source = fashion_mnist("train", data_dir=fashion_mnist_dir)
  profile = exponential_profile(5000, 10, 100)  # Leaves 1000 .. 5950 images of each class out.
  lt = longtail_indices(source.labels, profile, seed=0)
  subset = Subset(source, lt)
  assert len(subset) == profile.sum() and subset.num_classes == 10
  np.testing.assert_array_equal(subset.labels, source.labels[lt])
  np.testing.assert_array_equal(subset[5], source[lt[5]])

  val = balanced_holdout(source.labels, 20, exclude=lt, seed=0)
  np.testing.assert_array_equal(class_counts(source.labels[val], 10), np.full(10, 20))
  assert not np.intersect1d(val, lt).size
  np.testing.assert_array_equal(val, balanced_holdout(source.labels, 20, exclude=lt, seed=0))
  assert not np.array_equal(val, balanced_holdout(source.labels, 20, exclude=lt, seed=1))
  with pytest.raises(DataError, match="class 0 has 1000 non-excluded images, 1001 were asked"):
    balanced_holdout(source.labels, 1001, exclude=lt)


def test_subset_from_list_file(tmp_path, list_file_dataset):
  d = list_file_dataset
  source = ListFileSource(d["list_file"], d["root"])
  subset_list = tmp_path / "lt.txt"
  subset_list.write_text("dogs/d e.png 2\ncats/a.png 0\n")
  subset = subset_from_list_file(source, str(subset_list))
  np.testing.assert_array_equal(subset.indices, [3, 0])
  np.testing.assert_array_equal(subset.labels, [2, 0])
  np.testing.assert_array_equal(subset[1], d["pixels"][0])
  assert subset.num_classes == 3

  subset_list.write_text("cats/a.png 0\ncats/zzz.png 0\n")
  with pytest.raises(DataError, match=r"lt\.txt:2: 'cats/zzz\.png' is not in the source"):
    subset_from_list_file(source, str(subset_list))
  subset_list.write_text("cats/a.png 1\n")
  with pytest.raises(DataError, match=r"lt\.txt:1: label 1, the source has 0 for 'cats/a\.png'"):
    subset_from_list_file(source, str(subset_list))


def test_group_of_classes_boundaries():
  groups = group_of_classes(np.array([1000, 101, 100, 50, 20, 19, 0]))
  assert groups.tolist() == ["many", "many", "medium", "medium", "medium", "few", "few"]
  assert group_of_classes(np.array([10, 5, 4]), many_threshold=5, few_threshold=5).tolist() == ["many", "medium", "few"]


def _ldam_counts(images_per_class: int, cls_num: int, imb_factor: float) -> list[int]:
  """kaidic/LDAM-DRW imbalance_cifar.py get_img_num_per_cls (exp profile) at 2536330, lines 18-23: img_max =
  len(self.data) / cls_num; num = img_max * (imb_factor ** (cls_idx / (cls_num - 1.0))); int(num)."""
  img_max = images_per_class * cls_num / cls_num
  return [int(img_max * (imb_factor**(cls_idx / (cls_num - 1.0)))) for cls_idx in range(cls_num)]


@pytest.mark.parametrize("config_name, cls_num", [("cifar10_lt_r32", 10), ("cifar100_lt_r32", 100)])
@pytest.mark.parametrize("ratio", [100.0, 50.0, 10.0])
def test_cifar_lt_trains_on_the_published_profile(config_name, cls_num, ratio):
  """The CIFAR-LT configs' training counts are LDAM's (5000 / 500 images per class in CIFAR's training split) at IR
  100, 50 and 10, but for the classes the profile uses (nearly) whole, which give the validation split the images
  it lacks and train on n_max - val_per_class; validation is balanced."""
  import importlib
  from ltr_jax.data import datasets
  data = importlib.import_module(f"configs.{config_name}").get_config().data
  data.imbalance_ratio = ratio
  per_class = 50000 // cls_num
  labels = np.repeat(np.arange(cls_num), per_class)  # CIFAR's training split: 5000 / 500 images of each class
  train, val = datasets.held_out(labels, cls_num, data, with_validation=True)
  counts, val_counts = np.bincount(labels[train], minlength=cls_num), np.bincount(labels[val], minlength=cls_num)
  published = np.array(_ldam_counts(per_class, cls_num, 1 / ratio))
  cut = published > per_class - data.val_per_class  # too few images left over for validation
  np.testing.assert_array_equal(counts[~cut], published[~cut])
  np.testing.assert_array_equal(counts[cut], per_class - data.val_per_class)
  assert np.flatnonzero(cut).tolist() == list(range({10: 1, 100: {100.0: 3, 50.0: 3, 10.0: 5}[ratio]}[cls_num]))
  np.testing.assert_array_equal(val_counts, data.val_per_class)
  assert not set(train) & set(val)
