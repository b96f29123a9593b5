"""Classifier re-balancing on cached features: cRT and LWS (paper Sec. 4) and weight balancing (WB), with optax.

cRT and LWS draw class-balanced batches (IndexSampler, strategy 'class': i.i.d. draws, N // batch steps per
epoch), WB instance-balanced ones with a class-balanced loss. The feature matrix (numpy or jax, in its dtype: a
16-bit cache stays 16-bit) and the labels are put on the device once; each epoch is one compiled program, a scan over
its steps, which the host only hands the epoch's sampled indices [steps, batch] and reads the loss back from. A step
gathers its batch on the device (cast to float32), and takes the loss (cross-entropy unless stated), SGD with
momentum, cosine learning rate from the base lr to 0 at the last step, and for WB a projection of the head after
every step or every epoch. Weight decay is added to the gradient before momentum, as torch.optim.SGD does in the
references.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltr_jax import losses, ops
from ltr_jax.data.sampling import IndexSampler
from ltr_jax.errors import ConfigError, DataError, TrainingError
from ltr_jax.models import heads
from ltr_jax.progress import bar as progress_bar
from ltr_jax.stage2 import classifiers
from ltr_jax.stage2.registry import PROJECT_EVERY

LogitsFn = Callable[[object, object, jax.Array], jax.Array]
BatchLoss = Callable[[jax.Array, jax.Array], jax.Array]  # (logits [B, C], labels [B]) -> scalar


def _mean_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass
class Trace:
  """fn(params) after every step of `_fit` (after the step's projection, before the epoch's), computed inside the
  compiled epoch and read back with its loss; `values()` stacks them over the steps of every epoch."""
  fn: Callable[[object], jax.Array]
  per_epoch: list[np.ndarray] = dataclasses.field(default_factory=list)

  def values(self) -> np.ndarray:
    """[epochs * steps_per_epoch, ...] in step order."""
    return np.concatenate(self.per_epoch)


def _fit(params, frozen, logits_fn: LogitsFn, features, labels, num_classes: int, *, epochs: int, batch_size: int,
         lr: float, weight_decay: float, momentum: float, seed: int, sampling: str, progress: bool, name: str,
         loss: BatchLoss = _mean_cross_entropy, project: Callable[[object], object] | None = None,
         project_every: str = "step", trace: Trace | None = None):
  """Minimise loss(logits_fn(params, frozen, z), y) over sampled batches; returns params.

  `frozen` (arrays not trained) and the features are arguments of the compiled epoch, not constants baked into it.
  `project` maps params back onto a constraint set after every update, inside the step (projected gradient
  descent; project_every='step'), or once after the last step of every epoch ('epoch'); `trace`, if given, records
  a function of the params after every step.
  """
  labels = np.asarray(labels, dtype=np.int64)
  if labels.shape != (features.shape[0],):
    raise DataError(f"{name}: {labels.shape[0]} labels for {features.shape[0]} training features")
  sampler = IndexSampler(labels, num_classes, sampling, seed=seed, num_epochs=epochs)
  steps_per_epoch = max(1, len(labels) // batch_size)
  drawn = steps_per_epoch * min(batch_size, len(labels))  # the first draws of an epoch, batch after batch
  schedule = optax.cosine_decay_schedule(lr, decay_steps=epochs * steps_per_epoch)
  tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=momentum))
  # XLA:CPU gathers bfloat16 rows from a float32 copy of the whole matrix, made before the loop: bfloat16 features
  # go to the device as their bits (uint16; a view of a host array), and a step gathers bits.
  bits = features.dtype == jnp.bfloat16

  @jax.jit
  def run_epoch(params, opt_state, frozen, features, labels, batches):
    """The epoch's steps, one per row of batches [steps, batch]: (params, opt_state, last loss, traced values)."""

    def step(carry, batch):
      params, opt_state = carry
      z, y = features[batch], labels[batch]
      z = (jax.lax.bitcast_convert_type(z, jnp.bfloat16) if bits else z).astype(jnp.float32)
      value, grads = jax.value_and_grad(lambda p: loss(logits_fn(p, frozen, z), y))(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      if project is not None and project_every == "step":
        params = project(params)
      return (params, opt_state), (value, None if trace is None else trace.fn(params))

    (params, opt_state), (values, traced) = jax.lax.scan(step, (params, opt_state), batches)
    if project is not None and project_every == "epoch":
      params = project(params)
    return params, opt_state, values[-1], traced

  features = jax.device_put(features.view(np.uint16) if bits else features)
  device_labels = jax.device_put(labels.astype(np.int32))
  opt_state = tx.init(params)
  indices = sampler.epoch_indices(0)
  with progress_bar(epochs * steps_per_epoch, name, disable=not progress) as bar:
    for epoch in range(epochs):
      batches = indices[:drawn].reshape(steps_per_epoch, -1).astype(np.int32)
      params, opt_state, value, traced = run_epoch(params, opt_state, frozen, features, device_labels, batches)
      if epoch + 1 < epochs:
        indices = sampler.epoch_indices(epoch + 1)  # Drawn on the host while the device runs this epoch.
      value = float(value)  # One host sync per epoch.
      bar.update(steps_per_epoch)
      if not np.isfinite(value):
        raise TrainingError(f"{name}: loss is {value} in epoch {epoch}; lower the learning rate")
      if trace is not None:
        trace.per_epoch.append(np.asarray(traced))
      bar.set_postfix(loss=f"{value:.4f}")
  return params


def _linear(params, frozen, z):
  W, b = params
  return z @ W + b


def train_crt(features, labels, num_classes: int, *, epochs: int, batch_size: int, lr: float, weight_decay: float,
              momentum: float = 0.9, seed: int = 0, init: tuple[jax.Array, jax.Array] | None = None,
              sampling: str = "class", cosine_scale: float | None = None,
              progress: bool = True) -> tuple[jax.Array, jax.Array]:
  """cRT: a linear head (W [d, C], b [C]) trained on frozen features with class-balanced sampling.

  init None re-initialises the head as torch.nn.Linear does (the reference): W, b ~ U(-1/sqrt(d), 1/sqrt(d));
  init=(W, b) fine-tunes a given head instead (Table 1's "C only"). Weight decay applies to b as well as W,
  as in the reference (torch SGD's weight_decay covers every parameter of the classifier). `sampling` is a
  strategy of ltr_jax.data.sampling; anything but 'class' is a baseline, not cRT.
  With cosine_scale s, a cosine classifier instead, for L2-normalised features: logits s z.w_j / ||w_j||, no
  bias (b stays 0); the returned kernel is s w_j / ||w_j||, so that features @ kernel are its logits.
  """
  if init is None:
    d = features.shape[1]
    bound = 1.0 / np.sqrt(d)
    key_w, key_b = jax.random.split(jax.random.key(seed))
    init = (jax.random.uniform(key_w, (d, num_classes), jnp.float32, -bound,
                               bound), jax.random.uniform(key_b, (num_classes,), jnp.float32, -bound, bound))
  params = tuple(jnp.asarray(p, jnp.float32) for p in init)
  if cosine_scale is not None:
    (W,) = _fit(params[:1], cosine_scale, lambda p, s, z: z @ heads.cosine_kernel(p[0], s), features, labels,
                num_classes, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, momentum=momentum,
                seed=seed, sampling=sampling, progress=progress, name="cRT")
    return heads.cosine_kernel(W, cosine_scale), jnp.zeros(num_classes, jnp.float32)
  return _fit(params, None, _linear, features, labels, num_classes, epochs=epochs, batch_size=batch_size, lr=lr,
              weight_decay=weight_decay, momentum=momentum, seed=seed, sampling=sampling, progress=progress, name="cRT")


def _scaled(scales, head, z):
  return classifiers.lws_logits(z, *head, scales)


def _scaled_logits(scales, _, logits):
  return scales * logits


def train_lws(features, labels, W: jax.Array, b: jax.Array, num_classes: int, *, epochs: int, batch_size: int,
              lr: float, weight_decay: float = 0.0, momentum: float = 0.9, seed: int = 0,
              cache_logits: bool | None = None, progress: bool = True) -> jax.Array:
  """LWS: scales s [C] (init 1) of the frozen head's logits, s_j * (z w_j + b_j), class-balanced sampling.

  Only s is trained, so the logits z w_j + b_j of every training feature are constants: with cache_logits
  (default: when C <= d, i.e. they take no more memory than the features) they are computed once, in one
  pass over the features, and each step scales a gathered batch of them instead of multiplying it by W.
  weight_decay defaults to 0, unlike the reference, which decays s: decay pulls every s_j towards 0, i.e.
  towards flat logits rather than towards the joint head (s = 1), a side effect of sharing the optimizer's
  settings, not a regulariser of the method. The paper configs set the reference's value.
  """
  head = (jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32))
  if cache_logits is None:
    cache_logits = num_classes <= features.shape[1]
  if cache_logits:
    features, head, logits_fn = ops.linear_logits(features, *head), None, _scaled_logits
  else:
    logits_fn = _scaled
  return _fit(jnp.ones(num_classes, jnp.float32), head, logits_fn, features, labels, num_classes, epochs=epochs,
              batch_size=batch_size, lr=lr, weight_decay=weight_decay, momentum=momentum, seed=seed, sampling="class",
              progress=progress, name="LWS")


