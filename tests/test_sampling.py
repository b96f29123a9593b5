"""The sampler draws what the paper's formulas say, deterministically, resumably, sharded per process."""
import numpy as np
import pytest

from ltr_jax.data.sampling import (IndexSampler, STRATEGIES, alias_table, class_probabilities, process_positions)
from ltr_jax.errors import DataError

COUNTS = np.array([600, 250, 100, 40, 15, 5])
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)
NUM_EPOCHS = 5


def chi_square(observed: np.ndarray, p: np.ndarray) -> float:
  expected = observed.sum() * p
  return float(((observed - expected)**2 / expected).sum())


# 99.99% quantile of chi-square with 5 degrees of freedom: a correct sampler fails 1 in 10,000 seeds.
CHI2_LIMIT = 25.7


def test_formulas_by_hand():
  c = np.array([100, 25, 4])
  np.testing.assert_allclose(class_probabilities(c, "instance"), c / 129)
  np.testing.assert_allclose(class_probabilities(c, "class"), [1 / 3] * 3)
  np.testing.assert_allclose(class_probabilities(c, "sqrt"), np.array([10, 5, 2]) / 17)


def test_progressive_interpolates_from_instance_to_class():
  first = class_probabilities(COUNTS, "progressive", 0, NUM_EPOCHS)
  middle = class_probabilities(COUNTS, "progressive", 2, NUM_EPOCHS)
  last = class_probabilities(COUNTS, "progressive", NUM_EPOCHS - 1, NUM_EPOCHS)
  np.testing.assert_array_equal(first, class_probabilities(COUNTS, "instance"))
  np.testing.assert_array_equal(last, class_probabilities(COUNTS, "class"))
  np.testing.assert_allclose(middle, 0.5 * first + 0.5 * last)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empirical_class_frequencies_match(strategy):
  sampler = IndexSampler(LABELS, len(COUNTS), strategy, seed=1, num_epochs=NUM_EPOCHS)
  for epoch in (0, 2, NUM_EPOCHS - 1):
    # 200k draws: many epochs of N = 1010 draws each, from the same epoch's probabilities.
    draws = np.concatenate([
        IndexSampler(LABELS, len(COUNTS), strategy, seed=s, num_epochs=NUM_EPOCHS).epoch_indices(epoch)
        for s in range(200)
    ])
    observed = np.bincount(LABELS[draws], minlength=len(COUNTS))
    assert observed.sum() == 200 * len(LABELS)
    assert chi_square(observed, sampler.probabilities(epoch)) < CHI2_LIMIT
    # The test has power: the draws of one strategy fail against another's probabilities.
    wrong = "class" if strategy in ("instance", "sqrt") or (strategy == "progressive" and epoch == 0) \
        else "instance"
    assert chi_square(observed, class_probabilities(COUNTS, wrong)) > 100 * CHI2_LIMIT


def test_instances_within_a_class_are_uniform():
  draws = np.concatenate([IndexSampler(LABELS, len(COUNTS), "class", seed=s).epoch_indices(0) for s in range(200)])
  within = draws[LABELS[draws] == 3]  # class 3 owns 40 images
  observed = np.bincount(within - np.flatnonzero(LABELS == 3)[0], minlength=40)
  assert observed.size == 40
  assert chi_square(observed, np.full(40, 1 / 40)) < 80.0  # 99.99% quantile, 39 dof ~ 81


def test_alias_table_reproduces_probabilities():
  p = class_probabilities(COUNTS, "sqrt")
  accept, alias = alias_table(p)
  n = len(p)
  recovered = accept / n
  np.add.at(recovered, alias, (1 - accept) / n)
  np.testing.assert_allclose(recovered, p, atol=1e-12)


