"""configs/provenance.csv, the source of every config value that comes from one, holds for every config.

The table has one row per (config, key, imbalance_ratio):
- config: a module of configs/, every one but base.py (the defaults the others override) and the quickstarts
  quickstart.py and quickstart_vit.py (ltr_jax's own small-scale choices);
- key: a dotted config key. stage2.<method>.<field> is read through ltr_jax.stage2.registry.hyper_of, so that a
  per-imbalance-ratio table (MiSLAS's CIFAR configs) resolves at data.imbalance_ratio: the config's own where the
  imbalance_ratio column is empty, else that column's (the table's other ratios);
- value: the config's value, a Python literal (ast.literal_eval); numbers compare with a tight tolerance, the rest
  exactly;
- source_value: what the source says; for a learning rate its lr and batch size (train.base_lr is per 256 images,
  stage2.<method>.lr at that method's batch_size). Where it is a Python literal it is in the key's units and equals
  value, unless the row gives a reason;
- repository, commit, file, line: the source, one of SOURCES at a 40-hex commit, a file there and its line:
  'N', 'N-M', or several of those joined by ';';
- reason: empty, unless ltr_jax departs on purpose from the source for this key, in its value or in how it applies
  it (a per-step cosine where the source steps once per epoch, i.i.d. class-balanced draws, a validation hold-out).
Every key where a config differs from base.py has a row, unless it only says where the data are, which methods
run, or how a stage-2 entry is shown and which record runs it (NOT_FROM_A_SOURCE, ENTRY_KEYS), so a new override
needs its source too.
"""
import ast
import csv
import glob
import importlib
import math
import numbers
import os
import re

import pytest

from configs import base
from ltr_jax import schema
from ltr_jax.stage2 import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "configs", "provenance.csv")
COLUMNS = [
    "config", "key", "imbalance_ratio", "value", "source_value", "repository", "commit", "file", "line", "reason"
]
SOURCES = ("facebookresearch/classifier-balancing", "ShadeAlsha/LTR-weight-balancing", "dvlab-research/MiSLAS",
           "kaidic/LDAM-DRW", "zhmiao/OpenLongTailRecognition-OLTR", "shijxcs/LIFT")
CONFIGS = sorted(
    os.path.basename(path)[:-3]
    for path in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if os.path.basename(path) not in ("__init__.py", "base.py", "quickstart.py", "quickstart_vit.py"))
# Overrides that say where the data are, or which methods run and at what feature-extraction batch: no source's.
NOT_FROM_A_SOURCE = {
    "data.name", "data.kind", "data.tfds_name", "data.train_list", "data.val_list", "data.test_list", "data.train_json",
    "data.test_json", "stage2.methods", "stage2.batch_size"
}
LINE = re.compile(r"\d+(-\d+)?(;\d+(-\d+)?)*")

with open(TABLE, newline="") as f:
  READER = csv.DictReader(f)
  HEADER = READER.fieldnames
  ROWS = [(number, row) for number, row in enumerate(READER, start=2)]  # the file's line numbers


def _literal(text: str):
  """text as a Python literal, lists as tuples; None where it is not one."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return None
  return tuple(value) if isinstance(value, list) else value


def _equal(a, b) -> bool:
  if isinstance(a, bool) or isinstance(b, bool):
    return type(a) is type(b) and a == b
  if isinstance(a, numbers.Real) and isinstance(b, numbers.Real):
    return math.isclose(a, b, rel_tol=1e-12)
  return type(a) is type(b) and a == b


def _config(name: str, imbalance_ratio: str = ""):
  config = importlib.import_module(f"configs.{name}").get_config()
  if imbalance_ratio:
    config.data.imbalance_ratio = float(imbalance_ratio)
  return config


def _lookup(config, key: str):
  """The value of a dotted key; a stage-2 method's field as the method reads it (per-ratio tables resolved)."""
  parts = key.split(".")
  if parts[0] == "stage2" and len(parts) == 3 and parts[1] not in schema.STAGE2:
    return registry.hyper_of(config, parts[1])[parts[2]]
  node = config
  for part in parts:
    node = node[part]
  return node


