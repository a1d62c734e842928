"""Summary arithmetic over per-question results, and the markdown table.

Per-question records are the lines of `results/<run>/questions.jsonl` (`icl_ft.evaluate`):

    {"dataset", "split", "subset", "condition", "id", "choices": [{"logprob", "num_tokens",
     "mean_logprob"}, ...], "metric", "predicted", "correct": [...], "is_correct"}

`summarize` groups them by (dataset, split, condition) into rows

    {"dataset", "split", "condition", "accuracy", "se", "n", "chance"}

- accuracy = (questions answered correctly) / n, over all n questions of the group;
- chance = mean over questions of |correct| / |choices| (a uniformly random pick; questions
  with several correct choices, e.g. syllogisms, count each correct one);
- se = the standard error of the mean of per-subset accuracies across subsets (the paper's
  error bars): with S >= 2 subsets of accuracies a_1..a_S,

      se = sqrt( sum_s (a_s - mean(a))^2 / (S - 1) ) / sqrt(S)

  and with a single subset the binomial standard error sqrt(p (1 - p) / n) of the accuracy p.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SUMMARY_KEYS = ("dataset", "split", "condition", "accuracy", "se", "n", "chance")


class ResultsFormatError(ValueError):
  """A results file is malformed (names the file and line)."""


def read_results(path: str | os.PathLike[str], *, allow_partial_last_line: bool = True
                 ) -> list[dict[str, Any]]:
  """The records of a per-question JSONL file.

  A last line without its newline (a run killed mid-write) is ignored when
  `allow_partial_last_line`; any other malformed line raises ResultsFormatError.
  """
  path = Path(path)
  out = []
  text = path.read_text(encoding="utf-8")
  lines = text.split("\n")
  for lineno, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    last_unterminated = lineno == len(lines) and not text.endswith("\n")
    try:
      obj = json.loads(line)
      if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    except ValueError as e:
      if last_unterminated and allow_partial_last_line:
        break
      raise ResultsFormatError(f"{path}:{lineno}: malformed result record: {e}") from None
    out.append(obj)
  return out


def question_chance(record: Mapping[str, Any]) -> float:
  """|correct| / |choices| of one record."""
  return len(set(record["correct"])) / len(record["choices"])


def standard_error(subset_correct: Mapping[str, Sequence[bool]]) -> float:
  """SE of the mean of per-subset accuracies; binomial SE with one subset (module doc)."""
  groups = [list(v) for v in subset_correct.values() if len(v)]
  if not groups:
    return float("nan")
  if len(groups) == 1:
    n = len(groups[0])
    p = sum(groups[0]) / n
    return math.sqrt(p * (1.0 - p) / n)
  accs = [sum(g) / len(g) for g in groups]
  s = len(accs)
  mean = sum(accs) / s
  var = sum((a - mean) ** 2 for a in accs) / (s - 1)
  return math.sqrt(var) / math.sqrt(s)


def summarize(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Summary rows per (dataset, split, condition), in order of first appearance."""
  groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
  for r in records:
    key = (str(r["dataset"]), str(r["split"]), str(r["condition"]))
    groups.setdefault(key, []).append(r)
  rows = []
  for (dataset, split, condition), rs in groups.items():
    by_subset: dict[str, list[bool]] = {}
    for r in rs:
      by_subset.setdefault(str(r["subset"]), []).append(bool(r["is_correct"]))
    n = len(rs)
    rows.append({
        "dataset": dataset,
        "split": split,
        "condition": condition,
        "accuracy": sum(bool(r["is_correct"]) for r in rs) / n,
        "se": standard_error(by_subset),
        "n": n,
        "chance": sum(question_chance(r) for r in rs) / n,
    })
  return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
  """A markdown table of summary rows: dataset, split, condition, accuracy ± SE, n, chance."""
  lines = ["| dataset | split | condition | accuracy | SE | n | chance |",
           "|---|---|---|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['dataset']} | {r['split']} | {r['condition']} | {r['accuracy']:.{digits}f} | "
                 f"{r['se']:.{digits}f} | {r['n']} | {r['chance']:.{digits}f} |")
  return "\n".join(lines) + "\n"


def pivot_table(rows: Sequence[Mapping[str, Any]], digits: int = 3,
                conditions: Sequence[str] | None = None) -> str:
  """Rows from several runs as one markdown table: a column per condition ("acc ± se").

  Columns follow `conditions` when given, else the conditions' first appearance in `rows`.
  """
  conditions = list(conditions or [])
  cells: dict[tuple[str, str], dict[str, str]] = {}
  chance: dict[tuple[str, str], float] = {}
  for r in rows:
    if r["condition"] not in conditions:
      conditions.append(r["condition"])
    key = (r["dataset"], r["split"])
    cells.setdefault(key, {})[r["condition"]] = f"{r['accuracy']:.{digits}f} ± {r['se']:.{digits}f}"
    chance[key] = r["chance"]
  lines = ["| dataset | split | " + " | ".join(conditions) + " | chance |",
           "|---|---|" + "---:|" * (len(conditions) + 1)]
  for (dataset, split), by_cond in cells.items():
    vals = " | ".join(by_cond.get(c, "") for c in conditions)
    lines.append(f"| {dataset} | {split} | {vals} | {chance[(dataset, split)]:.{digits}f} |")
  return "\n".join(lines) + "\n"


