"""Stage-1 losses (appendix A and later long-tail baselines), selected by config key train.loss.

A loss maps float logits [B, C], integer labels [B] and the global step (traced, int) to a scalar. Every loss
takes the step so that deferred re-weighting can switch inside one jitted train step; the others ignore it.
Constants that depend on the class counts are computed once, in float64 numpy.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltr_jax import domains, mixing, parallel
from ltr_jax.errors import ConfigError, DataError

Loss = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def _field(default: Any, domain: domains.Domain) -> Any:
  return dataclasses.field(default=default, metadata={"domain": domain})


@dataclasses.dataclass(frozen=True)
class LossHyper:
  """Hyper-parameters of the losses, named as their config keys (train.<field>, stage2.<method>.<field>), each with
  its default from the papers and its domain."""
  focal_gamma: float = _field(2.0, domains.NON_NEGATIVE)  # Lin et al.
  cb_beta: float = _field(0.9999, domains.Real(0, 1, hi_open=True))  # Cui et al.; also the DRW weights (Cao et al.)
  ldam_max_m: float = _field(0.5, domains.NON_NEGATIVE)  # the largest LDAM margin, given to the rarest class
  # DRW switches to class-balanced weights at this (0-based) epoch, of 200 on CIFAR.
  drw_epoch: float = _field(160.0, domains.NON_NEGATIVE)
  logit_adjust_tau: float = _field(1.0, domains.Real())  # Menon et al.
  # Label-aware smoothing (MiSLAS): epsilon of the largest class and of the smallest, and how it falls between.
  las_eps_head: float = _field(0.4, domains.Real(0, 1, hi_open=True))
  las_eps_tail: float = _field(0.1, domains.Real(0, 1, hi_open=True))
  las_mapping: str = _field("concave", domains.OneOf(mixing.SMOOTHING_MAPPINGS))

  @classmethod
  def of(cls, section: Any) -> LossHyper:
    """The fields that config section `section` has (the others at their defaults)."""
    return cls(**{f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section})


HYPER_DOMAINS: dict[str, domains.Domain] = {f.name: f.metadata["domain"] for f in dataclasses.fields(LossHyper)}


def class_balanced_weights(class_counts: np.ndarray, beta: float) -> np.ndarray:
  """Cui et al.'s w_j = (1 - beta) / (1 - beta^{n_j}) (inverse effective number), normalised to sum to C."""
  w = (1.0 - beta) / (1.0 - np.power(beta, np.asarray(class_counts, np.float64)))
  return w * (len(w) / w.sum())


def ldam_margins(class_counts: np.ndarray, max_m: float) -> np.ndarray:
  """Cao et al.'s Delta_j proportional to n_j^{-1/4}, scaled so the rarest class gets exactly max_m."""
  m = np.asarray(class_counts, np.float64)**-0.25
  return m / m.max() * max_m


def _per_example_ce(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _focal_terms(logits: jnp.ndarray, labels: jnp.ndarray, gamma: float) -> jnp.ndarray:
  """(1 - p_y)^gamma * CE per example (eq. 4).

  1 - p_y = -expm1(-CE) stays accurate for confident examples; the floor at `tiny` keeps the gradient finite
  for gamma < 1 when p_y rounds to 1 (it changes the value by at most tiny^gamma * CE = 0 there).
  """
  ce = _per_example_ce(logits, labels)
  return jnp.maximum(-jnp.expm1(-ce), jnp.finfo(ce.dtype).tiny)**gamma * ce


def _weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """sum(w l) / sum(w): the reduction of torch's F.cross_entropy(weight=w), as in the LDAM-DRW code."""
  return jnp.sum(weights * values) / jnp.sum(weights)


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, step: jnp.ndarray | None = None) -> jnp.ndarray:
  """Mean softmax cross-entropy; `step` is ignored."""
  del step
  return _per_example_ce(logits, labels).mean()


def _focal(counts: np.ndarray, steps_per_epoch: int, hp: LossHyper, logit_scale: float) -> Loss:
  """Lin et al.: batch mean of (1 - p_y)^gamma * CE."""
  return lambda logits, labels, step=None: _focal_terms(logits, labels, hp.focal_gamma).mean()


