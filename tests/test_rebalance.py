"""cRT, LWS and WB re-balance a head on a synthetic long-tailed Gaussian mixture: few-shot accuracy goes up; the
compiled epoch loop takes the steps a plain re-computation takes, and a 16-bit feature cache trains as well."""

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax import inference, losses, metrics, ops
from ltr_jax.data.longtail import group_of_classes
from ltr_jax.data.sampling import IndexSampler
from ltr_jax.stage2 import classifiers, rebalance
from ltr_jax.stage2 import features as features_lib

C, D = 20, 16
TRAIN = dict(epochs=20, batch_size=64, lr=0.1, weight_decay=5e-4, progress=False)


@pytest.fixture(scope="module")
def mixture():
  """Overlapping Gaussian classes with 400..4 training samples (imbalance 100), 50 test samples each."""
  rng = np.random.default_rng(0)
  means = rng.standard_normal((C, D)) * 0.9
  counts = (400 * 100.0**(-np.arange(C) / (C - 1))).astype(int)

  def sample(per_class):
    labels = np.repeat(np.arange(C), per_class)
    return (means[labels] + rng.standard_normal((labels.size, D))).astype(np.float32), labels

  train, train_labels = sample(counts)
  test, test_labels = sample(50)
  joint = rebalance.train_crt(train, train_labels, C, sampling="instance", seed=1, **TRAIN)
  return dict(train=train, train_labels=train_labels, test=test, test_labels=test_labels, joint=joint,
              groups=group_of_classes(counts))


def _groups(mixture, logits):
  per_class = metrics.per_class_accuracy(np.asarray(logits).argmax(-1), mixture["test_labels"], C)
  return metrics.group_accuracy(per_class, mixture["groups"])


def test_crt_raises_few_shot_accuracy(mixture):
  W, b = mixture["joint"]
  joint = _groups(mixture, mixture["test"] @ W + b)
  W_crt, b_crt = rebalance.train_crt(mixture["train"], mixture["train_labels"], C, seed=2, **TRAIN)
  assert W_crt.shape == (D, C) and b_crt.shape == (C,)
  crt = _groups(mixture, mixture["test"] @ W_crt + b_crt)
  assert crt["few"] > joint["few"] + 10.0, (crt, joint)
  assert crt["all"] > joint["all"], (crt, joint)
  # "C only": the same training started from the joint head instead of a fresh one.
  W_c, b_c = rebalance.train_crt(mixture["train"], mixture["train_labels"], C, seed=2, init=(W, b), **TRAIN)
  assert _groups(mixture, mixture["test"] @ W_c + b_c)["few"] > joint["few"] + 10.0


def test_lws_raises_few_shot_accuracy_of_its_head(mixture):
  W, b = mixture["joint"]
  joint = _groups(mixture, mixture["test"] @ W + b)
  scales = rebalance.train_lws(jnp.asarray(mixture["train"]), mixture["train_labels"], W, b, C, epochs=10,
                               batch_size=64, lr=0.1, seed=3, progress=False)
  assert scales.shape == (C,)
  lws = _groups(mixture, classifiers.lws_logits(mixture["test"], W, b, scales))
  assert lws["few"] > joint["few"] + 10.0, (lws, joint)
  # The learnt scales grow towards the tail: the few-shot classes get the larger ones.
  few = mixture["groups"] == "few"
  assert float(scales[few].mean()) > float(scales[mixture["groups"] == "many"].mean())


def test_lws_on_cached_logits_equals_lws_through_the_head(mixture):
  """Training s on the logits computed once (cache_logits, the default where C <= d) takes the same steps as
  multiplying every batch by the frozen head."""
  W, b = mixture["joint"]
  kwargs = dict(epochs=3, batch_size=64, lr=0.1, weight_decay=5e-4, seed=4, progress=False)
  cached = rebalance.train_lws(mixture["train"], mixture["train_labels"], W, b, C, cache_logits=True, **kwargs)
  direct = rebalance.train_lws(mixture["train"], mixture["train_labels"], W, b, C, cache_logits=False, **kwargs)
  assert not np.allclose(np.asarray(direct), 1.0)
  np.testing.assert_allclose(np.asarray(cached), np.asarray(direct), rtol=1e-5, atol=1e-6)


