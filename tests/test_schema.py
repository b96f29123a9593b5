"""Every config value is checked against its declared domain before any work.

The walk: every leaf of every config in configs/ (numbers, strings, flags, tuples; stage-2 entries included) is set,
one at a time, to each value its domain gives as outside it (negative, zero where zero is not allowed, NaN, infinity,
an empty tuple, a name not in the set, ...) that the config's type accepts (ml_collections refuses the rest at
assignment, and the command line with it), and `validate`, the check `main` runs first, must stop with one line
naming that key, the value and the domain. Then the same through `main` itself, one run per kind of failure.
"""
import glob
import importlib
import os
import subprocess
import sys
import time

import ml_collections
import pytest

from ltr_jax import schema, validate
from ltr_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py")) if not p.endswith("__init__.py"))


def _config(name: str) -> ml_collections.ConfigDict:
  return importlib.import_module(f"configs.{name}").get_config()


def _leaves(config: ml_collections.ConfigDict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  out = []
  for key in config:
    value = config[key]
    out += _leaves(value, prefix + (key,)) if isinstance(value, ml_collections.ConfigDict) else [prefix + (key,)]
  return out


def _domain(config: ml_collections.ConfigDict, path: tuple[str, ...]):
  if len(path) == 1:
    return schema.TOP[path[0]]
  if path[0] == "stage2":
    return schema.STAGE2[path[1]] if len(path) == 2 else schema.entry_domains(config.stage2[path[1]])[path[2]]
  return schema.SECTIONS[path[0]][path[1]]


def _get(config: ml_collections.ConfigDict, path: tuple[str, ...]):
  for key in path:
    config = config[key]
  return config


def _set(config: ml_collections.ConfigDict, path: tuple[str, ...], value) -> bool:
  """Sets the leaf as an override does; False where its type refuses the value (the command line refuses it too)."""
  node = config
  for key in path[:-1]:
    node = node[key]
  try:
    node[path[-1]] = value
  except (TypeError, ValueError):
    return False
  return True


@pytest.mark.parametrize("name", CONFIGS)
def test_every_leaf_of_every_config_is_declared_and_in_its_domain(name):
  config = _config(name)
  schema.check(config)  # a leaf without a declaration, or outside its domain, stops here
  assert all(_domain(config, path) is not None for path in _leaves(config))


def test_a_key_without_a_declaration_stops_the_check():
  config = _config("quickstart")
  config.train.new_knob = 1
  with pytest.raises(ConfigError, match=r"^config key train.new_knob has no declared domain \(ltr_jax/schema.py"):
    validate.validate(config)


def test_every_leaf_set_outside_its_domain_stops_in_one_line_naming_it():
  tried, refused, leaves = 0, 0, set()
  start = time.time()
  for name in CONFIGS:
    config = _config(name)
    for path in _leaves(config):
      key, domain, original = ".".join(path), _domain(config, path), _get(config, path)
      for value in domain.outside():
        if not _set(config, path, value):
          continue
        tried += 1
        leaves.add((name, key))
        with pytest.raises(ConfigError) as error:
          validate.validate(config)
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"config key {key}"), (name, key, value, message)
        assert f"must be {domain}" in message or "is not" in message, (name, key, value, message)
        refused += 1
        assert _set(config, path, original)
    schema.check(config)  # every value put back
  assert refused == tried and len(leaves) >= 2000, (len(leaves), tried)
  print(f"\n{len(leaves)} leaves of {len(CONFIGS)} configs, {tried} values outside their domains tried, {refused} "
        f"refused in one line, in {time.time() - start:.1f} s")


# One run of `main` per kind of failure: a number out of range, NaN, an empty or bad tuple, a name not in the set, a
# rule between keys; the values the issue lists among them. Each stops in one line naming the key, before any step.
MAIN_FAILURES = [
    ("--config.data.imbalance_ratio=-5", "config key data.imbalance_ratio = -5.0: "),
    ("--config.data.imbalance_ratio=0.5", "config key data.imbalance_ratio = 0.5: out of range"),
    ("--config.data.n_max=-1", "config key data.n_max = -1: out of range; it must be an integer >= 0"),
    ("--config.train.warmup_epochs=-1", "config key train.warmup_epochs = -1.0: out of range"),
    ("--config.stage2.tau_norm.taus=(-1.0,)", "config key stage2.tau_norm.taus = (-1.0,): item 0 (-1.0) is out of "
     "range"),
    ("--config.data.val_per_class=-2", "config key data.val_per_class = -2: out of range"),
    ("--config.stage2.crt.lr=-1", "config key stage2.crt.lr = -1.0: out of range; it must be a finite number > 0"),
    ("--config.stage2.tau_norm.taus=()",
     "config key stage2.tau_norm.taus = (): empty; it must be a tuple of at least 1"),
    ("--config.train.base_lr=nan", "config key train.base_lr = nan: not finite"),
    ("--config.train.sampling=balanced", "config key train.sampling = 'balanced': not one of the choices; it must be "
     "one of 'instance', 'class', 'sqrt', 'progressive'"),
    ("--config.train.warmup_epochs=31", "config key train.warmup_epochs = 31 is longer than train.epochs = 30"),
]


def test_main_stops_in_one_line_before_any_step_for_each_kind_of_failure(tmp_path):
  runs = []
  for i, (override, _) in enumerate(MAIN_FAILURES):
    workdir = tmp_path / f"w{i}"
    runs.append(
        (workdir,
         subprocess.Popen(
             [sys.executable, "-m", "ltr_jax.main", "--config=configs/quickstart.py", f"--workdir={workdir}", override],
             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
  for (override, expected), (workdir, process) in zip(MAIN_FAILURES, runs):
    _, stderr = process.communicate(timeout=300)
    lines = stderr.strip().splitlines()
    assert process.returncode == 1 and len(lines) == 1, (override, stderr[-2000:])
    assert lines[0].startswith(f"error: {expected}"), (override, lines[0])
    assert not workdir.exists() or not any(workdir.iterdir()), override  # nothing written, no step run


def test_rules_between_keys_name_the_key_that_is_wrong():
  """Values in their domains that the data or another key cannot satisfy: the message names the key to change."""
  from ltr_jax.data import datasets
  from ltr_jax.errors import DataError
  config = _config("quickstart")
  config.data.n_max = 7000  # Fashion-MNIST has 6000 training images per class
  with pytest.raises(
      DataError, match=r"^config key data.n_max = 7000: class 0 has 6000 available images, 7000 were "
      r"asked \(the long-tailed profile starts at n_max\); lower it$"):
    datasets.build_splits(config.data)
  config = _config("quickstart")
  config.data.val_per_class = 5500  # class 0 keeps 1000 of its 6000 images for training
  with pytest.raises(DataError, match=r"^config key data.val_per_class = 5500: class 0 has 5000 non-excluded images"):
    datasets.build_splits(config.data)
  config = _config("quickstart")
  config.data.val_per_class = 0
  with pytest.raises(
      ConfigError, match=r"^config key stage2.methods: 'tau_norm' chooses a hyper-parameter on a "
      r"validation split, and the config names none: set data.val_per_class"):
    validate.validate(config)
  config = _config("quickstart")
  config.data.few_threshold = 200
  with pytest.raises(ConfigError, match=r"^config key data.few_threshold = 200 is above data.many_threshold = 100"):
    validate.validate(config)
