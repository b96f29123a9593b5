"""Stage-2 report: results.json, results.md (the paper's table with calibration) and PNG plots (Figures 2 and 3,
per-class accuracy, reliability diagrams)."""
from __future__ import annotations

import csv
import io
from typing import Any

from matplotlib.figure import Figure
import ml_collections
import numpy as np

from ltr_jax import paths
from ltr_jax.data.sampling import STRATEGIES, class_probabilities

GROUPS = ("many", "medium", "few", "all")


def _cell(value: float | None) -> str:
  return "–" if value is None else f"{value:.1f}"


def label(results: dict[str, Any], method: str) -> str:
  """The report label of `method` (its results entry carries it)."""
  return results["methods"].get(method, {}).get("label", method)


def marks(entry: dict[str, Any]) -> str:
  """' †' for a method not in the paper, ' ‡' for a variant of a method (not its source's recipe)."""
  return ("" if entry.get("paper", True) else " †") + (" ‡" if entry.get("variant") else "")


def footnotes(entries: dict[str, dict[str, Any]]) -> list[str]:
  """The lines that explain the marks of `entries` ({method: entry with label, paper, variant})."""
  lines = []
  if any(r.get("arbitrary_logit_scale") for r in entries.values()):
    lines.append("§ an arbitrary logit scale (distances, τ-rescaled or cosine logits): its ECE and NLL say little; "
                 "ECE (T), after temperature scaling with T fit on validation, compares across methods.")
  if not all(r.get("paper", True) for r in entries.values()):
    lines.append("† not in the paper (Kang et al. 2020): a later method on the same two stages.")
  variants = {r.get("label", m): r["variant"] for m, r in entries.items() if r.get("variant")}
  if variants:
    lines.append("‡ a variant, not its source's recipe: " +
                 "; ".join(f"{label}: {what}" for label, what in variants.items()) + ".")
  return lines


def markdown_table(results: dict[str, Any]) -> str:
  """Method | Many | Medium | Few | All (top-1 %, test split) | ECE (%) | ECE after temperature scaling (%) | NLL,
  one row per method.

  Methods that are not the paper's carry a dagger, variants of a method a double dagger, an ECE of an arbitrary
  logit scale a section sign.
  """
  lines = [
      f"Top-1 accuracy (%) on the test split of {results['dataset']}, and the calibration of each method's "
      "softmax (ECE over 15 bins, %, as is and after temperature scaling; NLL)", "",
      "| Method | Many | Medium | Few | All | ECE | ECE (T) | NLL |", "|---|---:|---:|---:|---:|---:|---:|---:|"
  ]
  for method, r in results["methods"].items():
    note = f" (τ = {r['tau']:g})" if r.get("tau") is not None else ""
    nll = "–" if r.get("nll") is None else f"{r['nll']:.3f}"
    arbitrary = " §" if r.get("arbitrary_logit_scale") else ""
    lines.append(f"| {label(results, method)}{marks(r)}{note} | " + " | ".join(_cell(r.get(g)) for g in GROUPS) +
                 f" | {_cell(r.get('ece'))}{arbitrary} | {_cell(r.get('ece_ts'))} | {nll} |")
  notes = footnotes(results["methods"])
  return "\n".join(lines + ([""] + notes if notes else []))


def highlighted(results: dict[str, Any]) -> list[str]:
  """Joint, the paper's best other method and the best later one, by validation All (test All without one), among
  the methods as their sources run them (not their variants) whose logit scale is fitted (their calibration means
  something); where none is, among those as their sources run them, else among all (a run of LIFT alone: cosine
  heads)."""
  runs = results["methods"]
  as_run = {m: r for m, r in runs.items() if not r.get("variant")}
  methods = {m: r for m, r in as_run.items() if m == "joint" or not r.get("arbitrary_logit_scale")} or as_run or runs
  score = lambda m: (methods[m].get("val") or methods[m])["all"] or 0.0  # noqa: E731
  paper = [m for m in methods if methods[m].get("paper", True) and m != "joint"]
  later = [m for m in methods if not methods[m].get("paper", True)]
  return [
      m for m in ("joint" if "joint" in methods else None, max(paper, key=score, default=None),
                  max(later, key=score, default=None)) if m is not None
  ]


