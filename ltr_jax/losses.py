"""Stage-1 losses: logits [B, C] float32, integer labels [B] -> scalar mean loss."""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np
import optax

from ltr_jax.errors import ConfigError

Loss = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


LOSSES: dict[str, Callable[..., Loss]] = {
    "ce": lambda class_counts: cross_entropy,
}


def get_loss(name: str, class_counts: np.ndarray) -> Loss:
  """The loss named by config key train.loss, built for the training class counts."""
  if name not in LOSSES:
    raise ConfigError(f"config key train.loss: unknown loss {name!r} (expected one of {sorted(LOSSES)})")
  return LOSSES[name](class_counts)