def read_summary(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The rows of a `summary.json` (or of a run directory holding one)."""
  path = Path(path)
  if path.is_dir():
    path = path / "summary.json"
  rows = json.loads(path.read_text(encoding="utf-8"))
  if not isinstance(rows, list) or any(set(SUMMARY_KEYS) - set(r) for r in rows):
    raise ResultsFormatError(f"{path}: not a summary (a list of rows with keys {SUMMARY_KEYS})")
  return rows


FINETUNING_COLUMNS = (
    ("dataset", "dataset"), ("condition", "condition"), ("seed", "seed"), ("format", "format"),
    ("documents", "documents"), ("examples", "examples"),
    ("target_tokens_per_epoch", "target tokens / epoch"), ("steps", "steps"),
    ("batch_size", "batch"), ("seq_len", "seq len"), ("loss_tokens_seen", "target tokens trained"),
    ("epochs", "epochs"), ("final_loss", "final loss"))


def finetuning_table(stats: Sequence[Mapping[str, Any]]) -> str:
  """A markdown table of what each finetuned condition trained on (icl_ft.study's records)."""
  lines = ["| " + " | ".join(title for _, title in FINETUNING_COLUMNS) + " |",
           "|" + "---|" * 4 + "---:|" * (len(FINETUNING_COLUMNS) - 4)]
  for s in stats:
    cells = []
    for key, _ in FINETUNING_COLUMNS:
      v = s.get(key)
      if isinstance(v, float):
        v = "" if not math.isfinite(v) else f"{v:.2f}" if key == "epochs" else f"{v:.4f}"
      cells.append("" if v is None else str(v))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot_results(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *,
                 title: str = "") -> Path:
  """The paper-style figure: a panel per dataset, a bar per condition per split, SE bars, chance.

  `rows` are summary rows (one per dataset x split x condition); the chance level of each split
  is a dashed line across its group of bars. Written as PNG with matplotlib's Agg backend.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  datasets: list[str] = []
  conditions: list[str] = []
  splits: dict[str, list[str]] = {}
  cell: dict[tuple[str, str, str], Mapping[str, Any]] = {}
  for r in rows:
    if r["dataset"] not in datasets:
      datasets.append(r["dataset"])
    if r["condition"] not in conditions:
      conditions.append(r["condition"])
    if r["split"] not in splits.setdefault(r["dataset"], []):
      splits[r["dataset"]].append(r["split"])
    cell[(r["dataset"], r["split"], r["condition"])] = r
  if not rows:
    raise ValueError("no summary rows to plot")
  colors = plt.get_cmap("tab10").colors
  widths = [max(1, len(splits[d])) for d in datasets]
  fig, axes = plt.subplots(1, len(datasets), figsize=(1.2 + 2.4 * sum(widths), 3.6),
                           gridspec_kw={"width_ratios": widths}, squeeze=False, sharey=True)
  bar = 0.8 / len(conditions)
  for ax, dataset in zip(axes[0], datasets):
    for i, split in enumerate(splits[dataset]):
      chance = None
      for j, condition in enumerate(conditions):
        r = cell.get((dataset, split, condition))
        if r is None:
          continue
        x = i - 0.4 + bar * (j + 0.5)
        se = r["se"] if isinstance(r["se"], (int, float)) and math.isfinite(r["se"]) else 0.0
        ax.bar(x, r["accuracy"], bar, yerr=se, color=colors[j % len(colors)], capsize=2,
               error_kw={"elinewidth": 0.8}, label=condition if i == 0 else None)
        chance = r["chance"]
      if chance is not None:
        ax.plot([i - 0.45, i + 0.45], [chance, chance], "k--", linewidth=1,
                label="chance" if i == 0 else None)
    ax.set_xticks(range(len(splits[dataset])))
    ax.set_xticklabels(splits[dataset], rotation=20 if len(splits[dataset]) > 2 else 0)
    ax.set_title(dataset.replace("_", " "))
    ax.set_ylim(0, 1.05)
    ax.spines[["top", "right"]].set_visible(False)
  axes[0][0].set_ylabel("accuracy")
  handles, labels = [], []
  for ax in axes[0]:
    for h, l in zip(*ax.get_legend_handles_labels()):
      if l not in labels:
        handles.append(h)
        labels.append(l)
  fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), frameon=False)
  if title:
    fig.suptitle(title)
  fig.tight_layout(rect=(0, 0.1, 1, 1))
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)
  return path