def _plot_reliability(results: dict, path: str) -> None:
  """Reliability diagrams: accuracy against confidence per bin, the gap to the diagonal shaded."""
  shown = highlighted(results)
  fig = Figure(figsize=(3.6 * len(shown), 3.6))
  axes = fig.subplots(1, len(shown), squeeze=False)[0]
  for ax, method in zip(axes, shown):
    r = results["methods"][method]
    bins = r["reliability"]
    edges = np.asarray(bins["edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2 * 100, np.diff(edges) * 100
    filled = np.asarray(bins["count"]) > 0
    accuracy, confidence = np.asarray(bins["accuracy"]), np.asarray(bins["confidence"])
    ax.bar(centers[filled], accuracy[filled], width[filled], color="C0", edgecolor="k", lw=0.5, label="accuracy")
    gap = confidence[filled] - accuracy[filled]
    ax.bar(centers[filled], np.abs(gap), width[filled], bottom=np.minimum(accuracy, confidence)[filled], fill=False,
           hatch="///", edgecolor="C3", lw=0.5, label="gap to the mean confidence")
    ax.plot([0, 100], [0, 100], "k--", lw=0.8)
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="confidence (%)", title=f"{r['label']}: ECE {r['ece']:.1f}%")
  axes[0].set_ylabel("accuracy (%)")
  axes[0].legend(fontsize=8, loc="upper left")
  fig.tight_layout()
  paths.savefig(fig, path, dpi=120)


def _plot_weight_norms(results: dict, order: np.ndarray, path: str) -> None:
  fig = Figure(figsize=(8, 4))
  ax = fig.subplots()
  for method, norms in results["weight_norms"].items():
    ax.plot(np.asarray(norms)[order], marker=".", label=label(results, method))
  ax.set(xlabel="class index (sorted by training images, descending)", ylabel="‖w_j‖",
         title="Classifier weight norms (Fig. 2 left)")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  paths.savefig(fig, path, dpi=120)


def _plot_tau_curves(results: dict, path: str) -> None:
  curves = results["tau_curves"]
  fig = Figure(figsize=(6 * len(curves), 4))
  axes = fig.subplots(1, len(curves), squeeze=False)
  for ax, (method, curve) in zip(axes[0], curves.items()):
    for group, color in zip(GROUPS, ("C0", "C1", "C2", "k")):
      for split, style in (("test", "-"), ("val", ":")):
        values = [np.nan if r[group] is None else r[group] for r in curve[split]]
        ax.plot(curve["taus"], values, style, color=color, label=f"{group} ({split})" if split == "test" else None)
    chosen = results["methods"].get(method, {}).get("tau")
    if chosen is not None:
      ax.axvline(chosen, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="τ", ylabel="top-1 (%)", title=f"{label(results, method)}: accuracy vs τ (dotted: validation)")
    ax.legend(fontsize=8)
  fig.tight_layout()
  paths.savefig(fig, path, dpi=120)


def _plot_per_class(results: dict, counts: np.ndarray, path: str) -> None:
  fig = Figure(figsize=(8, 4))
  ax = fig.subplots()
  for method, r in results["methods"].items():
    ax.plot(counts, r["per_class"], "o", alpha=0.7, label=r.get("label", method))
  ax.set_xscale("log")
  ax.set(xlabel="training images of the class", ylabel="test accuracy of the class",
         title="Per-class accuracy vs class size")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.tight_layout()
  paths.savefig(fig, path, dpi=120)


def _plot_sampling(counts: np.ndarray, order: np.ndarray, num_epochs: int, path: str) -> None:
  fig = Figure(figsize=(6, 4))
  ax = fig.subplots()
  for strategy in STRATEGIES:
    epoch = num_epochs // 2 if strategy == "progressive" else 0
    p = class_probabilities(counts, strategy, epoch, num_epochs)[order]
    ax.plot(p, label=strategy + (f" (epoch {epoch} of {num_epochs})" if strategy == "progressive" else ""))
  ax.set_yscale("log")
  ax.set(xlabel="class index (sorted by training images)", ylabel="sampling probability p_j",
         title="Sampling weights (Fig. 3)")
  ax.legend()
  fig.tight_layout()
  paths.savefig(fig, path, dpi=120)


WORST_SHOWN = 10  # classes in results.md's table of the worst classes
CONFUSION_MAX = 100  # confusion.png is drawn for up to this many classes


def _csv(header: list[str], rows: list[list[Any]]) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  return buffer.getvalue()


def per_class_csv(results: dict[str, Any]) -> str:
  """One row per class: index, name, training images, group, then each method's test accuracy (%)."""
  methods = list(results["methods"])
  rows = [[
      c, name, results["class_counts"][c], results["groups"][c], *(_number(results["methods"][m]["per_class"][c])
                                                                   for m in methods)
  ]
          for c, name in enumerate(results["class_names"])]
  return _csv(["class", "name", "training_images", "group", *methods], rows)


def _number(value: float | None) -> str:
  return "" if value is None or value != value else f"{value:.2f}"  # value != value: NaN, a class not in test


def worst_classes(results: dict[str, Any], method: str, shown: int = WORST_SHOWN) -> str:
  """results.md's table of the `shown` classes of lowest test accuracy under `method`, with their names and
  training images."""
  per_class = np.asarray(results["methods"][method]["per_class"], np.float64)
  order = [c for c in np.argsort(np.nan_to_num(per_class, nan=np.inf), kind="stable") if not np.isnan(per_class[c])]
  lines = [
      f"The {min(shown, len(order))} classes of lowest test accuracy under {label(results, method)}", "",
      "| Class | Name | Training images | Group | Top-1 |", "|---:|---|---:|---|---:|"
  ]
  lines += [
      f"| {c} | {results['class_names'][c]} | {results['class_counts'][c]} | {results['groups'][c]} | "
      f"{per_class[c]:.1f} |" for c in order[:shown]
  ]
  return "\n".join(lines)


def predictions_csv(images: list[str], names: list[str], classes: np.ndarray, probabilities: np.ndarray,
                    labels: np.ndarray | None = None, status: list[str] | None = None) -> str:
  """One row per image: the image, its label and the label's name (with `labels`), its status (with `status`: 'ok'
  or why it was not predicted), the predicted class and its name, and the top k (`classes` [N, k], their
  `probabilities`) by index, name and probability; a row of class -1 is left blank."""
  k = classes.shape[1]
  header = [
      "image", *(["label", "label_name"] if labels is not None else []), *(["status"] if status else []), "predicted",
      "predicted_name"
  ]
  header += [f"top{j}_{field}" for j in range(1, k + 1) for field in ("class", "name", "prob")]
  rows = []
  for i, image in enumerate(images):
    row = [image, *([int(labels[i]), names[labels[i]]] if labels is not None else []), *([status[i]] if status else [])]
    if classes[i, 0] < 0:
      rows.append(row + [""] * (2 + 3 * k))
      continue
    row += [int(classes[i, 0]), names[classes[i, 0]]]
    rows.append(row + [v for c, p in zip(classes[i], probabilities[i]) for v in (int(c), names[c], f"{p:.6f}")])
  return _csv(header, rows)


def plot_confusion(counts: np.ndarray, names: list[str], title: str, path: str) -> None:
  """The confusion matrix, each row (a true class) as fractions of its images, the classes named on both axes."""
  totals = counts.sum(axis=1, keepdims=True)
  fractions = np.divide(counts, totals, out=np.zeros(counts.shape, np.float64), where=totals > 0)
  size = min(4 + 0.18 * len(names), 22)
  fig = Figure(figsize=(size + 1.5, size))
  ax = fig.subplots()
  image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
  ticks = np.arange(len(names))
  fontsize = 8 if len(names) <= 30 else 5
  ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
  ax.set_yticks(ticks, names, fontsize=fontsize)
  ax.set(xlabel="predicted class", ylabel="true class", title=title)
  if len(names) <= 20:
    for (i, j), value in np.ndenumerate(fractions):
      if value >= 0.005:
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "k")
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class's test images")
  fig.tight_layout()
  paths.savefig(fig, path, dpi=120)


