"""Parameter-path patterns: frozen parts stay bit-identical (parameters and BatchNorm statistics) and compute
the same function in training as at test; a learning-rate group moves by its multiplier; patterns that match
nothing are refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from ltr_jax import losses, masks, models, parallel, train
from ltr_jax.data import sources
from ltr_jax.errors import ConfigError

LAST_BLOCK = ("backbone/(?!{last_stage}/).*",)  # everything but the last stage (resnet_mini: stage3) and head


@pytest.fixture(scope="module")
def setup():
  """(config, mesh, fresh variables of the quickstart model, a real Fashion-MNIST batch of 64)."""
  config = quickstart.get_config()
  mesh = parallel.data_mesh()
  variables = train.initial_variables(models.from_config(config.model, 10), config, (28, 28, 1), mesh)
  data = sources.fashion_mnist("train")
  batch = {"image": data.images[:64], "label": data.labels[:64].astype(np.int32)}
  return config, mesh, jax.device_get(variables), batch


def _steps(config, mesh, variables, batch, frozen=(), lr_mults=(), steps=3):
  """The variables after `steps` SGD steps on `batch` with the given patterns."""
  model = models.from_config(config.model, 10, frozen)
  recipe = config.train.copy_and_resolve_references()
  recipe.update(dict(frozen=frozen, lr_mults=lr_mults, warmup_epochs=0.0))  # the first step at the peak lr
  groups = masks.lr_groups(variables["params"], masks.resolve(frozen, "stage3"), lr_mults)
  tx = train.make_optimizer(recipe, 100, groups)
  state = train.new_state(variables, tx, mesh)
  step = train.make_train_step(model, tx, losses.cross_entropy, config.data, mesh)
  for _ in range(steps):
    state, _ = step(state, parallel.global_batch(batch, mesh))
  return jax.device_get(state.variables)


def _leaves(variables, tree, part):
  return jax.tree.leaves(variables[tree]["backbone"].get(part, {}))


def test_frozen_parameters_and_statistics_stay_bit_identical(setup):
  config, mesh, before, batch = setup
  after = _steps(config, mesh, before, batch, frozen=LAST_BLOCK)
  for part in ("stem_conv", "stem_bn", "stage1", "stage2"):
    for tree in ("params", "batch_stats"):
      for a, b in zip(_leaves(after, tree, part), _leaves(before, tree, part), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=(tree, part))
  for tree in ("params", "batch_stats"):  # the last block trains, BatchNorm statistics included
    assert not any(
        np.array_equal(a, b) for a, b in zip(_leaves(after, tree, "stage3"), _leaves(before, tree, "stage3")))
  assert not np.array_equal(after["params"]["head"]["kernel"], before["params"]["head"]["kernel"])


def test_a_learning_rate_group_moves_by_its_multiplier(setup):
  config, mesh, before, batch = setup
  base = _steps(config, mesh, before, batch, steps=1)
  tenth = _steps(config, mesh, before, batch, lr_mults=(("backbone/.*", 0.1),), steps=1)
  moved = lambda v, part: jax.tree.map(lambda a, b: a - b, v["params"][part], before["params"][part])  # noqa: E731
  for a, b in zip(jax.tree.leaves(moved(tenth, "backbone")), jax.tree.leaves(moved(base, "backbone"))):
    np.testing.assert_allclose(a, 0.1 * b, rtol=1e-3, atol=1e-7)  # float32 rounding of p + update
  assert max(float(np.abs(b).max()) for b in jax.tree.leaves(moved(base, "backbone"))) > 1e-4
  for a, b in zip(jax.tree.leaves(moved(tenth, "head")), jax.tree.leaves(moved(base, "head"))):
    np.testing.assert_array_equal(a, b)  # the head's group keeps the base learning rate


def test_frozen_batchnorm_runs_in_inference_mode_in_training(setup):
  """The frozen part of a last-block model computes the same function in training as at test: its output
  (the input of the last block) is the same in both modes, and shifting a frozen running mean changes it by the
  same amount in both. The last block's BatchNorm layers use batch statistics in training."""
  config, _, variables, batch = setup
  model = models.from_config(config.model, 10, LAST_BLOCK)
  images = models.normalize(batch["image"], config.data.mean, config.data.std, jnp.float32)

  def stage2_out(v, train_mode):
    kwargs = dict(mutable=["batch_stats", "intermediates"]) if train_mode else dict(mutable=["intermediates"])
    _, state = model.apply(v, images, train=train_mode, capture_intermediates=True, **kwargs)
    inter = state["intermediates"]["backbone"]
    return np.asarray(inter["stage2"]["__call__"][0]), np.asarray(inter["stage3"]["__call__"][0])

  shifted = jax.tree.map(lambda a: a, variables)
  mean = shifted["batch_stats"]["backbone"]["stage1"]["block0"]["bn1"]["mean"]
  shifted["batch_stats"]["backbone"]["stage1"]["block0"]["bn1"]["mean"] = mean + 0.5
  (train_a, last_train), (eval_a, last_eval) = stage2_out(variables, True), stage2_out(variables, False)
  (train_b, _), (eval_b, _) = stage2_out(shifted, True), stage2_out(shifted, False)
  np.testing.assert_allclose(train_a, eval_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(train_b - train_a, eval_b - eval_a, rtol=1e-4, atol=1e-5)
  assert np.abs(train_b - train_a).max() > 1e-2  # the running mean is used in training
  assert not np.allclose(last_train, last_eval, atol=1e-3)  # the trainable last block: batch statistics


def test_patterns_that_match_nothing_are_refused(setup):
  _, _, variables, _ = setup
  trees = (variables["params"], variables["batch_stats"])
  masks.check_patterns(masks.resolve(LAST_BLOCK, "stage3"), trees, "train.frozen")
  with pytest.raises(ConfigError, match=r"config key train.frozen: pattern 'backbone/stage4/\.\*' matches no "
                     r"parameter"):
    masks.check_patterns(("backbone/stage4/.*",), trees, "train.frozen")
  with pytest.raises(ConfigError, match=r"config key train.lr_mults: '\(' is not a regular expression"):
    masks.check_patterns(("(",), trees, "train.lr_mults")
  groups = masks.lr_groups(variables["params"], ("backbone/stem.*",), (("backbone/.*", 0.01), ("head/.*", 2.0)))
  assert groups["backbone"]["stem_conv"]["kernel"] == masks.FROZEN
  assert groups["backbone"]["stage1"]["block0"]["conv1"]["kernel"] == 0.01
  assert groups["head"]["bias"] == 2.0


def test_a_constraint_projects_after_every_step_or_every_epoch(setup):
  """train.Constraint in the jitted step: every_epoch projects only after the last step of an epoch."""
  config, mesh, before, batch = setup
  model = models.from_config(config.model, 10)
  recipe = config.train.copy_and_resolve_references()
  recipe.update(dict(warmup_epochs=0.0, base_lr=2.0))
  tx = train.make_optimizer(recipe, 100, masks.lr_groups(before["params"], (), ()))
  radius = 0.01
  project = lambda p: {
      **p,
      "head": {
          **p["head"],
          "kernel": p["head"]["kernel"] * jnp.minimum(  # noqa: E731
              1.0, radius / jnp.linalg.norm(p["head"]["kernel"], axis=0))
      }
  }
  for every_epoch in (False, True):
    step = train.make_train_step(model, tx, losses.cross_entropy, config.data, mesh,
                                 constraint=train.Constraint(project, every_epoch), steps_per_epoch=2)
    state = train.new_state(before, tx, mesh)
    norms = []
    for _ in range(4):
      state, _ = step(state, parallel.global_batch(batch, mesh))
      norms.append(float(jnp.linalg.norm(state.params["head"]["kernel"], axis=0).max()))
    projected = [n <= radius * (1 + 1e-5) for n in norms]
    assert projected == ([True] * 4 if not every_epoch else [False, True, False, True]), (every_epoch, norms)
