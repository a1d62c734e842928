"""Analysis helpers for notebooks/analysis.ipynb: load results directories, draw the figures.

A results directory is an `icl-ft-eval` run (`questions.jsonl`, `summary.json`) or an
`icl-ft-study` run (`summary.json` at the top, `eval/<dataset>/<condition>/questions.jsonl`
below, augmented datasets' `data/*/card.json`). Everything is found by globbing, so any mix of
runs (e.g. one eval run per condition of a Gemma model, copied back from GCS) loads together.

  records = load_records(["results/gemma2_2b-pretrained", "results/gemma2_2b-icl"])
  main_figure(records, "figures/accuracy.png")       # icl_ft.report.plot_results
  subset_figure(records, "figures/subsets.png")       # accuracy per question subset
  audit_figure(load_audits(dirs), "figures/audit.png")  # augmentation audit labels

Pure Python apart from matplotlib (Agg backend, PNG written atomically).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_ft import report

QUESTIONS_FILE = "questions.jsonl"  # icl_ft.evaluate.QUESTIONS_FILE (no JAX import here)
SUMMARY_FILE = "summary.json"
# The design's condition names, in the paper's order; others follow in first-seen order.
CONDITION_ORDER = ("pretrained", "icl", "ft", "ft_split", "ft_aug_local", "ft_aug_global",
                   "ft_aug_all")


def parse_dirs(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
  """Results directories from a comma-separated string or a list; each must exist."""
  if isinstance(value, (str, os.PathLike)):
    items = os.fspath(value).split(",")
  else:
    items = [os.fspath(v) for v in value]
  dirs = [Path(s.strip()) for s in items if s and s.strip()]
  missing = [str(d) for d in dirs if not d.is_dir()]
  if missing:
    raise FileNotFoundError(f"results directory not found: {', '.join(missing)}")
  if not dirs:
    raise ValueError("no results directories given")
  return dirs


def load_records(dirs: Any, *, label_runs: bool = False) -> list[dict[str, Any]]:
  """Every per-question record under `dirs` (all questions.jsonl files, recursively).

  Each record gains `run` (the results directory's name). With `label_runs`, the condition
  becomes `<run>:<condition>`, to compare the same condition across runs (e.g. two models).
  """
  out = []
  for d in parse_dirs(dirs):
    for path in sorted(d.rglob(QUESTIONS_FILE)):
      for r in report.read_results(path):
        r = {**r, "run": d.name}
        if label_runs:
          r["condition"] = f"{d.name}:{r['condition']}"
        out.append(r)
  return out


def load_summaries(dirs: Any) -> list[dict[str, Any]]:
  """The rows of each directory's top-level summary.json, with `run` added (seed kept)."""
  rows = []
  for d in parse_dirs(dirs):
    path = d / SUMMARY_FILE
    if path.exists():
      rows += [{**r, "run": d.name} for r in report.read_summary(path)]
  return rows


def summary_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """report.summarize over the records (seeds pooled): datasets and splits in first-seen order,
  conditions in CONDITION_ORDER."""
  records = list(records)
  order: dict[tuple[str, str, str], int] = {}
  datasets: dict[str, int] = {}
  conditions: dict[str, int] = {}
  for r in records:
    datasets.setdefault(r["dataset"], len(datasets))
    conditions.setdefault(r["condition"], len(conditions))
    order.setdefault((r["dataset"], r["split"], r["condition"]), len(order))
  split_rank = {}
  for (d, s, _), i in order.items():
    split_rank.setdefault((d, s), i)
  def condition_rank(c: str) -> tuple[int, int]:
    base = c.rsplit(":", 1)[-1]  # "<run>:<condition>" with label_runs
    known = CONDITION_ORDER.index(base) if base in CONDITION_ORDER else len(CONDITION_ORDER)
    return known, conditions[c]

  return sorted(report.summarize(records),
                key=lambda r: (datasets[r["dataset"]], split_rank[(r["dataset"], r["split"])],
                               condition_rank(r["condition"])))


def subset_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Accuracy per (dataset, split, subset, condition), with n and the binomial SE."""
  groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
  for r in records:
    key = (r["dataset"], r["split"], str(r.get("subset", "")), r["condition"])
    groups.setdefault(key, []).append(r)
  rows = []
  for (d, s, sub, c), recs in groups.items():
    n = len(recs)
    p = sum(bool(r["is_correct"]) for r in recs) / n
    rows.append({"dataset": d, "split": s, "subset": sub, "condition": c, "accuracy": p,
                 "se": math.sqrt(p * (1 - p) / n), "n": n,
                 "chance": sum(report.question_chance(r) for r in recs) / n})
  return rows


def subset_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
  """Markdown of subset_rows: dataset, split, subset, condition, accuracy, SE, n, chance."""
  lines = ["| dataset | split | subset | condition | accuracy | SE | n | chance |",
           "|---|---|---|---|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['dataset']} | {r['split']} | {r['subset']} | {r['condition']} | "
                 f"{r['accuracy']:.{digits}f} | {r['se']:.{digits}f} | {r['n']} | "
                 f"{r['chance']:.{digits}f} |")
  return "\n".join(lines) + "\n"


def load_audits(dirs: Any) -> list[dict[str, Any]]:
  """Augmentation audits: one row per augmented dataset card (card["augmentation"]["audit"]).

  Rows: run, dataset (directory name), source (original dataset), strategy, total, correct,
  precision, counts {label: n}. Cards without an augmentation block are skipped; an empty
  list means there is nothing to audit.
  """
  rows = []
  for d in parse_dirs(dirs):
    for path in sorted(d.rglob("card.json")):
      try:
        card = json.loads(path.read_text(encoding="utf-8"))
      except (OSError, ValueError):
        continue
      aug = card.get("augmentation") if isinstance(card, dict) else None
      audit = aug.get("audit") if isinstance(aug, dict) else None
      if not isinstance(audit, dict):
        continue
      rows.append({"run": d.name, "dataset": path.parent.name,
                   "source": aug.get("source_name", card.get("name", "")),
                   "strategy": aug.get("strategy", ""), "total": audit.get("total", 0),
                   "correct": audit.get("correct", 0), "precision": audit.get("precision"),
                   "counts": dict(audit.get("counts", {}))})
  return rows


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)
  return path


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def main_figure(records: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], *,
                title: str = "") -> Path:
  """The paper-style figure (report.plot_results): accuracy by split, a bar per condition."""
  return report.plot_results(summary_rows(records), path, title=title)


def subset_figure(records: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
  """One panel per (dataset, split): horizontal bars per subset, one per condition, SE bars."""
  rows = subset_rows(records)
  if not rows:
    raise ValueError("no records to break down by subset")
  plt = _pyplot()
  panels = list(dict.fromkeys((r["dataset"], r["split"]) for r in rows))
  conditions = list(dict.fromkeys(r["condition"] for r in rows))
  colors = plt.get_cmap("tab10").colors
  heights = [len({r["subset"] for r in rows if (r["dataset"], r["split"]) == p}) for p in panels]
  fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.2 + 0.3 * len(conditions) * sum(heights)),
                           gridspec_kw={"height_ratios": heights}, squeeze=False)
  bar = 0.8 / len(conditions)
  for ax, (dataset, split) in zip(axes[:, 0], panels):
    mine = [r for r in rows if (r["dataset"], r["split"]) == (dataset, split)]
    subsets = sorted({r["subset"] for r in mine})
    for r in mine:
      j = conditions.index(r["condition"])
      y = subsets.index(r["subset"]) - 0.4 + bar * (j + 0.5)
      ax.barh(y, r["accuracy"], bar, xerr=r["se"], color=colors[j % len(colors)], capsize=2,
              label=r["condition"])
    ax.set_yticks(range(len(subsets)))
    ax.set_yticklabels(subsets, fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_title(f"{dataset.replace('_', ' ')} / {split}", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
  handles, labels = [], []
  for ax in axes[:, 0]:
    for h, lab in zip(*ax.get_legend_handles_labels()):
      if lab not in labels:
        handles.append(h)
        labels.append(lab)
  axes[-1, 0].set_xlabel("accuracy")
  fig.legend(handles, labels, loc="upper right", fontsize=8, frameon=False)
  fig.tight_layout()
  return _save(fig, path)


def audit_figure(audits: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path | None:
  """Stacked label counts per augmented dataset, precision on top; None if there are none."""
  if not audits:
    return None
  plt = _pyplot()
  labels = sorted({lab for a in audits for lab in a["counts"]})
  colors = plt.get_cmap("tab10").colors
  fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(audits), 3.6))
  names = [f"{a['run']}\n{a['dataset']}" for a in audits]
  bottoms = [0.0] * len(audits)
  for i, lab in enumerate(labels):
    values = [a["counts"].get(lab, 0) for a in audits]
    ax.bar(range(len(audits)), values, 0.6, bottom=bottoms, label=lab, color=colors[i % len(colors)])
    bottoms = [b + v for b, v in zip(bottoms, values)]
  for i, a in enumerate(audits):
    p = a["precision"]
    ax.text(i, bottoms[i], "precision n/a" if p is None else f"precision {p:.2f}", ha="center",
            va="bottom", fontsize=8)
  ax.set_xticks(range(len(audits)))
  ax.set_xticklabels(names, fontsize=7)
  ax.set_ylabel("generated statements")
  ax.spines[["top", "right"]].set_visible(False)
  ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
  fig.tight_layout()
  return _save(fig, path)


def audit_table(audits: Sequence[Mapping[str, Any]]) -> str:
  """Markdown: one row per augmented dataset (strategy, total, correct, precision, counts)."""
  if not audits:
    return "No augmented datasets (no card.json with an augmentation audit) in these results.\n"
  lines = ["| run | dataset | strategy | statements | correct | precision | labels |",
           "|---|---|---|---:|---:|---:|---|"]
  for a in audits:
    p = "" if a["precision"] is None else f"{a['precision']:.3f}"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(a["counts"].items()))
    lines.append(f"| {a['run']} | {a['dataset']} | {a['strategy']} | {a['total']} | "
                 f"{a['correct']} | {p} | {counts} |")
  return "\n".join(lines) + "\n"