def write(results: dict[str, Any], workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """Writes the report files into the workdir (local or remote); returns their paths."""
  counts = np.asarray(results["class_counts"])
  order = np.argsort(-counts, kind="stable")
  files = {
      name: paths.join(workdir, name)
      for name in ("results.json", "results.md", "per_class.csv", "weight_norms.png", "tau_curves.png",
                   "per_class_accuracy.png", "sampling_weights.png", "reliability.png")
  }
  paths.write_json(files["results.json"], results)
  shown = results.get("best") or next(iter(results["methods"]))
  paths.write_text(files["results.md"], markdown_table(results) + "\n\n" + worst_classes(results, shown) + "\n")
  paths.write_text(files["per_class.csv"], per_class_csv(results))
  written = [files["results.json"], files["results.md"], files["per_class.csv"]]
  if results.get("weight_norms"):
    _plot_weight_norms(results, order, files["weight_norms.png"])
    written.append(files["weight_norms.png"])
  if results.get("tau_curves"):
    _plot_tau_curves(results, files["tau_curves.png"])
    written.append(files["tau_curves.png"])
  _plot_per_class(results, counts, files["per_class_accuracy.png"])
  _plot_sampling(counts, order, config.train.epochs, files["sampling_weights.png"])
  written += [files["per_class_accuracy.png"], files["sampling_weights.png"]]
  if any("reliability" in r for r in results["methods"].values()):
    _plot_reliability(results, files["reliability.png"])
    written.append(files["reliability.png"])
  return written
