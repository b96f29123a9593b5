"""Stage-1 losses (appendix A and later long-tail baselines), selected by config key train.loss.

A loss maps float logits [B, C], integer labels [B] and the global step (traced, int) to a scalar. Every loss
takes the step so that deferred re-weighting can switch inside one jitted train step; the others ignore it.
Constants that depend on the class counts are computed once, in float64 numpy.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltr_jax import mixing, parallel
from ltr_jax.errors import ConfigError, DataError

Loss = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class LossHyper:
  """Hyper-parameters of the losses, named as their config keys train.<field>; defaults from the papers."""
  focal_gamma: float = 2.0  # Lin et al.
  cb_beta: float = 0.9999  # Cui et al.; also the DRW weights (Cao et al.)
  ldam_max_m: float = 0.5  # the largest LDAM margin, given to the rarest class
  drw_epoch: float = 160.0  # DRW switches to class-balanced weights at this (0-based) epoch, of 200 on CIFAR
  logit_adjust_tau: float = 1.0  # Menon et al.
  las_eps_head: float = 0.4  # label-aware smoothing (MiSLAS): epsilon of the largest class ...
  las_eps_tail: float = 0.1  # ... and of the smallest
  las_mapping: str = "concave"  # how epsilon falls with the class count: concave | linear | convex

  @classmethod
  def of(cls, section, key: str = "train") -> "LossHyper":
    """The fields of config section `section` (config key `key`) that it has; ConfigError naming the key of an
    invalid one."""
    hyper = cls(**{f.name: section[f.name] for f in dataclasses.fields(cls) if f.name in section})
    checks = (("focal_gamma", hyper.focal_gamma >= 0, ">= 0"), ("cb_beta", 0 <= hyper.cb_beta < 1, "in [0, 1)"),
              ("ldam_max_m", hyper.ldam_max_m >= 0, ">= 0"), ("drw_epoch", hyper.drw_epoch >= 0, ">= 0"),
              ("logit_adjust_tau", math.isfinite(hyper.logit_adjust_tau), "finite"),
              ("las_eps_head", 0 <= hyper.las_eps_head < 1, "in [0, 1)"),
              ("las_eps_tail", 0 <= hyper.las_eps_tail < 1, "in [0, 1)"),
              ("las_mapping", hyper.las_mapping in mixing.SMOOTHING_MAPPINGS,
               f"one of {', '.join(mixing.SMOOTHING_MAPPINGS)}"))
    for field, ok, requirement in checks:
      if not ok:
        raise ConfigError(f"config key {key}.{field} must be {requirement}, got {getattr(hyper, field)!r}")
    return hyper


def class_balanced_weights(class_counts: np.ndarray, beta: float) -> np.ndarray:
  """Cui et al.'s w_j = (1 - beta) / (1 - beta^{n_j}) (inverse effective number), normalised to sum to C."""
  w = (1.0 - beta) / (1.0 - np.power(beta, np.asarray(class_counts, np.float64)))
  return w * (len(w) / w.sum())


def ldam_margins(class_counts: np.ndarray, max_m: float) -> np.ndarray:
  """Cao et al.'s Delta_j proportional to n_j^{-1/4}, scaled so the rarest class gets exactly max_m."""
  m = np.asarray(class_counts, np.float64) ** -0.25
  return m / m.max() * max_m


def _per_example_ce(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _focal_terms(logits: jnp.ndarray, labels: jnp.ndarray, gamma: float) -> jnp.ndarray:
  """(1 - p_y)^gamma * CE per example (eq. 4).

  1 - p_y = -expm1(-CE) stays accurate for confident examples; the floor at `tiny` keeps the gradient finite
  for gamma < 1 when p_y rounds to 1 (it changes the value by at most tiny^gamma * CE = 0 there).
  """
  ce = _per_example_ce(logits, labels)
  return jnp.maximum(-jnp.expm1(-ce), jnp.finfo(ce.dtype).tiny) ** gamma * ce


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
    return lambda logits, labels, step=None: (parallel.take(weights, labels, labels) *
                                              per_example(logits, labels, hp)).mean()

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


LOSSES: dict[str, Builder] = {
    "ce": lambda counts, steps_per_epoch, hp, logit_scale: cross_entropy,
    "focal": _focal,
    "cb_ce": _class_balanced(lambda logits, labels, hp: _per_example_ce(logits, labels)),
    "cb_focal": _class_balanced(lambda logits, labels, hp: _focal_terms(logits, labels, hp.focal_gamma)),
    # Weight balancing's stage-2 loss (its code: Cui's weights on the softmax-BCE of Class-balanced-loss-pytorch).
    "cb_softmax_bce": _class_balanced(lambda logits, labels, hp: softmax_bce(logits, labels)),
    "ldam": _ldam(drw=False),
    "ldam_drw": _ldam(drw=True),
    "balanced_softmax": _balanced_softmax,
    "logit_adjusted": _logit_adjusted,
    "las": _label_aware_smoothing,
}
COSINE_LOSSES = ("ldam", "ldam_drw")  # defined on the logits of a cosine head only
_COUNT_FREE = ("ce", "focal")


def get_loss(name: str, class_counts: np.ndarray, steps_per_epoch: int, logit_scale: float = 1.0,
             key: str = "train", **hyper: float) -> Loss:
  """The loss named by config key <key>.loss, for the training class counts; `hyper`: LossHyper fields;
  logit_scale: s of the cosine head (config key model.head_scale) the COSINE_LOSSES scale their margins by."""
  if name not in LOSSES:
    raise ConfigError(f"config key {key}.loss: unknown loss {name!r} (expected one of {sorted(LOSSES)})")
  hp = LossHyper.of(hyper, key)
  empty = np.flatnonzero(np.asarray(class_counts) <= 0)
  if name not in _COUNT_FREE and empty.size:
    raise DataError(f"class {int(empty[0])} has no training images ({empty.size} empty classes in all); "
                    f"config key {key}.loss = {name!r} needs every class count > 0")
  return LOSSES[name](class_counts, steps_per_epoch, hp, logit_scale)
