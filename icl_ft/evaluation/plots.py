"""Analysis helpers for notebooks/analysis.ipynb and the study report: load results, draw figures.

A results directory is an `icl-ft-eval` run (`questions.jsonl`, `summary.json`) or an
`icl-ft-study` run (`summary.json` at the top, `eval/<dataset>/<condition>/questions.jsonl`
below, augmented datasets' `data/*/card.json`). Everything is found by globbing, so any mix of
runs (e.g. one eval run per condition of a Gemma model, copied back from GCS) loads together;
a directory holding only a summary.json (a committed study, docs/results/full) loads its rows.

  rows = load_rows(dirs)                              # seeds-pooled summary rows
  accuracy_figure(rows, "figures/accuracy.png")        # the paper-style figure
  subset_figure(load_records(dirs), "figures/subsets.png")  # accuracy per question subset
  audit_figure(load_audits(dirs), "figures/audit.png")  # augmentation audit labels

Every figure draws its conditions in report.CONDITION_ORDER with report's colours (the table's
order), one panel per (dataset, split) on a grid. Pure Python apart from matplotlib (Agg
backend, PNG written atomically).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_ft import fileio
from icl_ft.evaluation import report

QUESTIONS_FILE = "questions.jsonl"  # icl_ft.evaluation.evaluate.QUESTIONS_FILE (no JAX import here)
SUMMARY_FILE = "summary.json"
STUDY_FILE = "study.json"  # icl_ft.study.outputs.STUDY_FILE
NOTEBOOK = Path("notebooks") / "analysis.ipynb"  # marks the repository root
DPI = 150
PANEL_INCHES = (2.7, 2.3)  # width, height of one panel
MAX_COLUMNS = 4


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def repo_root(start: str | os.PathLike[str] | None = None) -> Path | None:
  """The repository holding `start` (default: the working directory), found by walking up to
  the directory with notebooks/analysis.ipynb; None outside a checkout (e.g. Colab)."""
  here = Path(start or os.getcwd()).resolve()
  for d in (here, *here.parents):
    if (d / NOTEBOOK).is_file():
      return d
  return None


def default_results(start: str | os.PathLike[str] | None = None) -> Path:
  """The notebook's default results: `<repository>/results` when it exists, else the committed
  study `<repository>/docs/results/full`; `./results` outside a checkout."""
  root = repo_root(start)
  if root is None:
    return Path(start or os.getcwd()).resolve() / "results"
  results = root / "results"
  return results if results.is_dir() else root / "docs" / "results" / "full"


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
  """report.summarize over the records (seeds pooled), in report.order_rows order."""
  return report.order_rows(report.summarize(records))


def load_rows(dirs: Any, *, label_runs: bool = False) -> list[dict[str, Any]]:
  """Seeds-pooled summary rows of `dirs`: from the per-question records of a directory that
  has any, else from its summary.json (report.pool_seeds: no subset SE)."""
  records, pooled = [], []
  for d in parse_dirs(dirs):
    recs = load_records([d], label_runs=label_runs)
    if recs:
      records += recs
      continue
    for r in report.pool_seeds(load_summaries([d])):
      if label_runs:
        r["condition"] = f"{d.name}:{r['condition']}"
      pooled.append(r)
  return report.order_rows(report.summarize(records) + pooled)


def subset_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Accuracy per (dataset, split, subset, condition), with n and the binomial SE; ordered."""
  groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
  for r in records:
    key = (r["dataset"], r["split"], str(r.get("subset", "")), r["condition"])
    groups.setdefault(key, []).append(r)
  rows = []
  for (d, s, sub, c), recs in groups.items():
    n = len(recs)
    p = sum(bool(r["is_correct"]) for r in recs) / n
    rows.append({"dataset": d, "split": s, "subset": sub, "condition": c, "accuracy": p,
                 "se": report.standard_error(p, n), "n": n,
                 "chance": sum(report.question_chance(r) for r in recs) / n})
  ordered = report.order_rows(rows)
  group = {}
  for r in ordered:
    group.setdefault((r["dataset"], r["split"], r["condition"]), len(group))
  return sorted(ordered, key=lambda r: (group[(r["dataset"], r["split"], r["condition"])],
                                        r["subset"]))


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
  """Augmentation audits: one row per augmented dataset card (card["augmentation"]["audit"]);
  for a directory without such cards, its study.json's augment stages (a committed study).

  Rows: run, dataset (directory name), source (original dataset), strategy, total, correct,
  precision, counts {label: n}. An empty list means there is nothing to audit.
  """
  rows = []
  for d in parse_dirs(dirs):
    mine = []
    for path in sorted(d.rglob("card.json")):
      try:
        card = json.loads(path.read_text(encoding="utf-8"))
      except (OSError, ValueError):
        continue
      aug = card.get("augmentation") if isinstance(card, dict) else None
      audit = aug.get("audit") if isinstance(aug, dict) else None
      if not isinstance(audit, dict):
        continue
      mine.append({"run": d.name, "dataset": path.parent.name,
                   "source": aug.get("source_name", card.get("name", "")),
                   "strategy": aug.get("strategy", ""), "total": audit.get("total", 0),
                   "correct": audit.get("correct", 0), "precision": audit.get("precision"),
                   "counts": dict(audit.get("counts", {}))})
    if not mine and (d / STUDY_FILE).is_file():
      study = json.loads((d / STUDY_FILE).read_text(encoding="utf-8"))
      mine = [{**a, "run": d.name} for a in report.audits_from_stages(study.get("stages", []))]
    rows += mine
  return rows


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=DPI)
  plt.close(fig)
  os.replace(tmp, path)
  return path


