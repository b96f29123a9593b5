"""The paper's main study (Figure 1): every sampling strategy for the representation x every classifier.

python -m ltr_jax.study --config=configs/quickstart.py --workdir=DIR [--seeds=0,1,2]
  [--strategies=instance,class,sqrt,progressive]
Each (strategy, seed) is a full stage 1 + stage 2 run in DIR/<strategy>/seed<k> (a finished run is
reused, an interrupted one resumes). The study writes study.json, study.md (mean +- std over seeds of
All / Many / Medium / Few per strategy and method) and study.png in the style of Figure 1.
"""
from __future__ import annotations

import json
import os
import time

from absl import app, flags
from matplotlib.figure import Figure
import numpy as np

from ltr_jax import cli
from ltr_jax.data.sampling import STRATEGIES
from ltr_jax.report import GROUPS

FLAGS = flags.FLAGS
cli.define_config_flag()
flags.DEFINE_string("workdir", None, "Directory of the study; one sub-directory per run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Run seeds (initialisation, sampling, augmentation).")
flags.DEFINE_list("strategies", list(STRATEGIES), "Stage-1 sampling strategies.")
flags.mark_flags_as_required(["config", "workdir"])


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, list[float]]]]:
  """{strategy: [results.json of each seed]} -> {strategy: {method: {'label', group: [mean, std]}}}."""
  table: dict = {}
  for strategy, results in runs.items():
    for method, entry in results[0]["methods"].items():
      table.setdefault(strategy, {})[method] = {"label": entry.get("label", method)}
      for group in GROUPS:
        values = [r["methods"][method][group] for r in results if r["methods"][method][group] is not None]
        table[strategy][method][group] = [float(np.mean(values)), float(np.std(values))] if values else None
  return table


def markdown(table: dict, num_seeds: int) -> str:
  lines = [f"Top-1 (%) on the test split, mean ± std over {num_seeds} seeds", "",
           "| Stage-1 sampling | Classifier | Many | Medium | Few | All |", "|---|---|---:|---:|---:|---:|"]
  for strategy, methods in table.items():
    for method, groups in methods.items():
      cells = ["–" if groups[g] is None else f"{groups[g][0]:.1f} ± {groups[g][1]:.1f}" for g in GROUPS]
      lines.append(f"| {strategy} | {groups['label']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(table: dict, path: str) -> None:
  """One panel per classifier; bars: sampling strategies; groups: Many / Medium / Few / All."""
  strategies = list(table)
  methods = list(next(iter(table.values())))
  fig = Figure(figsize=(3.2 * len(methods), 3.4))
  axes = fig.subplots(1, len(methods), sharey=True)
  width = 0.8 / len(strategies)
  for ax, method in zip(np.atleast_1d(axes), methods):
    for k, strategy in enumerate(strategies):
      groups = table[strategy][method]
      means = [np.nan if groups[g] is None else groups[g][0] for g in GROUPS]
      stds = [0 if groups[g] is None else groups[g][1] for g in GROUPS]
      ax.bar(np.arange(len(GROUPS)) + (k - (len(strategies) - 1) / 2) * width, means, width, yerr=stds,
             capsize=2, label=strategy)
    ax.set_xticks(range(len(GROUPS)), [g.capitalize() for g in GROUPS])
    ax.set_title(table[strategies[0]][method]["label"])
  np.atleast_1d(axes)[0].set_ylabel("top-1 (%)")
  np.atleast_1d(axes)[0].legend(fontsize=7, title="stage-1 sampling", title_fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv: list[str]) -> None:
  del argv
  cli.quiet_logs()
  from ltr_jax import decouple, parallel, train, validate  # JAX loads only when a study runs
  from ltr_jax.data import datasets, preflight
  start = time.time()

  def run_all() -> dict[str, list[dict]]:
    parallel.initialize(FLAGS.config)
    configs = {}
    for strategy in FLAGS.strategies:
      for seed in map(int, FLAGS.seeds):
        config = FLAGS.config.copy_and_resolve_references()
        config.train.sampling, config.seed = strategy, seed
        validate.validate(config)  # all of them before the first run
        configs[strategy, seed] = config
    mesh = parallel.data_mesh()
    splits = datasets.build_splits(FLAGS.config.data)  # every run trains on the same data
    if FLAGS.config.data.preflight:
      preflight.check(splits)
    runs: dict[str, list[dict]] = {}
    for (strategy, seed), config in configs.items():
      workdir = os.path.join(FLAGS.workdir, strategy, f"seed{seed}")
      results_path = os.path.join(workdir, "results.json")
      if not os.path.exists(results_path):
        print(f"== stage-1 sampling {strategy}, seed {seed}: {workdir}")
        train.train_and_evaluate(config, workdir, mesh, splits)
        decouple.run(config, workdir, mesh, splits)
      with open(results_path) as f:
        runs.setdefault(strategy, []).append(json.load(f))
    return runs

  table = summarize(cli.run_or_exit(run_all))
  paths = {k: os.path.join(FLAGS.workdir, f"study.{k}") for k in ("json", "md", "png")}
  with open(paths["json"], "w") as f:
    json.dump({"table": table, "seeds": FLAGS.seeds, "wall_seconds_this_call": time.time() - start}, f, indent=1)
  text = markdown(table, len(FLAGS.seeds))
  with open(paths["md"], "w") as f:
    f.write(text + "\n")
  plot(table, paths["png"])
  print(text)
  print("wrote:\n  " + "\n  ".join(paths.values()))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
