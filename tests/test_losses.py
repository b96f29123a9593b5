"""Each stage-1 loss against a float64 numpy computation of its formula, on the logits of a real model, and
inside a jitted step on a batch sharded over a device mesh as training runs it."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from ltr_jax import losses, models, parallel, validate
from ltr_jax.data import sources
from ltr_jax.errors import ConfigError, DataError

C, B, STEPS_PER_EPOCH, S = 7, 32, 10, 30.0
COUNTS = np.array([500, 300, 120, 60, 20, 7, 2])


def _model_logits(head: str) -> np.ndarray:
  """Logits of the quickstart model with a 7-way `head` on 32 real Fashion-MNIST images (init seed 0)."""
  config = quickstart.get_config()
  spec = models.HeadSpec("cosine", S, bias=False) if head == "cosine" else models.HeadSpec()
  model = models.create_model("resnet_mini", C, head_spec=spec)
  images = models.normalize(sources.fashion_mnist("train").images[:B], config.data.mean, config.data.std, jnp.float32)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(variables, images))


LOGITS = _model_logits("linear")
COSINES = _model_logits("cosine") / S  # cos(z, w_j), in [-1, 1]
LABELS = sources.fashion_mnist("train").labels[:B].astype(np.int32) % C


def log_softmax(z: np.ndarray) -> np.ndarray:
  z = z.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
  return -log_softmax(z)[np.arange(len(y)), y]


def focal(z: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
  p = np.exp(log_softmax(z))[np.arange(len(y)), y]
  return (1 - p)**gamma * -np.log(p)


def cb_weights(beta: float) -> np.ndarray:
  w = (1 - beta) / (1 - beta**COUNTS.astype(np.float64))
  return w / w.sum() * C


def ldam_logits(cosines: np.ndarray, y: np.ndarray) -> np.ndarray:
  """s (cos_j - Delta_y 1[j = y]) (Cao et al., eq. 5)."""
  delta = COUNTS.astype(np.float64)**-0.25
  delta *= 0.5 / delta.max()
  z = cosines.astype(np.float64).copy()
  z[np.arange(len(y)), y] -= delta[y]
  return S * z


def softmax_bce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Weight balancing's loss: the mean over classes of BCE(softmax(z)_j, 1[j = y])."""
  p = np.exp(log_softmax(z))
  one_hot = np.eye(z.shape[1])[y]
  return -(one_hot * np.log(p) + (1 - one_hot) * np.log(1 - p)).mean(-1)


def las(z: np.ndarray, y: np.ndarray, head: float = 0.4, tail: float = 0.1) -> np.ndarray:
  """Label-aware smoothing (concave): CE against (1 - eps_y) one_hot(y) + eps_y / C."""
  x = (COUNTS - COUNTS.min()) / (COUNTS.max() - COUNTS.min())
  eps = (tail + (head - tail) * np.sin(np.pi / 2 * x))[y]
  return (1 - eps) * ce(z, y) - eps * log_softmax(z).mean(-1)


def run(name: str, logits: np.ndarray = LOGITS, step: int = 0, **hyper) -> float:
  loss = losses.get_loss(name, COUNTS, STEPS_PER_EPOCH, losses.LossHyper(**hyper), S)
  return float(jax.jit(loss)(jnp.asarray(logits), jnp.asarray(LABELS), jnp.asarray(step, jnp.int32)))


FORMULAS = [
    ("ce", LOGITS, ce(LOGITS, LABELS).mean()),
    ("focal", LOGITS, focal(LOGITS, LABELS, 2.0).mean()),
    ("cb_ce", LOGITS, (cb_weights(0.9999)[LABELS] * ce(LOGITS, LABELS)).mean()),
    ("cb_focal", LOGITS, (cb_weights(0.9999)[LABELS] * focal(LOGITS, LABELS, 2.0)).mean()),
    ("cb_softmax_bce", LOGITS, (cb_weights(0.9999)[LABELS] * softmax_bce(LOGITS, LABELS)).mean()),
    ("ldam", S * COSINES, ce(ldam_logits(COSINES, LABELS), LABELS).mean()),
    ("ldam_drw", S * COSINES, ce(ldam_logits(COSINES, LABELS), LABELS).mean()),
    ("balanced_softmax", LOGITS, ce(LOGITS + np.log(COUNTS), LABELS).mean()),
    ("logit_adjusted", LOGITS, ce(LOGITS + np.log(COUNTS / COUNTS.sum()), LABELS).mean()),
    ("las", LOGITS, las(LOGITS, LABELS).mean()),
]


def test_every_loss_has_a_formula_test():
  assert sorted(name for name, _, _ in FORMULAS) == sorted(losses.LOSSES)


@pytest.mark.parametrize("name, logits, expected", FORMULAS)
def test_losses_match_their_formulas(name, logits, expected):
  np.testing.assert_allclose(run(name, logits), expected, rtol=1e-5)