def grid_shape(panels: int) -> tuple[int, int]:
  """(rows, columns) for `panels` panels: at most MAX_COLUMNS wide, fewest empty slots."""
  if panels <= MAX_COLUMNS:
    return 1, max(1, panels)
  cols = min(range(3, MAX_COLUMNS + 1), key=lambda c: (-panels % c, -c))
  return math.ceil(panels / cols), cols


def _panels(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
  return list(dict.fromkeys((r["dataset"], r["split"]) for r in rows))


def _title(dataset: str, split: str) -> str:
  return f"{dataset.replace('_', ' ')}\n{split.replace('_', ' ')}"


def _panel_grid(plt: Any, n: int, title: str):
  """A figure with n panels on a grid (shared y), the axes of the panels and the spare slots."""
  nrows, ncols = grid_shape(n)
  w, h = PANEL_INCHES
  fig, axes = plt.subplots(nrows, ncols, figsize=(0.6 + w * ncols, 0.9 + h * nrows),
                           sharey=True, squeeze=False, layout="constrained")
  flat = list(axes.flat)
  if title:  # wrapped to the figure's width (~0.09 in per character at 11 pt)
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() / 0.09)), fontsize=11)
  return fig, flat[:n], flat[n:]


def _legend(fig: Any, spare: Sequence[Any], handles: list[Any], labels: list[str]) -> None:
  """The legend in the first spare grid slot (no empty slot left), else below the panels."""
  for ax in spare:
    ax.axis("off")
  if spare:
    spare[0].legend(handles, labels, loc="center", frameon=False, fontsize=9)
  else:
    ncol = len(labels) if len(labels) <= 9 else math.ceil(len(labels) / 2)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, fontsize=9)


def _style_axes(ax: Any, first_column: bool) -> None:
  ax.set_ylim(0, 1.05)  # room for a subset dot or an error bar at 1
  ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
  ax.grid(axis="y", color="#DDDDDD", linewidth=0.6)
  ax.set_axisbelow(True)
  ax.set_xticks([])
  ax.spines[["top", "right"]].set_visible(False)
  if first_column:
    ax.set_ylabel("accuracy")