def _flat(tree, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if hasattr(value, "items"):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _entry_key(key: str) -> bool:
  """stage2.<method>.<type|label|paper|variant>: which record an entry runs and how reports show it."""
  parts = key.split(".")
  return parts[0] == "stage2" and len(parts) == 3 and parts[2] in registry.ENTRY_KEYS


def test_the_table_is_well_formed():
  assert HEADER == COLUMNS
  problems, seen = [], set()
  for number, row in ROWS:
    where = f"line {number} ({row['config']}, {row['key']})"
    identity = (row["config"], row["key"], row["imbalance_ratio"])
    if identity in seen:
      problems.append(f"{where}: a second row for {identity}")
    seen.add(identity)
    if row["repository"] not in SOURCES:
      problems.append(f"{where}: repository {row['repository']!r} is none of {SOURCES}")
    if not re.fullmatch(r"[0-9a-f]{40}", row["commit"]):
      problems.append(f"{where}: commit {row['commit']!r} is not 40 hex digits")
    if not row["file"] or not LINE.fullmatch(row["line"]):
      problems.append(f"{where}: file {row['file']!r}, line {row['line']!r}")
    if row["imbalance_ratio"] and _literal(row["imbalance_ratio"]) is None:
      problems.append(f"{where}: imbalance_ratio {row['imbalance_ratio']!r} is not a number")
    if not row["source_value"].strip() or row["reason"] != row["reason"].strip():
      problems.append(f"{where}: empty source_value, or a reason with surrounding blanks")
    try:
      value = ast.literal_eval(row["value"])
    except (ValueError, SyntaxError):
      problems.append(f"{where}: value {row['value']!r} is not a Python literal")
      continue
    source = _literal(row["source_value"])
    if source is not None and not _equal(source, value) and not row["reason"]:
      problems.append(f"{where}: value {value!r} differs from the source's {source!r} without a reason")
  assert not problems, "\n".join(problems)


def test_every_config_has_rows():
  assert sorted({row["config"] for _, row in ROWS}) == CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_values_are_the_table_values(name):
  configs, problems = {}, []
  for number, row in ROWS:
    if row["config"] != name:
      continue
    ratio = row["imbalance_ratio"]
    config = configs.setdefault(ratio, _config(name, ratio))
    actual, expected = _lookup(config, row["key"]), ast.literal_eval(row["value"])
    if not _equal(actual, expected):
      problems.append(f"line {number}: {row['key']}{f' at ratio {ratio}' if ratio else ''} is {actual!r} in "
                      f"configs/{name}.py, {expected!r} in the table ({row['repository']} {row['file']}:"
                      f"{row['line']}: {row['source_value']})")
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_override_of_base_has_a_row(name):
  keys = {row["key"] for _, row in ROWS if row["config"] == name}
  defaults, config = _flat(base.get_config()), _flat(_config(name))
  overrides = {key for key, value in config.items() if key not in defaults or value != defaults[key]}
  missing = sorted(key for key in overrides - keys - NOT_FROM_A_SOURCE
                   if not key.endswith(".per_imbalance_ratio") and not _entry_key(key))
  assert not missing, f"configs/{name}.py sets {missing} without a row in configs/provenance.csv"


@pytest.mark.parametrize("name", CONFIGS)
def test_every_ratio_of_a_per_ratio_table_has_rows(name):
  config = _config(name)
  rows = {(row["key"], float(row["imbalance_ratio"] or config.data.imbalance_ratio))
          for _, row in ROWS
          if row["config"] == name}
  missing = [(f"stage2.{method}.{key}", ratio) for method in config.stage2 if method not in schema.STAGE2
             for ratio, values in config.stage2[method].get("per_imbalance_ratio", ())
             for key in values if (f"stage2.{method}.{key}", ratio) not in rows]
  assert not missing, f"configs/{name}.py: no row for {missing}"
