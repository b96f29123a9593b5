"""The learning-rate schedule of the loop (config keys train.schedule, lr_steps, warmup_epochs, base_lr)."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "step")  # config key train.schedule


def learning_rate_schedule(recipe: Any, steps_per_epoch: int) -> optax.Schedule:
  """The schedule of `recipe` (a train.Recipe, or config key train): linear warm-up (per step, over
  recipe.warmup_epochs) to the peak lr base_lr * batch / 256, then recipe.schedule:

  'cosine': to 0 over the remaining steps exactly, so it starts at the peak lr and reaches 0 when the last step ends
  (the last update runs at a small positive lr, not at 0 for a whole epoch as in the reference code);
  'step': the peak lr times the factor of the last (epoch, factor) of recipe.lr_steps whose 0-based epoch has
  begun, e.g. LDAM-DRW's ((160, 0.01), (180, 1e-4)): x0.01 from epoch 160, x1e-4 from 180 (factors of the peak).
  """
  peak = recipe.base_lr * recipe.batch_size / 256
  total = recipe.epochs * steps_per_epoch
  warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
  if recipe.schedule == "step":
    steps = [(int(round(epoch * steps_per_epoch)), factor) for epoch, factor in recipe.lr_steps]

    def after_warmup(step):
      factor = jnp.float32(1.0)
      for boundary, value in steps:
        factor = jnp.where(step + warmup >= boundary, jnp.float32(value), factor)
      return peak * factor
  else:
    after_warmup = optax.cosine_decay_schedule(peak, max(1, total - warmup))
  if not warmup:
    return after_warmup
  return optax.join_schedules([optax.linear_schedule(peak / warmup, peak, warmup), after_warmup], [warmup])