def _finite(value: Any) -> float:
  return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def accuracy_figure(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *,
                    title: str = "") -> Path:
  """The paper-style figure: a panel per (dataset, split), a bar per condition with its SE
  (the rows' `se`), the chance level dashed. Written as PNG."""
  if not rows:
    raise ValueError("no summary rows to plot")
  plt = _pyplot()
  colors = report.condition_colors(r["condition"] for r in rows)
  cell = {(r["dataset"], r["split"], r["condition"]): r for r in rows}
  panels = _panels(rows)
  _, ncols = grid_shape(len(panels))
  fig, axes, spare = _panel_grid(plt, len(panels), title)
  handles: dict[str, Any] = {}
  for k, (ax, (dataset, split)) in enumerate(zip(axes, panels)):
    present = [c for c in colors if (dataset, split, c) in cell]
    for x, condition in enumerate(present):
      r = cell[(dataset, split, condition)]
      handles[condition] = ax.bar(x, r["accuracy"], 0.8, yerr=_finite(r["se"]),
                                  color=colors[condition], edgecolor="black", linewidth=0.4,
                                  capsize=2, error_kw={"elinewidth": 0.9})
    chance = cell[(dataset, split, present[0])]["chance"]
    handles["chance"] = ax.axhline(chance, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(-0.6, len(present) - 0.4)
    ax.set_title(_title(dataset, split), fontsize=10)
    _style_axes(ax, k % ncols == 0)
  labels = [c for c in colors if c in handles] + ["chance"]
  _legend(fig, spare, [handles[lab] for lab in labels], labels)
  return _save(fig, path)


def curve_figure(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *,
                 xlabel: str, title: str = "") -> Path:
  """Accuracy against a quantity (rows: dataset, split, series, x, accuracy, se, chance): a
  panel per (dataset, split), a line with SE bars per series, the chance level dashed."""
  if not rows:
    raise ValueError("no curve rows to plot")
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top

  plt = _pyplot()
  series = list(dict.fromkeys(r["series"] for r in rows))
  colors = dict(zip(series, itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])))
  panels = _panels(rows)
  _, ncols = grid_shape(len(panels))
  fig, axes, spare = _panel_grid(plt, len(panels), title)
  handles: dict[str, Any] = {}
  for k, (ax, (dataset, split)) in enumerate(zip(axes, panels)):
    cell = [r for r in rows if (r["dataset"], r["split"]) == (dataset, split)]
    for name in series:
      pts = sorted((r["x"], r["accuracy"], _finite(r["se"])) for r in cell if r["series"] == name)
      if pts:
        xs, ys, es = zip(*pts)
        handles[name] = ax.errorbar(xs, ys, yerr=es, color=colors[name], marker="o",
                                    markersize=3, linewidth=1, capsize=2)
    handles["chance"] = ax.axhline(cell[0]["chance"], color="black", linestyle="--", linewidth=1)
    ax.set_title(_title(dataset, split), fontsize=10)
    _style_axes(ax, k % ncols == 0)
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))  # 1.2e7 -> 12M
    ax.set_xlabel(xlabel, fontsize=8)
  labels = [n for n in series if n in handles] + ["chance"]
  _legend(fig, spare, [handles[lab] for lab in labels], labels)
  return _save(fig, path)


