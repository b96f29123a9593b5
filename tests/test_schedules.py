"""Every config's schedule is its source's: LDAM-DRW's adjust_learning_rate epoch by epoch, OLTR's Places-LT stage 1
(every layer, StepLR every 10 epochs, backbone at 0.01x the head), MiSLAS's CIFAR stage 2 chosen by imbalance ratio;
a ratio MiSLAS publishes no values for stops in one line before any step."""
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar100_lt_r32_mislas, cifar10_lt_r32_ldam_drw, cifar10_lt_r32_mislas, places_lt_r152
from ltr_jax import masks, models, schedules
from ltr_jax.stage2 import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ldam_adjust_learning_rate(epoch: int, lr: float = 0.1) -> float:
  """kaidic/LDAM-DRW cifar_train.py lines 366-376 (at 2536330), for the 0-based epoch its loop passes."""
  epoch = epoch + 1
  if epoch <= 5:
    return lr * epoch / 5
  if epoch > 180:
    return lr * 0.0001
  if epoch > 160:
    return lr * 0.01
  return lr


def test_ldam_drw_schedule_follows_adjust_learning_rate_in_every_epoch():
  config = cifar10_lt_r32_ldam_drw.get_config()
  steps_per_epoch = 97  # 12,406 training images (IR 100 from 4500) in batches of 128; any count works
  schedule = schedules.learning_rate_schedule(config.train, steps_per_epoch)
  lrs = np.asarray([schedule(s) for s in range(config.train.epochs * steps_per_epoch)]).reshape(200, steps_per_epoch)
  for epoch in range(200):
    reference = ldam_adjust_learning_rate(epoch)
    if epoch < 5:  # ltr_jax warms up per step: inside the epoch's range, ending at the reference's value
      assert reference * epoch / (epoch + 1) - 1e-9 <= lrs[epoch].min() and lrs[epoch].max() <= reference * (1 + 1e-6)
    else:
      np.testing.assert_allclose(lrs[epoch], reference, rtol=1e-6, err_msg=f"epoch {epoch}")
  assert config.train.drw_epoch == 160  # the re-weighting starts with the 100-fold drop, as in their code


def test_places_lt_trains_every_layer_with_oltr_step_schedule():
  config = places_lt_r152.get_config()
  assert config.train.frozen == ()
  shapes = jax.eval_shape(lambda x: models.from_config(config.model, 365).init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))["params"]
  groups = dict(zip(masks.paths(shapes), jax.tree.leaves(masks.lr_groups(shapes, (), config.train.lr_mults))))
  peak = config.train.base_lr * config.train.batch_size / 256
  assert peak == pytest.approx(0.1)
  assert {path: peak * m for path, m in groups.items() if path.startswith("head/")
         } == pytest.approx({"head/kernel": 0.1, "head/bias": 0.1})
  assert all(peak * m == pytest.approx(0.001) for path, m in groups.items() if path.startswith("backbone/"))
  schedule = schedules.learning_rate_schedule(config.train, 10)
  assert [float(schedule(10 * e)) / peak for e in (0, 9, 10, 19, 20, 29)] == pytest.approx([1, 1, .1, .1, .01, .01])
  # The last stage alone (MiSLAS's convention) is one documented override; BatchNorm of the rest then freezes.
  assert masks.resolve(("backbone/(?!{last_stage}/).*",),
                       models.last_stage_name(config.model.name)) == ("backbone/(?!stage4/).*",)


@pytest.mark.parametrize("module, ratio, expected", [
    (cifar100_lt_r32_mislas, 100.0, (0.4, 0.1, True, 0.2)),
    (cifar100_lt_r32_mislas, 50.0, (0.3, 0.0, True, 0.1)),
    (cifar100_lt_r32_mislas, 10.0, (0.2, 0.0, True, 0.1)),
    (cifar10_lt_r32_mislas, 100.0, (0.3, 0.0, False, 0.5)),
    (cifar10_lt_r32_mislas, 50.0, (0.2, 0.0, False, 0.2)),
    (cifar10_lt_r32_mislas, 10.0, (0.1, 0.0, False, 0.2)),
])
def test_mislas_stage2_values_follow_the_imbalance_ratio(module, ratio, expected):
  """MiSLAS's config/cifar{10,100}/*_imb{001,002,01}_stage2_mislas.yaml: smooth_head, smooth_tail, shift_bn,
  lr_factor."""
  config = module.get_config()
  config.data.imbalance_ratio = ratio
  hyper = registry.hyper_of(config, "mislas")
  shift_bn = not any(masks.matches("backbone/stage1/block0/bn1/mean", [p]) for p in hyper.frozen)
  assert (hyper.las_eps_head, hyper.las_eps_tail, shift_bn, hyper.lr_mults[0][1]) == expected


def test_an_imbalance_ratio_without_mislas_values_stops_in_one_line():
  start = time.time()
  out = subprocess.run([
      sys.executable, "-m", "ltr_jax.main", "--config=configs/cifar100_lt_r32_mislas.py", "--workdir=/tmp/unused_ir37",
      "--config.data.imbalance_ratio=37"
  ], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1 and time.time() - start < 30
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: config key data.imbalance_ratio = 37: stage2.mislas takes "
                                                 "its source's values for ratios 100, 50, 10 only"), out.stderr
  assert "stage2.mislas.las_eps_head" in lines[0] and "per_imbalance_ratio=()" in lines[0]
