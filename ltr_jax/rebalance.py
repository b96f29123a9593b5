"""Classifier re-balancing on cached features (paper Sec. 4): cRT and LWS, trained with optax.

Both draw class-balanced batches (IndexSampler, strategy 'class': i.i.d. draws, N // batch steps per epoch),
gather them on the host from the feature matrix (numpy or jax; only the batch is moved per step), and run a
jitted step: cross-entropy, SGD with momentum, cosine learning rate from the base lr to 0 at the last step.
Weight decay is added to the gradient before momentum, as torch.optim.SGD does in the reference.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ltr_jax import classifiers
from ltr_jax.data.sampling import IndexSampler
from ltr_jax.errors import DataError, TrainingError

LogitsFn = Callable[[object, object, jax.Array], jax.Array]


def _fit(params, frozen, logits_fn: LogitsFn, features, labels, num_classes: int, *, epochs: int,
         batch_size: int, lr: float, weight_decay: float, momentum: float, seed: int, sampling: str,
         progress: bool, name: str):
  """Minimise the mean cross-entropy of logits_fn(params, frozen, z) over sampled batches; returns params.

  `frozen` (arrays not trained) is an argument of the jitted step, not a constant baked into it.
  """
  labels = np.asarray(labels, dtype=np.int64)
  if labels.shape != (features.shape[0],):
    raise DataError(f"{name}: {labels.shape[0]} labels for {features.shape[0]} training features")
  sampler = IndexSampler(labels, num_classes, sampling, seed=seed, num_epochs=epochs)
  steps_per_epoch = max(1, len(labels) // batch_size)
  schedule = optax.cosine_decay_schedule(lr, decay_steps=epochs * steps_per_epoch)
  tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=momentum))

  @jax.jit
  def step(params, opt_state, frozen, z, y):
    def loss_fn(p):
      return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p, frozen, z), y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  with tqdm(total=epochs * steps_per_epoch, desc=name, disable=not progress) as bar:
    for epoch in range(epochs):
      indices = sampler.epoch_indices(epoch)
      for k in range(steps_per_epoch):
        batch = indices[k * batch_size:(k + 1) * batch_size]
        params, opt_state, loss = step(params, opt_state, frozen, features[batch], labels[batch].astype(np.int32))
        bar.update()
      loss = float(loss)  # One host sync per epoch.
      if not np.isfinite(loss):
        raise TrainingError(f"{name}: loss is {loss} in epoch {epoch}; lower the learning rate")
      bar.set_postfix(loss=f"{loss:.4f}")
  return params


def _linear(params, frozen, z):
  W, b = params
  return z @ W + b


def train_crt(features, labels, num_classes: int, *, epochs: int, batch_size: int, lr: float,
              weight_decay: float, momentum: float = 0.9, seed: int = 0,
              init: tuple[jax.Array, jax.Array] | None = None, sampling: str = "class",
              progress: bool = True) -> tuple[jax.Array, jax.Array]:
  """cRT: a linear head (W [d, C], b [C]) trained on frozen features with class-balanced sampling.

  init None re-initialises the head as torch.nn.Linear does (the reference): W, b ~ U(-1/sqrt(d), 1/sqrt(d));
  init=(W, b) fine-tunes a given head instead (Table 1's "C only"). Weight decay applies to b as well as W,
  as in the reference (torch SGD's weight_decay covers every parameter of the classifier). `sampling` is a
  strategy of ltr_jax.data.sampling; anything but 'class' is a baseline, not cRT.
  """
  if init is None:
    d = features.shape[1]
    bound = 1.0 / np.sqrt(d)
    key_w, key_b = jax.random.split(jax.random.key(seed))
    init = (jax.random.uniform(key_w, (d, num_classes), jnp.float32, -bound, bound),
            jax.random.uniform(key_b, (num_classes,), jnp.float32, -bound, bound))
  params = tuple(jnp.asarray(p, jnp.float32) for p in init)
  return _fit(params, None, _linear, features, labels, num_classes, epochs=epochs, batch_size=batch_size,
              lr=lr, weight_decay=weight_decay, momentum=momentum, seed=seed, sampling=sampling,
              progress=progress, name="cRT")


def _scaled(scales, head, z):
  return classifiers.lws_logits(z, *head, scales)


def train_lws(features, labels, W: jax.Array, b: jax.Array, num_classes: int, *, epochs: int, batch_size: int,
              lr: float, weight_decay: float = 0.0, momentum: float = 0.9, seed: int = 0,
              progress: bool = True) -> jax.Array:
  """LWS: scales s [C] (init 1) of the frozen head's logits, s_j * (z w_j + b_j), class-balanced sampling.

  weight_decay defaults to 0, unlike the reference, which decays s: decay pulls every s_j towards 0, i.e.
  towards flat logits rather than towards the joint head (s = 1), a side effect of sharing the optimizer's
  settings, not a regulariser of the method. Set it to the reference's value to reproduce its numbers.
  """
  head = (jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32))
  return _fit(jnp.ones(num_classes, jnp.float32), head, _scaled, features, labels, num_classes, epochs=epochs,
              batch_size=batch_size, lr=lr, weight_decay=weight_decay, momentum=momentum, seed=seed,
              sampling="class", progress=progress, name="LWS")