def maxnorm_radius(W, thresh: float) -> float:
  """The MaxNorm radius of WB's code: min_j ||w_j|| + thresh * (max_j ||w_j|| - min_j ||w_j||) of head W.

  Alshammari et al.'s MaxNorm_via_PGD sets the radius from the stage-1 head's class-vector norms, so thresh
  in [0, 1] interpolates between its smallest (0) and its largest (1) class norm; 0.1 on CIFAR-100-LT.
  """
  norms = np.linalg.norm(np.asarray(W, np.float64), axis=0)
  return float(norms.min() + thresh * (norms.max() - norms.min()))


def maxnorm_project(W: jax.Array, radius: float) -> jax.Array:
  """Each class vector w_j (a column of W [d, C]) scaled back onto the ball ||w_j|| <= radius."""
  norms = jnp.linalg.norm(W, axis=0)
  return W * jnp.minimum(1.0, radius / jnp.maximum(norms, jnp.finfo(W.dtype).tiny))


def train_wb(features, labels, W: jax.Array, b: jax.Array, num_classes: int, *, epochs: int, batch_size: int, lr: float,
             weight_decay: float, max_norm: float, loss: str = "cb_softmax_bce",
             loss_hyper: losses.LossHyper = losses.LossHyper(), momentum: float = 0.9, seed: int = 0,
             sampling: str = "instance", project_every: str = "step", progress: bool = True,
             trace: Trace | None = None) -> tuple[jax.Array, jax.Array]:
  """Weight balancing's stage 2 (Alshammari et al. 2022) on cached features: the stage-1 head fine-tuned with a
  class-balanced loss, weight decay and MaxNorm.

  loss: a loss of ltr_jax.losses with its hyper-parameters `loss_hyper` ('cb_softmax_bce', what WB's code runs;
  'cb_ce', Cui et al.'s softmax CB loss, both with Cui's beta), as the stage-1 loop builds it through the backbone. Each class vector is projected onto ||w_j|| <= r, r =
  maxnorm_radius(W, max_norm) of the initial head, after every step (project_every='step', the paper) or after
  the last step of every epoch ('epoch', WB's released code); the bias is unconstrained, as in WB's code. Weight
  decay covers W and b. Batches are instance-balanced (WB's code shuffles the long-tailed set). `trace` records a
  function of the head (W, b) after every step.
  """
  if project_every not in PROJECT_EVERY:
    raise ConfigError(f"WB project_every {project_every!r} is not one of {', '.join(PROJECT_EVERY)}")
  counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise DataError(f"WB: class {int(empty[0])} has no training features ({empty.size} empty classes in all); "
                    "its class-balanced weight would be infinite")
  steps_per_epoch = max(1, len(labels) // batch_size)
  loss_fn = losses.get_loss(loss, counts, steps_per_epoch, loss_hyper)
  radius = maxnorm_radius(W, max_norm)
  params = (jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32))
  return _fit(params, None, _linear, features, labels, num_classes, epochs=epochs, batch_size=batch_size, lr=lr,
              weight_decay=weight_decay, momentum=momentum, seed=seed, sampling=sampling, progress=progress, name="WB",
              loss=lambda z, y: loss_fn(z, y, None), project=lambda p: (maxnorm_project(p[0], radius), p[1]),
              project_every=project_every, trace=trace)
