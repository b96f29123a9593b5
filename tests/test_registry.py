"""The stage-2 registry and the layers of the house: every config entry runs a registered function with exactly the
keys that function reads; the config check reads the registry without importing stage 2's work; nothing of stage 1
imports stage 2 or the report; no module imports one that imports it back."""
import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from configs import base
from ltr_jax import losses, schema
from ltr_jax.stage2 import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "ltr_jax")


def test_every_entry_runs_a_registered_function_with_the_keys_it_reads():
  config = base.get_config()
  entries = [name for name in config.stage2 if name not in schema.STAGE2]
  used = set()
  for name in entries:
    entry = config.stage2[name]
    method = registry.METHODS[entry.type]
    used.add(entry.type)
    assert callable(method.resolve()), name
    assert method.runs_on in (registry.ON_FEATURES, registry.THROUGH_BACKBONE), name
    reads = set(registry.ENTRY_KEYS) | set(method.keys) | {registry.RATIO_TABLE}
    if "loss" in entry:
      reads |= set(losses.LOSSES[entry.loss].reads)
    assert set(entry) <= reads and set(registry.ENTRY_KEYS) | set(method.keys) <= set(entry), name
  assert used == set(registry.METHODS)  # no record without an entry that runs it
  # Several entries share one function and differ in config only (the type pattern).
  assert {n for n in entries if config.stage2[n].type == "finetune"} == {
      "crt", "crt_frozen_bn", "lws", "classifier", "last_block_classifier", "backbone_classifier",
      "backbone_classifier_tenth_lr", "mislas"
  }
  # A variant says what it changes; the paper's rows and the later methods as their sources run them are none.
  for name in ("crt", "lws", "tau_norm", "ncm", "wb", "mislas"):
    assert config.stage2[name].variant == "", name
  for name in ("crt_frozen_bn", "crt_cached", "lws_cached", "wb_cached"):
    assert config.stage2[name].variant, name


def _imports(path: str, module: str) -> set[str]:
  """The ltr_jax modules `module` (at `path`) imports anywhere in its code (functions included), with the packages
  a dotted import runs first (but not `module`'s own packages, whose initialisation is under way)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    else:
      continue
    for name in names:
      parts = name.split(".")
      found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
  modules = {
      os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
      for p in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)
  }
  return {m for m in found if m in modules and m != module and not module.startswith(m + ".")}


def test_no_module_imports_one_that_imports_it_back():
  """The import graph of ltr_jax (every import statement, those inside functions too) has no cycle."""
  graph = {}
  for path in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True):
    module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
    graph[module] = _imports(path, module)
  state, stack = {}, []

  def visit(module):
    state[module] = "open"
    stack.append(module)
    for other in sorted(graph.get(module, ())):
      if state.get(other) == "open":
        pytest.fail("import cycle: " + " -> ".join(stack[stack.index(other):] + [other]))
      if other not in state:
        visit(other)
    stack.pop()
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module)
  assert "ltr_jax.stage2.classifiers" in graph and "ltr_jax.ops" in graph["ltr_jax.models.heads"]


@pytest.mark.parametrize("module", ["ltr_jax.train", "ltr_jax.data.preflight", "ltr_jax.validate"])
def test_what_each_module_loads_in_a_fresh_interpreter(module):
  """Stage 1 (the loop, with its losses, mixing, schedules, inference, checkpoints, models, ops and data pipeline) and
  the data check load nothing of stage 2, nor the report and matplotlib; the config check loads the stage-2 registry
  only."""
  code = (f"import sys, json, {module}\n"
          "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('ltr_jax', 'matplotlib')))))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  loaded = json.loads(out.stdout)
  stage2 = [m for m in loaded if m.startswith("ltr_jax.stage2")]
  if module == "ltr_jax.validate":
    assert stage2 == ["ltr_jax.stage2", "ltr_jax.stage2.registry"], loaded
  else:
    assert stage2 == [], loaded
  assert "ltr_jax.report" not in loaded and not any(m.startswith("matplotlib") for m in loaded), loaded