Builder = Callable[[np.ndarray, int, "LossHyper", float], Loss]  # (counts, steps per epoch, hyper, head scale)


def softmax_bce(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """mean_j BCE(p_j, 1[j = y]) per row, p = softmax(logits), each log clamped at -100 as torch's BCE.

  The loss 'softmax' of the Class-balanced-loss-pytorch code that weight balancing's stage 2 calls. log(1 - p_j)
  is log1p(-p_j) for every class but the top one (p_j <= 1/2 there), and log sum_{k != top} exp(z_k) - lse(z)
  for the top one, so a confident row gives neither -inf nor a NaN gradient.
  """
  log_p = jax.nn.log_softmax(logits)
  is_top = jnp.arange(logits.shape[-1]) == jnp.argmax(logits, axis=-1, keepdims=True)
  rest = jax.nn.logsumexp(jnp.where(is_top, -jnp.inf, logits), axis=-1, keepdims=True)
  log_not_top = rest - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  log_1m_p = jnp.where(is_top, log_not_top, jnp.log1p(-jnp.exp(jnp.where(is_top, -jnp.inf, log_p))))
  is_label = jnp.arange(logits.shape[-1]) == labels[:, None]
  return -jnp.where(is_label, jnp.maximum(log_p, -100.0), jnp.maximum(log_1m_p, -100.0)).mean(axis=-1)


PerExample = Callable[[jnp.ndarray, jnp.ndarray, "LossHyper"], jnp.ndarray]


def _class_balanced(per_example: PerExample) -> Builder:
  """Cui et al.: batch mean of w_y * l(z, y), l a per-example loss (cross-entropy, focal, softmax-BCE)."""

  def build(counts: np.ndarray, steps_per_epoch: int, hp: LossHyper, logit_scale: float) -> Loss:
    weights = jnp.asarray(class_balanced_weights(counts, hp.cb_beta), jnp.float32)
    return lambda logits, labels, step=None: (parallel.take(weights, labels, labels) * per_example(logits, labels, hp)
                                             ).mean()

  return build


def _ldam_logits(logits: jnp.ndarray, labels: jnp.ndarray, margins: jnp.ndarray, s: float) -> jnp.ndarray:
  """s (cos_j - Delta_y 1[j = y]) (eq. 5) from a cosine head's logits s cos_j."""
  one_hot = jnp.asarray(labels[:, None] == jnp.arange(logits.shape[-1]), logits.dtype)
  return logits - s * one_hot * margins


def _ldam(drw: bool) -> Builder:
  """LDAM on the logits s cos(z, w_j) of a cosine head (config key model.head = 'cosine', s = model.head_scale,
  30 in Cao et al.): the margin Delta_y is subtracted from the true class's cosine before scaling. With `drw`,
  weighted as in Cao et al.'s code: weights 1 before the step of epoch drw_epoch, class-balanced (beta =
  cb_beta) from then on, reduced as sum(w_y l) / sum(w_y)."""

  def build(counts: np.ndarray, steps_per_epoch: int, hp: LossHyper, logit_scale: float) -> Loss:
    margins = jnp.asarray(ldam_margins(counts, hp.ldam_max_m), jnp.float32)
    weights = jnp.asarray(class_balanced_weights(counts, hp.cb_beta), jnp.float32)
    drw_step = math.ceil(hp.drw_epoch * steps_per_epoch)

    def loss(logits: jnp.ndarray, labels: jnp.ndarray, step: jnp.ndarray) -> jnp.ndarray:
      ce = _per_example_ce(_ldam_logits(logits, labels, margins, logit_scale), labels)
      if not drw:
        return ce.mean()
      return _weighted_mean(ce, jnp.where(step >= drw_step, parallel.take(weights, labels, labels), 1.0))

    return loss

  return build


def _shifted_ce(shift: np.ndarray) -> Loss:
  """CE on logits + a constant per-class shift."""
  shift = jnp.asarray(shift, jnp.float32)
  return lambda logits, labels, step=None: cross_entropy(logits + shift, labels)


def _balanced_softmax(counts: np.ndarray, steps_per_epoch: int, hp: LossHyper, logit_scale: float) -> Loss:
  """Ren et al. 2020: CE on logits + log n_j (= logit_adjusted with tau 1: the shifts differ by a constant)."""
  return _shifted_ce(np.log(np.asarray(counts, np.float64)))


def _logit_adjusted(counts: np.ndarray, steps_per_epoch: int, hp: LossHyper, logit_scale: float) -> Loss:
  """Menon et al. 2021: CE on logits + tau * log prior, prior_j = n_j / n."""
  counts = np.asarray(counts, np.float64)
  return _shifted_ce(hp.logit_adjust_tau * np.log(counts / counts.sum()))


def _label_aware_smoothing(counts: np.ndarray, steps_per_epoch: int, hp: LossHyper, logit_scale: float) -> Loss:
  """MiSLAS's label-aware smoothing: CE against one-hot labels smoothed by epsilon_y (ltr_jax.mixing)."""
  return mixing.las_loss(counts, hp.las_eps_head, hp.las_eps_tail, hp.las_mapping)


@dataclasses.dataclass(frozen=True)
class LossKind:
  """A loss of config key train.loss (or a stage-2 method's loss): its builder, the LossHyper fields it reads (a
  stage-2 subtree may set only these), whether it needs every class count > 0, and whether it is defined on the
  logits of a cosine head only (model.head = 'cosine')."""
  build: Builder
  reads: tuple[str, ...] = ()
  needs_counts: bool = True
  cosine_only: bool = False


LOSSES: dict[str, LossKind] = {
    "ce": LossKind(lambda counts, steps_per_epoch, hp, logit_scale: cross_entropy, needs_counts=False),
    "focal": LossKind(_focal, ("focal_gamma",), needs_counts=False),
    "cb_ce": LossKind(_class_balanced(lambda logits, labels, hp: _per_example_ce(logits, labels)), ("cb_beta",)),
    "cb_focal": LossKind(_class_balanced(lambda logits, labels, hp: _focal_terms(logits, labels, hp.focal_gamma)),
                         ("cb_beta", "focal_gamma")),
    # Weight balancing's stage-2 loss (its code: Cui's weights on the softmax-BCE of Class-balanced-loss-pytorch).
    "cb_softmax_bce": LossKind(_class_balanced(lambda logits, labels, hp: softmax_bce(logits, labels)), ("cb_beta",)),
    "ldam": LossKind(_ldam(drw=False), ("ldam_max_m",), cosine_only=True),
    "ldam_drw": LossKind(_ldam(drw=True), ("ldam_max_m", "cb_beta", "drw_epoch"), cosine_only=True),
    "balanced_softmax": LossKind(_balanced_softmax),
    "logit_adjusted": LossKind(_logit_adjusted, ("logit_adjust_tau",)),
    "las": LossKind(_label_aware_smoothing, ("las_eps_head", "las_eps_tail", "las_mapping")),
}


def get_loss(name: str, class_counts: np.ndarray, steps_per_epoch: int, hyper: LossHyper = LossHyper(),
             logit_scale: float = 1.0, key: str = "train") -> Loss:
  """The loss named by config key <key>.loss for the training class counts, with hyper-parameters `hyper`;
  logit_scale: s of the cosine head (config key model.head_scale) that the cosine-only losses scale margins by."""
  if name not in LOSSES:
    raise ConfigError(f"config key {key}.loss: unknown loss {name!r} (expected one of {sorted(LOSSES)})")
  kind = LOSSES[name]
  empty = np.flatnonzero(np.asarray(class_counts) <= 0)
  if kind.needs_counts and empty.size:
    raise DataError(f"class {int(empty[0])} has no training images ({empty.size} empty classes in all); "
                    f"config key {key}.loss = {name!r} needs every class count > 0")
  return kind.build(class_counts, steps_per_epoch, hyper, logit_scale)