def test_same_seed_same_indices_and_resume_is_exact():
  a = IndexSampler(LABELS, len(COUNTS), "sqrt", seed=7, num_epochs=3)
  b = IndexSampler(LABELS, len(COUNTS), "sqrt", seed=7, num_epochs=3)
  c = IndexSampler(LABELS, len(COUNTS), "sqrt", seed=8, num_epochs=3)
  np.testing.assert_array_equal(a.epoch_indices(1), b.epoch_indices(1))
  assert (a.epoch_indices(1) != c.epoch_indices(1)).mean() > 0.5
  assert (a.epoch_indices(0) != a.epoch_indices(1)).mean() > 0.5
  # Draw k is a pure function of (seed, epoch, k): a fresh sampler started at k continues the sequence.
  stream = np.concatenate([a.epoch_indices(e) for e in range(3)])
  resumed = IndexSampler(LABELS, len(COUNTS), "sqrt", seed=7, num_epochs=3)
  start = len(LABELS) + 123
  np.testing.assert_array_equal([resumed[k] for k in range(start, start + 500)], stream[start:start + 500])


def test_process_shards_are_disjoint_and_cover_each_batch():
  global_batch, processes, steps = 16, 4, 10
  shards = [
      process_positions(np.arange(steps * global_batch // processes), global_batch, p, processes)
      for p in range(processes)
  ]
  together = np.concatenate(shards)
  np.testing.assert_array_equal(np.sort(together), np.arange(steps * global_batch))
  # Each process's rows of global batch i all lie inside batch i.
  for shard in shards:
    np.testing.assert_array_equal(
        shard.reshape(steps, -1) // global_batch,
        np.arange(steps)[:, None].repeat(global_batch // processes, 1))


def test_empty_class_names_the_class():
  with pytest.raises(DataError, match="class 2 has no training images"):
    IndexSampler(np.array([0, 0, 1, 3]), 4, "class")


def test_unknown_strategy():
  with pytest.raises(DataError, match="'balanced' is not one of instance, class, sqrt, progressive"):
    class_probabilities(COUNTS, "balanced")


def test_an_instance_balanced_epoch_is_a_permutation():
  """Every image exactly once per epoch (the reference's shuffled DataLoader), a fresh order each epoch."""
  sampler = IndexSampler(LABELS, len(COUNTS), "instance", seed=3, num_epochs=NUM_EPOCHS)
  epochs = [sampler.epoch_indices(e) for e in range(3)]
  for indices in epochs:
    np.testing.assert_array_equal(np.sort(indices), np.arange(len(LABELS)))
  assert not np.array_equal(epochs[0], epochs[1])
  # A resumed sampler (a new object, as after a restart) continues the same permutation mid-epoch.
  resumed = IndexSampler(LABELS, len(COUNTS), "instance", seed=3, num_epochs=NUM_EPOCHS)
  k = len(LABELS) + 517
  assert [resumed[i] for i in range(k, k + 50)] == epochs[1][517:567].tolist()


def test_progressive_with_one_epoch_is_instance_balanced():
  np.testing.assert_array_equal(class_probabilities(COUNTS, "progressive", 0, 1),
                                class_probabilities(COUNTS, "instance"))


def test_deferred_resampling_switches_to_class_balanced_at_its_epoch():
  drs = 3
  for epoch, expected in ((0, "instance"), (drs - 1, "instance"), (drs, "class"), (NUM_EPOCHS - 1, "class")):
    draws = [
        IndexSampler(LABELS, len(COUNTS), "instance", seed=s, num_epochs=NUM_EPOCHS, drs_epoch=drs).epoch_indices(epoch)
        for s in range(200)
    ]
    observed = np.bincount(LABELS[np.concatenate(draws)], minlength=len(COUNTS))
    assert chi_square(observed, class_probabilities(COUNTS, expected)) < CHI2_LIMIT, (epoch, expected)
    other = "class" if expected == "instance" else "instance"
    assert chi_square(observed, class_probabilities(COUNTS, other)) > 100 * CHI2_LIMIT, (epoch, other)
    if expected == "instance":  # still a shuffled pass before the switch
      np.testing.assert_array_equal(np.sort(draws[0]), np.arange(len(LABELS)))