def subset_figure(records: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
  """Accuracy per question subset: a panel per (dataset, split), per condition a light bar at
  the pooled accuracy and a dot per subset (area ~ its questions). Written as PNG."""
  records = list(records)
  rows = subset_rows(records)
  if not rows:
    raise ValueError("no records to break down by subset")
  plt = _pyplot()
  pooled = {(r["dataset"], r["split"], r["condition"]): r for r in summary_rows(records)}
  colors = report.condition_colors(r["condition"] for r in rows)
  panels = _panels(rows)
  _, ncols = grid_shape(len(panels))
  fig, axes, spare = _panel_grid(plt, len(panels), "Accuracy per question subset "
                                 "(dots: subsets, area ~ questions; bars: all questions)")
  handles: dict[str, Any] = {}
  for k, (ax, (dataset, split)) in enumerate(zip(axes, panels)):
    present = [c for c in colors if (dataset, split, c) in pooled]
    subsets = sorted({r["subset"] for r in rows if (r["dataset"], r["split"]) == (dataset, split)})
    for x, condition in enumerate(present):
      handles[condition] = ax.bar(x, pooled[(dataset, split, condition)]["accuracy"], 0.8,
                                  color=colors[condition], alpha=0.35, edgecolor="none")
      mine = [r for r in rows if (r["dataset"], r["split"], r["condition"]) ==
              (dataset, split, condition)]
      for r in mine:  # subsets spread evenly across the bar, in name order
        offset = (subsets.index(r["subset"]) + 0.5) / len(subsets) - 0.5
        ax.scatter(x + 0.6 * offset, r["accuracy"], s=6 + 60 * math.sqrt(r["n"] / 40),
                   color=colors[condition], edgecolor="black", linewidth=0.4, zorder=3)
    chance = pooled[(dataset, split, present[0])]["chance"]
    handles["chance"] = ax.axhline(chance, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(-0.6, len(present) - 0.4)
    count = f"{len(subsets)} subset" + ("" if len(subsets) == 1 else "s")
    ax.set_title(f"{_title(dataset, split)} ({count})", fontsize=10)
    _style_axes(ax, k % ncols == 0)
  labels = [c for c in colors if c in handles] + ["chance"]
  _legend(fig, spare, [handles[lab] for lab in labels], labels)
  return _save(fig, path)


# Audit labels (icl_ft.augment.audit) in reading order: true ones, then false, then unread.
AUDIT_LABELS = ("restatement", "inference", "test answer", "false", "unparsed")
AUDIT_COLORS = {"restatement": "#0072B2", "inference": "#009E73", "test answer": "#E69F00",
                "false": "#D55E00", "unparsed": "#BBBBBB"}


def audit_figure(audits: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path | None:
  """Share of each audit label per augmented dataset and kind (seeds pooled), as horizontal
  stacked bars with the statement count; None if there are no audits."""
  pooled = report.pool_audits(audits)
  if not pooled:
    return None
  plt = _pyplot()
  runs = len({p["run"] for p in pooled}) > 1
  names = [(f"{p['run']}: " if runs else "") + f"{p['dataset'].replace('_', ' ')} · {p['kind']}"
           for p in pooled]
  shares = []
  for p in pooled:
    merged: dict[str, int] = {}
    for label, n in p["counts"].items():
      label = "test answer" if label.startswith("test:") else label
      merged[label] = merged.get(label, 0) + n
    shares.append({k: v / max(1, p["generated"]) for k, v in merged.items()})
  labels = [lab for lab in AUDIT_LABELS if any(lab in s for s in shares)]
  labels += sorted({lab for s in shares for lab in s} - set(labels))
  others = itertools.cycle(report.OTHER_COLORS)
  fig, ax = plt.subplots(figsize=(7.5, max(2.2, 1.3 + 0.32 * len(pooled))), layout="constrained")
  y = list(range(len(pooled)))[::-1]  # first row on top
  left = [0.0] * len(pooled)
  for lab in labels:
    values = [s.get(lab, 0.0) for s in shares]
    ax.barh(y, values, 0.7, left=left, label=lab,
            color=AUDIT_COLORS.get(lab) or next(others), edgecolor="white", linewidth=0.5)
    left = [a + b for a, b in zip(left, values)]
  for yi, p in zip(y, pooled):
    ax.text(1.01, yi, f"{p['generated']}", va="center", fontsize=8)
  ax.text(1.01, len(pooled) - 0.35, "statements", fontsize=8, va="bottom")
  ax.set_yticks(y)
  ax.set_yticklabels(names, fontsize=8)
  ax.set_xlim(0, 1)
  ax.set_ylim(-0.6, len(pooled) - 0.4)
  ax.set_xlabel("share of generated statements (seeds pooled)")
  ax.spines[["top", "right"]].set_visible(False)
  fig.legend(loc="outside upper center", ncol=len(labels), frameon=False, fontsize=8)
  return _save(fig, path)


# ---------------------------------------------------------------------------
# A committed study's report, again
# ---------------------------------------------------------------------------


def rebuild_study_report(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
  """table.md and figure.png of a study directory from its summary.json and study.json alone
  (e.g. docs/results/full, whose per-question records are not committed)."""
  run_dir = Path(run_dir)
  per_seed = report.read_summary(run_dir)
  study = json.loads((run_dir / STUDY_FILE).read_text(encoding="utf-8"))
  rows = report.order_rows(report.pool_seeds(per_seed))
  seeds = sorted({int(r["seed"]) for r in per_seed if "seed" in r})
  note = ("Rebuilt from summary.json (per seed: accuracy, n, chance) and study.json; the paper's "
          "SE across question subsets needs the per-question records, so it is given per seed "
          "only (summary.json: subset_se, subsets).\n"
          + report.knowledge_text(report.knowledge_check(rows))).strip()
  table = report.study_table(run_dir.name, rows, seeds, study.get("icl_subsample", {}),
                             study.get("finetuning", []),
                             report.audits_from_stages(study.get("stages", [])), note=note,
                             weights=report.weights_line(study.get("weights")))
  fileio.atomic_write(table_path := run_dir / "table.md", table)
  return table_path, accuracy_figure(rows, run_dir / "figure.png", title=study_title(run_dir.name))


def study_title(run: str) -> str:
  """The study figure's title."""
  return (f"Study {run}: accuracy by test split (± binomial SE over questions, seeds pooled; "
          "dashed: chance)")
