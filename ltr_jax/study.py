"""The paper's main study (Figure 1), and beyond: every stage-1 setting for the representation x every classifier.

python -m ltr_jax.study --config=configs/quickstart.py --workdir=DIR [--seeds=0,1,2]
  [--stage1=instance,class,sqrt,progressive,mixup] [--mixup_alpha=0.2]
A stage-1 setting is a sampling strategy of the paper, or 'mixup' (instance-balanced sampling with mixup, MiSLAS's
stage 1). The classifiers are the config's stage2.methods. Each (setting, seed) is a full stage 1 + stage 2 run in
DIR/<setting>/seed<k> (a finished run is reused, an interrupted one resumes). The study writes study.json,
study.md (mean +- std over seeds of All / Many / Medium / Few and ECE, as is and after temperature scaling, per
setting and method) and study.png in
the style of Figure 1.
"""
from __future__ import annotations

import time

from absl import app, flags
from matplotlib.figure import Figure
import numpy as np

from ltr_jax import cli, paths
from ltr_jax.data.sampling import STRATEGIES
from ltr_jax.errors import ConfigError
from ltr_jax.report import GROUPS, footnotes, marks

FLAGS = flags.FLAGS
cli.define_config_flag()
flags.DEFINE_string("workdir", None, "Directory of the study; one sub-directory per run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Run seeds (initialisation, sampling, augmentation).")
STAGE1 = {**{strategy: {"sampling": strategy} for strategy in STRATEGIES}, "mixup": {"sampling": "instance"}}
flags.DEFINE_list("stage1", list(STAGE1), "Stage-1 settings: sampling strategies, and 'mixup'.")
# 0.2: MiSLAS's value on ImageNet-LT, iNaturalist and Places-LT. Its CIFAR value, 1.0, gave a lower Joint and
# MiSLAS All on the quickstart (one run: 61.3 and 71.8, against 63.9 and 73.6 with 0.2).
flags.DEFINE_float("mixup_alpha", 0.2, "The mixup alpha of the 'mixup' stage-1 setting.")
flags.mark_flags_as_required(["config", "workdir"])

METRICS = (*GROUPS, "ece", "ece_ts")


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, list[float]]]]:
  """{setting: [results.json of each seed]} -> {setting: {method: {'label', 'paper', metric: [mean, std]}}}."""
  table: dict = {}
  for setting, results in runs.items():
    for method, entry in results[0]["methods"].items():
      table.setdefault(setting, {})[method] = {
          "label": entry.get("label", method), "paper": entry.get("paper", True), "variant": entry.get("variant", ""),
          "arbitrary_logit_scale": entry.get("arbitrary_logit_scale", False)
      }
      for metric in METRICS:
        values = [r["methods"][method][metric] for r in results if r["methods"][method].get(metric) is not None]
        table[setting][method][metric] = [float(np.mean(values)), float(np.std(values))] if values else None
  return table


def markdown(table: dict, num_seeds: int) -> str:
  lines = [
      f"Top-1 (%) on the test split and ECE (%, 15 bins; ECE (T) after temperature scaling fit on validation), "
      f"mean ± std over {num_seeds} seeds", "", "| Stage 1 | Classifier | Many | Medium | Few | All | ECE | ECE (T) |",
      "|---|---|---:|---:|---:|---:|---:|---:|"
  ]
  for setting, methods in table.items():
    for method, row in methods.items():
      cells = ["–" if row[m] is None else f"{row[m][0]:.1f} ± {row[m][1]:.1f}" for m in METRICS]
      if row["arbitrary_logit_scale"]:
        cells[METRICS.index("ece")] += " §"
      lines.append(f"| {setting} | {row['label']}{marks(row)} | " + " | ".join(cells) + " |")
  return "\n".join(lines + [""] + footnotes(next(iter(table.values()))))


def plot(table: dict, path: str) -> None:
  """One panel per classifier; bars: stage-1 settings; groups: Many / Medium / Few / All."""
  settings = list(table)
  methods = list(next(iter(table.values())))
  cols = min(len(methods), 5)
  rows = -(-len(methods) // cols)
  fig = Figure(figsize=(3.2 * cols, 3.2 * rows))
  axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
  width = 0.8 / len(settings)
  for ax, method in zip(axes, methods):
    for k, setting in enumerate(settings):
      row = table[setting][method]
      means = [np.nan if row[g] is None else row[g][0] for g in GROUPS]
      stds = [0 if row[g] is None else row[g][1] for g in GROUPS]
      ax.bar(
          np.arange(len(GROUPS)) + (k - (len(settings) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
          label=setting)
    ax.set_xticks(range(len(GROUPS)), [g.capitalize() for g in GROUPS])
    ax.set_title(table[settings[0]][method]["label"] + marks(table[settings[0]][method]))
  for ax in axes[len(methods):]:
    ax.set_axis_off()
  axes[0].set_ylabel("top-1 (%)")
  axes[0].legend(fontsize=7, title="stage 1", title_fontsize=7)
  fig.tight_layout()
  paths.savefig(fig, path, dpi=120)


def main(argv: list[str]) -> None:
  del argv
  cli.quiet_logs()
  from ltr_jax import parallel, train, validate  # JAX loads only when a study runs
  from ltr_jax.stage2 import run as stage2
  from ltr_jax.data import preflight
  start = time.time()

  def run_all() -> dict[str, list[dict]]:
    parallel.initialize(FLAGS.config)
    configs = {}
    for setting in FLAGS.stage1:
      if setting not in STAGE1:
        raise ConfigError(f"--stage1: {setting!r} is not one of {', '.join(STAGE1)}")
      for seed in map(int, FLAGS.seeds):
        config = FLAGS.config.copy_and_resolve_references()
        config.train.update(dict(STAGE1[setting], mixup_alpha=FLAGS.mixup_alpha if setting == "mixup" else 0.0))
        config.seed = seed
        parallel.agreed(lambda: validate.validate(config))  # all of them before the first run
        configs[setting, seed] = config
    parallel.agreed(lambda: paths.check_workdir(FLAGS.workdir))
    mesh = parallel.data_mesh()
    splits = parallel.agreed(lambda: preflight.checked_splits(FLAGS.config.data))  # every run trains on it
    runs: dict[str, list[dict]] = {}
    for (setting, seed), config in configs.items():
      workdir = paths.join(FLAGS.workdir, setting, f"seed{seed}")
      results_path = paths.join(workdir, "results.json")
      if not paths.exists(results_path):
        print(f"== stage 1 {setting}, seed {seed}: {workdir}")
        train.train_and_evaluate(config, workdir, mesh, splits)
        stage2.run(config, workdir, mesh, splits)
      runs.setdefault(setting, []).append(paths.read_json(results_path))
    return runs

  table = summarize(cli.run_or_exit(run_all))
  files = {k: paths.join(FLAGS.workdir, f"study.{k}") for k in ("json", "md", "png")}
  paths.write_json(files["json"], {
      "table": table, "seeds": FLAGS.seeds, "mixup_alpha": FLAGS.mixup_alpha,
      "wall_seconds_this_call": time.time() - start
  })
  text = markdown(table, len(FLAGS.seeds))
  paths.write_text(files["md"], text + "\n")
  plot(table, files["png"])
  print(text)
  print("wrote:\n  " + "\n  ".join(files.values()))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
