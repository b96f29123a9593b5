"""Run by tests/test_howto.py in a copy of the repository where the README's stage-2 how-to was applied: the new
method through the config check, its registry record and the report's entry; prints the outcome as JSON."""
import inspect
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import synthetic  # noqa: E402
from configs import quickstart  # noqa: E402
from ltr_jax import validate  # noqa: E402
from ltr_jax.errors import ConfigError  # noqa: E402
from ltr_jax.stage2 import registry, run  # noqa: E402


def refusal(change) -> str:
  config = quickstart.get_config()
  change(config)
  try:
    validate.validate(config)
  except ConfigError as e:
    return str(e)
  return "accepted"


if __name__ == "__main__":
  config = quickstart.get_config()
  config.stage2.methods = ("joint", "prior_shift")
  validate.validate(config)
  refused = [
      refusal(lambda c: c.stage2.prior_shift.update(strength=-1.0)),
      refusal(lambda c: setattr(c.stage2.prior_shift, "tau", 1.0))
  ]
  feats = synthetic.features()
  joint = synthetic.joint_head(feats)
  method, hyper = registry.method_of(config, "prior_shift"), registry.hyper_of(config, "prior_shift")
  function = method.resolve()
  head = function(feats, joint, hyper, config)
  splits = {"val": feats.val, "test": feats.test}
  entry = run.entry(method, hyper, head, splits, feats.splits)
  joint_entry = run.entry(registry.method_of(config, "joint"), config.stage2.joint, joint, splits, feats.splits)
  print(
      json.dumps({
          "module": inspect.getsourcefile(function), "refused": refused,
          "entry": {k: entry[k] for k in ("label", "paper", "runs_on", "hyper", "few", "all")},
          "joint": {k: joint_entry[k] for k in ("few", "all")}
      }))