@pytest.mark.parametrize("name, logits, expected", FORMULAS)
def test_losses_run_on_a_batch_sharded_over_the_mesh(name, logits, expected):
  """As in the train step: logits and labels sharded on the mesh's data axis (class constants are gathered
  by sharded labels, which jax refuses without an output sharding)."""
  mesh = parallel.data_mesh()
  loss = jax.jit(losses.get_loss(name, COUNTS, STEPS_PER_EPOCH, logit_scale=S),
                 in_shardings=(parallel.batch_sharded(mesh), parallel.batch_sharded(mesh), parallel.replicated(mesh)))
  value = loss(jnp.asarray(logits), jnp.asarray(LABELS), jnp.asarray(0, jnp.int32))
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_losses_hyper_parameters_reach_the_formulas():
  np.testing.assert_allclose(run("focal", focal_gamma=0.5), focal(LOGITS, LABELS, 0.5).mean(), rtol=1e-5)
  np.testing.assert_allclose(run("cb_ce", cb_beta=0.99), (cb_weights(0.99)[LABELS] * ce(LOGITS, LABELS)).mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(run("logit_adjusted", logit_adjust_tau=0.5),
                             ce(LOGITS + 0.5 * np.log(COUNTS / COUNTS.sum()), LABELS).mean(), rtol=1e-5)


def test_losses_focal_with_gamma_0_is_ce_and_has_finite_gradients_when_certain():
  assert run("focal", focal_gamma=0.0) == pytest.approx(run("ce"), rel=1e-6)
  certain = jnp.asarray(np.eye(C, dtype=np.float32)[LABELS] * 200)  # p_y rounds to 1
  grads = jax.jit(lambda z: [
      jax.grad(losses.get_loss("focal", COUNTS, STEPS_PER_EPOCH, losses.LossHyper(focal_gamma=gamma)))
      (z, jnp.asarray(LABELS), 0) for gamma in (0.0, 0.5)
  ])(certain)
  assert all(np.isfinite(g).all() for g in grads)


def test_losses_ldam_drw_switches_to_class_balanced_weights_at_the_drw_epoch():
  per_example = ce(ldam_logits(COSINES, LABELS), LABELS)
  cosine_logits = jnp.asarray(S * COSINES)
  w = cb_weights(0.9999)[LABELS]
  reweighted = (w * per_example).sum() / w.sum()  # torch F.cross_entropy(weight=w)
  for drw_epoch, switch in ((3, 3 * STEPS_PER_EPOCH), (None, 160 * STEPS_PER_EPOCH)):  # None: the default, 160
    hyper = {} if drw_epoch is None else {"drw_epoch": drw_epoch}
    loss = jax.jit(losses.get_loss("ldam_drw", COUNTS, STEPS_PER_EPOCH, losses.LossHyper(**hyper), S))
    for step, expected in ((0, per_example.mean()), (switch - 1, per_example.mean()), (switch, reweighted)):
      np.testing.assert_allclose(loss(cosine_logits, jnp.asarray(LABELS), jnp.asarray(step, jnp.int32)), expected,
                                 rtol=1e-5)


def test_losses_class_balanced_weights_by_hand():
  beta = 0.9
  raw = np.array([(1 - beta) / (1 - beta**1), (1 - beta) / (1 - beta**2), (1 - beta) / (1 - beta**4)])
  np.testing.assert_allclose(raw, [1.0, 1 / 1.9, 0.1 / 0.3439])
  w = losses.class_balanced_weights(np.array([1, 2, 4]), beta)
  np.testing.assert_allclose(w, raw / raw.sum() * 3)
  assert w.sum() == pytest.approx(3)
  np.testing.assert_allclose(losses.class_balanced_weights(np.array([5, 50]), 0.0), [1.0, 1.0])


def test_losses_ldam_margins_by_hand():
  m = losses.ldam_margins(np.array([16, 81, 1]), 0.5)
  np.testing.assert_allclose(m, [0.5 / 2, 0.5 / 3, 0.5])  # n^-1/4 = 1/2, 1/3, 1
  m = losses.ldam_margins(COUNTS, 0.5)
  assert m.argmax() == COUNTS.argmin() and m.max() == 0.5


def test_losses_unknown_name_and_bad_hyper_parameters_are_config_errors():
  with pytest.raises(ConfigError, match="train.loss.*'nope'"):
    losses.get_loss("nope", COUNTS, STEPS_PER_EPOCH)
  config = quickstart.get_config()
  for key, value in (("focal_gamma", -1.0), ("cb_beta", 1.0), ("drw_epoch", -1.0), ("las_mapping", "cubic")):
    bad = quickstart.get_config()
    bad.train[key] = value
    with pytest.raises(ConfigError, match=f"^config key train.{key} = "):
      validate.validate(bad)
  validate.validate(config)


def test_every_loss_reads_declared_hyper_parameters():
  """What a loss reads is a LossHyper field with a domain, so a stage-2 entry may set exactly those."""
  for name, kind in losses.LOSSES.items():
    assert set(kind.reads) <= set(losses.HYPER_DOMAINS), name
  assert set(losses.HYPER_DOMAINS) == {f.name for f in dataclasses.fields(losses.LossHyper)}


def test_losses_count_aware_loss_rejects_empty_classes():
  counts = np.array([10, 0, 3])
  assert losses.get_loss("ce", counts, STEPS_PER_EPOCH) is losses.cross_entropy
  with pytest.raises(DataError, match="class 1 has no training images.*ldam"):
    losses.get_loss("ldam", counts, STEPS_PER_EPOCH)