def test_the_compiled_epochs_take_the_steps_of_a_plain_recomputation(mixture):
  """cRT ("C only": from the joint head) equals SGD written out step by step in float64 numpy: the sampler's draws in
  batches (an epoch's last draws short of a batch unused), softmax cross-entropy, weight decay added to the gradient,
  then momentum, the cosine learning rate of every step."""
  W0, b0 = (np.asarray(p, np.float64) for p in mixture["joint"])
  z, y = mixture["train"], mixture["train_labels"]
  epochs, batch, lr, decay, momentum = 3, 64, 0.1, 5e-4, 0.9
  W, b = rebalance.train_crt(z, y, C, epochs=epochs, batch_size=batch, lr=lr, weight_decay=decay, momentum=momentum,
                             seed=7, init=mixture["joint"], progress=False)
  assert len(y) % batch
  sampler = IndexSampler(y, C, "class", seed=7, num_epochs=epochs)
  steps = len(y) // batch
  params, velocity = [W0, b0], [np.zeros_like(W0), np.zeros_like(b0)]
  for t in range(epochs * steps):
    epoch, k = divmod(t, steps)
    draws = sampler.epoch_indices(epoch)[k * batch:(k + 1) * batch]
    zb = z[draws].astype(np.float64)
    logits = zb @ params[0] + params[1]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dlogits = (p - np.eye(C)[y[draws]]) / batch
    grads = (zb.T @ dlogits + decay * params[0], dlogits.sum(axis=0) + decay * params[1])
    rate = lr * 0.5 * (1 + np.cos(np.pi * t / (epochs * steps)))
    for i in range(2):
      velocity[i] = momentum * velocity[i] + grads[i]
      params[i] = params[i] - rate * velocity[i]
  assert np.abs(params[0] - W0).max() > 0.1  # the steps moved the head
  np.testing.assert_allclose(W, params[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(b, params[1], rtol=1e-4, atol=1e-5)


def _extract(features, dtype, run_dir, monkeypatch):
  """features_lib.extract of a split 'train' whose inference gives `features` (float32), cached in run_dir under
  stage2.feature_dtype = dtype: (the features it returns, whether it ran the inference)."""
  from configs import base
  config = base.get_config()
  config.stage2.feature_dtype = dtype
  ran = []

  def run_inference(predict, variables, source, *args):
    ran.append(source)
    out = ops.host_array(features.shape)
    out[...] = features
    return np.zeros(len(source), np.int32), out

  monkeypatch.setattr(inference, "make_predict", lambda *args: None)
  monkeypatch.setattr(inference, "run_inference", run_inference)
  variables = {"params": {"backbone": {"kernel": np.ones(3, np.float32)}}, "batch_stats": {}}
  splits = types.SimpleNamespace(train=features)
  return features_lib.extract(None, variables, splits, config, str(run_dir), None, ("train",))["train"], bool(ran)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_16_bit_feature_cache_takes_half_the_bytes_and_trains_crt_as_well(mixture, tmp_path, monkeypatch, dtype):
  """stage2.feature_dtype: the cache holds the features in 16 bits, a cache of another dtype is extracted again
  (never read as this one), and cRT, NCM and the chunked predictions on 16-bit features (cast to float32 per batch
  or chunk) land within rounding of float32's."""
  path = tmp_path / "features" / "train.npy"
  full, ran = _extract(mixture["train"], "float32", tmp_path, monkeypatch)
  assert ran and full.dtype == np.float32
  assert _extract(mixture["train"], "float32", tmp_path, monkeypatch)[1] is False  # a rerun reads the cache
  full_bytes = os.path.getsize(path)
  half, ran = _extract(mixture["train"], dtype, tmp_path, monkeypatch)
  assert ran and half.dtype == features_lib.FEATURE_DTYPES[dtype]
  assert np.load(path, mmap_mode="r").nbytes * 2 == full.nbytes
  assert os.path.getsize(path) < 0.51 * full_bytes
  cached, ran = _extract(mixture["train"], dtype, tmp_path, monkeypatch)
  assert not ran and cached.dtype == half.dtype and cached.tobytes() == half.tobytes()
  np.testing.assert_allclose(cached.astype(np.float32), mixture["train"], rtol=2**-8, atol=1e-6)

  test = features_lib.as_dtype(mixture["test"], dtype)
  accuracy, heads = {}, {}
  for name, train in (("float32", full), (dtype, cached)):
    heads[name] = rebalance.train_crt(train, mixture["train_labels"], C, seed=2, **TRAIN)
    predictions = np.asarray(ops.linear_predictions(test if name == dtype else mixture["test"], *heads[name]))
    accuracy[name] = 100.0 * np.mean(predictions == mixture["test_labels"])
  assert abs(accuracy[dtype] - accuracy["float32"]) <= 1.0, accuracy
  # The compiled loop casts each 16-bit batch exactly: the same head as on the 16-bit values held in float32.
  upcast = rebalance.train_crt(cached.astype(np.float32), mixture["train_labels"], C, seed=2, **TRAIN)
  for a, b in zip(heads[dtype], upcast):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  centroids = [classifiers.ncm_centroids(z, mixture["train_labels"], C)[0] for z in (full, cached)]
  np.testing.assert_allclose(centroids[1], centroids[0], atol=2e-3)
  assert _extract(mixture["train"], "float32", tmp_path, monkeypatch)[1]  # float32 again: not the 16-bit cache


def test_the_feature_cache_fingerprint_names_its_dtype():
  from configs import base
  config = base.get_config()
  assert config.stage2.feature_dtype == "float32"
  keys = set()
  for dtype in features_lib.FEATURE_DTYPES:
    config.stage2.feature_dtype = dtype
    keys.add(features_lib._fingerprint("digest", config, "train", 10))
  assert len(keys) == len(features_lib.FEATURE_DTYPES)


WB = dict(epochs=10, batch_size=64, lr=0.01, weight_decay=0.1, max_norm=0.1, progress=False)  # WB's CIFAR values


def test_wb_keeps_every_class_vector_in_the_maxnorm_ball_and_raises_few_shot(mixture):
  W, b = mixture["joint"]
  norms0 = np.linalg.norm(np.asarray(W, np.float64), axis=0)
  radius = norms0.min() + 0.1 * (norms0.max() - norms0.min())  # WB's code: thresh 0.1 between min and max.
  assert rebalance.maxnorm_radius(W, 0.1) == pytest.approx(radius)
  assert norms0.max() > 2 * radius  # The joint head starts far outside the ball.
  trace = rebalance.Trace(lambda p: jnp.linalg.norm(p[0], axis=0))
  W_wb, b_wb = rebalance.train_wb(mixture["train"], mixture["train_labels"], W, b, C, seed=4, trace=trace, **WB)
  trajectory = trace.values()
  assert trajectory.shape == (WB["epochs"] * (len(mixture["train_labels"]) // WB["batch_size"]), C)
  assert (trajectory <= radius * (1 + 1e-6)).all()  # After every step, every class.
  np.testing.assert_allclose(trajectory[-1], np.linalg.norm(np.asarray(W_wb), axis=0), rtol=1e-6)
  assert trajectory[0].max() == pytest.approx(radius, rel=1e-6)  # The constraint is active, not slack.
  joint = _groups(mixture, mixture["test"] @ W + b)
  wb = _groups(mixture, mixture["test"] @ W_wb + b_wb)
  assert wb["few"] > joint["few"] + 10.0, (wb, joint)
  assert wb["all"] > joint["all"], (wb, joint)


def test_wb_first_step_follows_the_class_balanced_formula():
  # Hand-made counts; Cui et al.'s weights with beta = 0.99: (1 - beta) / (1 - beta^n), normalised to sum to C.
  counts = np.array([60, 25, 10, 5])
  raw = 0.01 / (1 - 0.99**counts)  # 0.01 / (0.452844, 0.222179, 0.095618, 0.049010), sum 0.375714
  weights = raw / raw.sum() * 4
  np.testing.assert_allclose(weights, [0.23510, 0.47918, 1.11343, 2.17229], atol=1e-5)
  rng = np.random.default_rng(5)
  labels = np.repeat(np.arange(4), counts)
  features = (rng.standard_normal((labels.size, 3)) + labels[:, None]).astype(np.float32)
  W0, b0 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
  # One step on one batch of all N draws (no decay, a radius no column reaches): W1 = W0 - lr * dL/dW with
  # L = mean_b w_{y_b} CE(z_b W0 + b0, y_b), the draws being the sampler's first epoch.
  W1, b1 = rebalance.train_wb(features, labels, W0, b0, 4, epochs=1, batch_size=labels.size, lr=0.5, weight_decay=0.0,
                              max_norm=100.0, loss="cb_ce", loss_hyper=losses.LossHyper(cb_beta=0.99), seed=3,
                              progress=False)
  draws = IndexSampler(labels, 4, "instance", seed=3, num_epochs=1).epoch_indices(0)
  z, y = features[draws].astype(np.float64), labels[draws]
  logits = z @ W0 + b0
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  dlogits = weights[y][:, None] * (p - np.eye(4)[y]) / len(y)
  np.testing.assert_allclose(W1, W0 - 0.5 * z.T @ dlogits, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(b1, b0 - 0.5 * dlogits.sum(axis=0), rtol=1e-4, atol=1e-6)


def test_wb_softmax_bce_is_the_binary_cross_entropy_of_the_softmax():
  logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [40.0, 0.0, -3.0], [1.0, 300.0, -2.0]], np.float32)
  labels = np.array([0, 2, 0, 0])
  value = losses.softmax_bce(jnp.asarray(logits), jnp.asarray(labels))
  z = logits.astype(np.float64)
  p = np.exp(z - z.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  one_hot = np.eye(3)[labels]
  with np.errstate(divide="ignore"):  # log 0 in the last row, clamped at -100 as torch's BCE does.
    terms = np.maximum(np.log(np.where(one_hot == 1, p, 1 - p)), -100.0)
  np.testing.assert_allclose(value, -terms.mean(axis=1), rtol=1e-5, atol=1e-7)
  grads = jax.grad(lambda z: losses.softmax_bce(z, jnp.asarray(labels)).sum())(jnp.asarray(logits))
  assert np.isfinite(np.asarray(grads)).all()  # Confident rows (p_top = 1 in float32) included.


def test_wb_projects_once_per_epoch_as_its_released_code_does(mixture):
  """project_every='epoch' (ShadeAlsha/LTR-weight-balancing utils/trainval.py, after the epoch's batches): the
  joint head's class vectors stay outside the ball through the whole first epoch (with 'step' they never leave
  it), and the result is inside."""
  W, b = mixture["joint"]
  radius = rebalance.maxnorm_radius(W, 0.1)
  trace = rebalance.Trace(lambda p: jnp.linalg.norm(p[0], axis=0))
  W_wb, _ = rebalance.train_wb(mixture["train"], mixture["train_labels"], W, b, C, seed=4, project_every="epoch",
                               trace=trace, **WB)
  steps = len(mixture["train_labels"]) // WB["batch_size"]
  trajectory = trace.values().reshape(WB["epochs"], steps, C)
  assert (trajectory[0].max(axis=1) > radius * 1.5).all()  # every step before the first projection
  assert (np.linalg.norm(np.asarray(W_wb), axis=0) <= radius * (1 + 1e-6)).all()


def test_wb_on_features_builds_the_loss_of_every_key_wb_through_the_backbone_reads():
  """WB on cached features and WB through the backbone read the same loss keys of their entries: with cb_focal,
  focal_gamma (added by a config file) reaches both. Through the backbone, the loss is the one the stage-1 loop
  builds from backbone.loop_recipe; on features, one full-batch SGD step of on_features.wb moves the head by -lr times
  the gradient of that very loss (checked on every class vector MaxNorm leaves alone, and on the bias), which a
  loss without the focal term (gamma 0) does not."""
  from configs import quickstart
  from ltr_jax import validate
  from ltr_jax.stage2 import backbone, on_features
  import synthetic
  config = quickstart.get_config()
  for name in ("wb", "wb_cached"):
    config.stage2[name].update(dict(loss="cb_focal", cb_beta=0.99, weight_decay=0.0, max_norm=1.0))
    config.stage2[name].focal_gamma = 0.5
  feats = synthetic.features()
  config.stage2.wb_cached.update(dict(epochs=1, batch_size=len(feats.labels("train")), lr=0.5))
  config.stage2.methods = ("joint", "wb", "wb_cached")
  validate.validate(config)
  joint = synthetic.joint_head(feats)
  counts = feats.splits.class_counts
  recipe = backbone.loop_recipe(config, config.stage2.wb)
  assert (recipe.loss, recipe.loss_hyper) == ("cb_focal", losses.LossHyper(cb_beta=0.99, focal_gamma=0.5))
  loop_loss = losses.get_loss(recipe.loss, counts, 1, recipe.loss_hyper, config.model.head_scale)
  z, y = jnp.asarray(feats.train), jnp.asarray(feats.labels("train"), jnp.int32)

  def gradient(loss):
    return jax.grad(lambda W, b: loss(z @ W + b, y, 0), argnums=(0, 1))(jnp.asarray(joint.kernel),
                                                                        jnp.asarray(joint.bias))

  head = on_features.wb(feats, joint, config.stage2.wb_cached, config)
  moved = (joint.kernel - head.kernel) / 0.5, (joint.bias - head.bias) / 0.5
  free = np.linalg.norm(joint.kernel, axis=0) < np.linalg.norm(joint.kernel, axis=0).max() * 0.95
  expected = gradient(loop_loss)
  np.testing.assert_allclose(moved[0][:, free], np.asarray(expected[0])[:, free], rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(moved[1], np.asarray(expected[1]), rtol=1e-3, atol=1e-6)
  without_focal = gradient(losses.get_loss("cb_focal", counts, 1, losses.LossHyper(cb_beta=0.99, focal_gamma=0.0)))
  assert np.abs(np.asarray(without_focal[1]) - moved[1]).max() > 10 * np.abs(moved[1] - expected[1]).max()
