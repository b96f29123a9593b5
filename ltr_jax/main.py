"""Command line: python -m ltr_jax.main --config=configs/quickstart.py --workdir=DIR [--mode=all].

Modes: train (stage 1), decouple (stage 2 on the stage-1 checkpoint in the workdir), all (both),
evaluate (any checkpoint on the test split, with every prediction), predict (a checkpoint on unlabelled images:
--images=FOLDER_OR_LIST --output=FILE.csv). Config fields are overridden with --config.a.b=value; the config is
locked, so an unknown key is an error. The config is validated before any work.
"""
from __future__ import annotations

from absl import app, flags

from ltr_jax import cli

FLAGS = flags.FLAGS
cli.define_config_flag()
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, features and reports.")
flags.DEFINE_enum("mode", "all", ["train", "decouple", "evaluate", "predict", "all"], "What to run.")
flags.DEFINE_string(
    "checkpoint", None, "--mode=evaluate / predict: a checkpoint directory (default: the workdir's "
    "best stage-2 method, else its stage-1 checkpoint).")
flags.DEFINE_string("images", None, "--mode=predict: a folder of images (searched recursively) or a list file of "
                    "image paths.")
flags.DEFINE_string("output", None, "--mode=predict: the CSV file to write (one row per image).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.quiet_logs()
  # Imported here so that --help answers without loading JAX.
  from ltr_jax import evaluate, parallel, paths, predict, report, train, validate
  from ltr_jax.stage2 import run as stage2
  from ltr_jax.data import preflight
  from ltr_jax.errors import ConfigError
  config = FLAGS.config

  def work() -> None:
    parallel.initialize(config)
    if FLAGS.mode == "predict" and not (FLAGS.images and FLAGS.output):
      raise ConfigError("--mode=predict needs --images=FOLDER_OR_LIST_FILE and --output=FILE.csv")
    # A fault found by one process stops every process (none goes on alone into a collective).
    parallel.agreed(lambda:
                    (validate.validate(config, with_data=FLAGS.mode != "predict"), paths.check_workdir(FLAGS.workdir)))
    mesh = parallel.data_mesh()
    if FLAGS.mode == "predict":
      predict.run(config, FLAGS.workdir, mesh, FLAGS.images, FLAGS.output, FLAGS.checkpoint)
      return
    splits = parallel.agreed(lambda: preflight.checked_splits(config.data))
    if FLAGS.mode in ("train", "all"):
      train.train_and_evaluate(config, FLAGS.workdir, mesh, splits)
    if FLAGS.mode in ("decouple", "all"):
      results = stage2.run(config, FLAGS.workdir, mesh, splits)
      if "files" in results:
        print(report.markdown_table(results))
        print("wrote:\n  " + "\n  ".join(results["files"]))
    if FLAGS.mode == "evaluate":
      evaluate.run(config, FLAGS.workdir, mesh, splits, FLAGS.checkpoint)

  cli.run_or_exit(work)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
