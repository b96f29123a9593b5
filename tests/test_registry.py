"""The stage-2 registry: every method has its config subtree and its function; the config check reads the registry
without importing stage 2's work, and nothing of stage 1 imports stage 2."""
import os
import subprocess
import sys

from configs import base
from ltr_jax.stage2 import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THROUGH_BACKBONE_KEYS = {"epochs", "batch_size", "lr", "weight_decay", "sampling", "frozen", "lr_mults", "loss",
                         "reinit_head", "head_lws"}


def test_every_method_has_its_subtree_and_function():
  config = base.get_config()
  for name, method in registry.METHODS.items():
    assert name in config.stage2, name
    assert callable(method.resolve()), name
    assert method.runs_on in (registry.ON_FEATURES, registry.THROUGH_BACKBONE), name
    if method.runs_on == registry.THROUGH_BACKBONE:
      assert THROUGH_BACKBONE_KEYS <= set(config.stage2[name]), name
  # A variant says what it changes; the paper's rows are no variants.
  for name in ("crt", "lws", "tau_norm", "ncm", "wb", "mislas"):
    assert registry.METHODS[name].variant == "", name
  for name in ("crt_frozen_bn", "crt_cached", "lws_cached", "wb_cached"):
    assert registry.METHODS[name].variant, name


def test_validate_reads_the_registry_only_and_stage1_imports_no_stage2():
  code = ("import sys\n"
          "import ltr_jax.validate, ltr_jax.train, ltr_jax.evaluate, ltr_jax.checkpoints, ltr_jax.losses\n"
          "import ltr_jax.data.pipeline, ltr_jax.data.preflight\n"
          "print(sorted(m for m in sys.modules if m.startswith('ltr_jax.stage2')))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "['ltr_jax.stage2', 'ltr_jax.stage2.registry']", out.stdout
