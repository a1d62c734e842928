"""Summary arithmetic over per-question results, the condition order and colours, the tables.

Longer than 450 lines: every text a reader of results sees (result, finetuning, augmentation
usability and study tables, the contamination check) is written here, so they share one
number format and one condition order.

Per-question records are the lines of `results/<run>/questions.jsonl` (`icl_ft.evaluation.evaluate`):

    {"dataset", "split", "subset", "condition", "id", "choices": [{"logprob", "num_tokens",
     "mean_logprob"}, ...], "metric", "predicted", "correct": [...], "is_correct"}

`summarize` groups them by (dataset, split, condition) into rows

    {"dataset", "split", "condition", "accuracy", "se", "n", "chance", "subset_se", "subsets",
     "by_subset"}

- n = the question evaluations of the group (with seeds pooled, each question once per seed);
- accuracy p = (evaluations answered correctly) / n;
- chance = mean over evaluations of |correct| / |choices| (a uniformly random pick; questions
  with several correct choices, e.g. syllogisms, count each correct one);
- se = THE reported standard error: binomial over question evaluations,

      se = sqrt( p (1 - p) / n )

  (seeds pooled: a question scored under 3 seeds counts 3 times). It is > 0 whenever
  0 < p < 1, however the questions fall into subsets; 0 only at p = 0 or 1.
- subset_se = the paper's error bars, for comparison only: with S >= 2 question subsets of
  accuracies a_1..a_S,

      subset_se = sqrt( sum_s (a_s - mean(a))^2 / (S - 1) ) / sqrt(S)

  (None with fewer than 2 subsets). It can be 0 with p strictly inside (0, 1) (equal subset
  accuracies), so it is never the ± of a table or a figure.
- subsets = S.
- by_subset = {subset: [correct, n]}: where an average hides a kind of question answered
  wrong (a syllogism's form, a relation), or a prior that answers one kind right.

`pool_seeds` pools per-seed rows (summary.json of a study) into the same seeds-pooled rows:
the counts add, so accuracy, se and chance equal `summarize` over the pooled records;
subset_se needs the per-question records and is None there.

The study's table notes (`context_shards_text`, `knowledge_text`) are here with the tables they
annotate; that puts the module a little over ~450 lines.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_ft.datasets import relabel

SUMMARY_KEYS = ("dataset", "split", "condition", "accuracy", "se", "n", "chance", "subset_se",
                "subsets", "by_subset")
# What a summary row must hold (summaries written before subset_se/subsets still read).
REQUIRED_SUMMARY_KEYS = SUMMARY_KEYS[:7]

# ---------------------------------------------------------------------------
# Conditions: one order and one colour each, for every table and figure
# ---------------------------------------------------------------------------

# The design's conditions in the paper's order: baselines, in context, finetuned.
CONDITION_ORDER = ("pretrained", "no_knowledge", "icl", "ft", "ft_split", "ft_aug_local",
                   "ft_aug_global", "ft_aug_all")
# Okabe-Ito colours (safe for the common colour-vision deficiencies); greys for the baselines,
# blues for plain finetuning, the remaining hues for the augmented conditions.
CONDITION_COLORS = {
    "pretrained": "#BBBBBB", "no_knowledge": "#555555", "icl": "#E69F00", "ft": "#0072B2",
    "ft_split": "#56B4E9", "ft_aug_local": "#009E73", "ft_aug_global": "#CC79A7",
    "ft_aug_all": "#D55E00"}
# For other names (e.g. "<run>:<condition>" when comparing runs): matplotlib's
# tableau-colorblind10, in order of first appearance.
OTHER_COLORS = ("#006BA4", "#FF800E", "#ABABAB", "#595959", "#5F9ED1", "#C85200", "#898989",
                "#A2C8EC", "#FFBC79", "#CFCFCF")


def condition_rank(name: str) -> int:
  """Position of a condition in CONDITION_ORDER ("<run>:<condition>" ranks as <condition>);
  unknown names rank after every known one."""
  base = name.rsplit(":", 1)[-1]
  return CONDITION_ORDER.index(base) if base in CONDITION_ORDER else len(CONDITION_ORDER)


def order_conditions(names: Iterable[str]) -> list[str]:
  """Distinct condition names in CONDITION_ORDER (ties keep their first-seen order)."""
  names = list(dict.fromkeys(names))
  return sorted(names, key=lambda c: (condition_rank(c), names.index(c)))


def condition_colors(names: Iterable[str]) -> dict[str, str]:
  """A colour per condition: CONDITION_COLORS for the design's names, OTHER_COLORS in turn
  for any other name."""
  out, others = {}, 0
  for name in order_conditions(names):
    if name in CONDITION_COLORS:
      out[name] = CONDITION_COLORS[name]
    else:
      out[name] = OTHER_COLORS[others % len(OTHER_COLORS)]
      others += 1
  return out


def order_rows(rows: Iterable[Mapping[str, Any]], datasets: Sequence[str] = (),
               splits: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
  """Rows sorted by dataset (`datasets`, then first seen), split (`splits[dataset]`, then first
  seen), condition (CONDITION_ORDER), seed."""
  rows = [dict(r) for r in rows]
  ds_rank = {d: i for i, d in enumerate(datasets)}
  split_rank = {(d, s): i for d, ss in (splits or {}).items() for i, s in enumerate(ss)}
  seen_ds: dict[str, int] = {}
  seen_split: dict[tuple[str, str], int] = {}
  seen_cond: dict[str, int] = {}
  for r in rows:
    seen_ds.setdefault(r["dataset"], len(seen_ds))
    seen_split.setdefault((r["dataset"], r["split"]), len(seen_split))
    seen_cond.setdefault(r["condition"], len(seen_cond))
  return sorted(rows, key=lambda r: (
      ds_rank.get(r["dataset"], len(ds_rank)), seen_ds[r["dataset"]],
      split_rank.get((r["dataset"], r["split"]), len(split_rank)),
      seen_split[(r["dataset"], r["split"])], condition_rank(r["condition"]),
      seen_cond[r["condition"]], r.get("seed", -1)))


# ---------------------------------------------------------------------------
# Reading and summarizing
# ---------------------------------------------------------------------------


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


def standard_error(accuracy: float, n: int) -> float:
  """Binomial SE sqrt(p (1 - p) / n) of an accuracy over n question evaluations; NaN if n < 1."""
  if n < 1:
    return float("nan")
  return math.sqrt(accuracy * (1.0 - accuracy) / n)


def subset_standard_error(subset_correct: Mapping[str, Sequence[bool]]) -> float | None:
  """The paper's SE: std of per-subset accuracies / sqrt(S); None with fewer than 2 subsets."""
  accs = [sum(map(bool, v)) / len(v) for v in subset_correct.values() if len(v)]
  s = len(accs)
  if s < 2:
    return None
  mean = sum(accs) / s
  return math.sqrt(sum((a - mean) ** 2 for a in accs) / (s - 1)) / math.sqrt(s)


def summarize(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Summary rows per (dataset, split, condition), in order of first appearance (module doc)."""
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
    accuracy = sum(bool(r["is_correct"]) for r in rs) / n
    rows.append({
        "dataset": dataset,
        "split": split,
        "condition": condition,
        "accuracy": accuracy,
        "se": standard_error(accuracy, n),
        "n": n,
        "chance": sum(question_chance(r) for r in rs) / n,
        "subset_se": subset_standard_error(by_subset),
        "subsets": len(by_subset),
        "by_subset": {name: [sum(hits), len(hits)] for name, hits in sorted(by_subset.items())},
        **_relabelling_accuracies(rs),
    })
  return rows


def _relabelling_accuracies(records: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
  """{"relabellings": accuracy per fresh-word mapping} for `no_knowledge` records scored over
  several mappings (`relabel.relabel_many` ids); {} otherwise."""
  by_draw: dict[int, list[bool]] = {}
  for r in records:
    k = relabel.relabelling_index(str(r["id"]))
    if k is None:
      return {}
    by_draw.setdefault(k, []).append(bool(r["is_correct"]))
  return {"relabellings": [sum(v) / len(v) for _, v in sorted(by_draw.items())]}


def pool_seeds(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per-seed summary rows pooled per (dataset, split, condition), first-seen order.

  Counts add (correct = round(accuracy * n)), so accuracy, se and chance are what `summarize`
  gives on the pooled records; subset_se is None (it needs the per-question records).
  """
  groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
  for r in rows:
    groups.setdefault((r["dataset"], r["split"], r["condition"]), []).append(r)
  out = []
  for (dataset, split, condition), rs in groups.items():
    n = sum(int(r["n"]) for r in rs)
    correct = sum(round(float(r["accuracy"]) * int(r["n"])) for r in rs)
    accuracy = correct / n
    out.append({
        "dataset": dataset, "split": split, "condition": condition, "accuracy": accuracy,
        "se": standard_error(accuracy, n), "n": n,
        "chance": sum(float(r["chance"]) * int(r["n"]) for r in rs) / n,
        "subset_se": None, "subsets": max((r.get("subsets") or 0) for r in rs) or None,
        **({"by_subset": _add_subset_counts(r["by_subset"] for r in rs)}
           if all("by_subset" in r for r in rs) else {}),
        **({"relabellings": [a for r in rs for a in r["relabellings"]]}
           if all(r.get("relabellings") for r in rs) else {})})
  return out


def _add_subset_counts(counts: Iterable[Mapping[str, Sequence[int]]]) -> dict[str, list[int]]:
  """Per-subset [correct, n] of several rows added up."""
  total: dict[str, list[int]] = {}
  for c in counts:
    for name, (correct, n) in c.items():
      t = total.setdefault(name, [0, 0])
      t[0] += int(correct)
      t[1] += int(n)
  return dict(sorted(total.items()))


def read_summary(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The rows of a `summary.json` (or of a run directory holding one)."""
  path = Path(path)
  if path.is_dir():
    path = path / "summary.json"
  rows = json.loads(path.read_text(encoding="utf-8"))
  if not isinstance(rows, list) or any(set(REQUIRED_SUMMARY_KEYS) - set(r) for r in rows):
    raise ResultsFormatError(
        f"{path}: not a summary (a list of rows with keys {REQUIRED_SUMMARY_KEYS})")
  return rows


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _num(value: Any, digits: int) -> str:
  """A number with `digits` decimals; "" for None/NaN."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return ""
  return f"{value:.{digits}f}"


SE_NOTE = ("± = binomial standard error over question evaluations, sqrt(p (1 - p) / n), "
           "seeds pooled (n counts a question once per seed)")
SUBSET_SE_NOTE = ("the paper's standard error across question subsets: std of the S subset "
                  "accuracies / sqrt(S); it is 0 whenever the subset accuracies agree, so it is "
                  "shown for comparison only")


def markdown_table(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
  """A markdown table of summary rows: accuracy, SE (binomial), subset SE (S subsets), n, chance."""
  lines = ["| dataset | split | condition | accuracy | SE | subset SE | subsets | n | chance |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['dataset']} | {r['split']} | {r['condition']} | "
                 f"{_num(r['accuracy'], digits)} | {_num(r['se'], digits)} | "
                 f"{_num(r.get('subset_se'), digits)} | {r.get('subsets') or ''} | {r['n']} | "
                 f"{_num(r['chance'], digits)} |")
  return "\n".join(lines) + "\n"


def pivot_table(rows: Sequence[Mapping[str, Any]], digits: int = 3,
                conditions: Sequence[str] | None = None, se_key: str = "se") -> str:
  """Rows as one markdown table: a column per condition, cells "accuracy ± rows[se_key]".

  Columns follow `conditions` when given, else CONDITION_ORDER over the conditions present.
  """
  conditions = list(conditions) if conditions else order_conditions(r["condition"] for r in rows)
  cells: dict[tuple[str, str], dict[str, str]] = {}
  chance: dict[tuple[str, str], float] = {}
  for r in rows:
    key = (r["dataset"], r["split"])
    se = _num(r.get(se_key), digits)
    cells.setdefault(key, {})[r["condition"]] = (
        f"{_num(r['accuracy'], digits)} ± {se}" if se else f"{_num(r['accuracy'], digits)}")
    chance[key] = r["chance"]
  lines = ["| dataset | split | " + " | ".join(conditions) + " | chance |",
           "|---|---|" + "---:|" * (len(conditions) + 1)]
  for (dataset, split), by_cond in cells.items():
    vals = " | ".join(by_cond.get(c, "") for c in conditions)
    lines.append(f"| {dataset} | {split} | {vals} | {_num(chance[(dataset, split)], digits)} |")
  return "\n".join(lines) + "\n"


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


def finetuning_note(stats: Sequence[Mapping[str, Any]]) -> str:
  """What the finetuned conditions of each dataset share and how their data differ, as measured
  in `stats` (no claim the records do not show)."""
  by_dataset: dict[str, list[Mapping[str, Any]]] = {}
  for s in stats:
    by_dataset.setdefault(str(s["dataset"]), []).append(s)
  lines = []
  for dataset, ss in by_dataset.items():
    parts = []
    for key, what in (("steps", "steps"), ("batch_size", "batch size"), ("seq_len", "seq len")):
      values = sorted({s.get(key) for s in ss if s.get(key) is not None})
      if len(values) == 1:
        parts.append(f"the same {what} ({values[0]})")
      elif values:
        parts.append(f"{what} {', '.join(map(str, values))}")
    tokens = [float(s["loss_tokens_seen"]) for s in ss if s.get("loss_tokens_seen")]
    epochs = [float(s["epochs"]) for s in ss
              if isinstance(s.get("epochs"), (int, float)) and math.isfinite(s["epochs"])]
    if tokens:
      parts.append(f"target tokens trained {min(tokens):.0f}-{max(tokens):.0f} "
                   f"({max(tokens) / min(tokens):.2f}x)")
    if epochs:
      parts.append(f"epochs {min(epochs):.1f}-{max(epochs):.1f}")
    lines.append(f"- {dataset}: " + "; ".join(parts) + ".")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Augmentation usability
# ---------------------------------------------------------------------------

_AUGMENT_KEY = re.compile(r"^augment/(?P<dataset>.+)/(?P<kind>[^/]+)_s(?P<seed>-?\d+)$")


def audits_from_stages(stages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Audit rows (the shape of `plots.load_audits`) from a study's augment stage records
  (`stages/augment__*.json` or study.json's "stages")."""
  rows = []
  for s in stages:
    m = _AUGMENT_KEY.match(str(s.get("key", "")))
    audit = (s.get("info") or {}).get("audit")
    if s.get("kind") != "augment" or not m or not isinstance(audit, Mapping):
      continue
    rows.append({"run": "", "dataset": f"{m['dataset']}_aug_{m['kind']}_s{m['seed']}",
                 "source": m["dataset"], "strategy": m["kind"], "seed": int(m["seed"]),
                 "total": int(audit.get("total", 0)), "correct": int(audit.get("correct", 0)),
                 "precision": audit.get("precision"), "counts": dict(audit.get("counts", {}))})
  return rows


def pool_audits(audits: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Audit rows summed per (run, source dataset, kind): how many generated statements were
  parsed (read as claims: true + false, icl_ft.augment.audit) and how many were true."""
  groups: dict[tuple[str, str, str], dict[str, Any]] = {}
  for a in audits:
    key = (str(a.get("run", "")), str(a["source"]), str(a["strategy"]))
    g = groups.setdefault(key, {"run": key[0], "dataset": key[1], "kind": key[2], "cards": 0,
                                "generated": 0, "parsed": 0, "true": 0, "counts": {}})
    g["cards"] += 1
    g["generated"] += int(a["total"])
    g["true"] += int(a["correct"])
    g["parsed"] += int(a["correct"]) + int(a["counts"].get("false", 0))
    for label, n in a["counts"].items():
      g["counts"][label] = g["counts"].get(label, 0) + int(n)
  return list(groups.values())


def usability_table(audits: Sequence[Mapping[str, Any]]) -> str:
  """Markdown: per dataset and augmentation kind (seeds pooled), the generated statements, how
  many parsed and how many were true, and the audit labels."""
  pooled = pool_audits(audits)
  if not pooled:
    return "No augmented datasets (no augmentation audit) in these results.\n"
  runs = len({p["run"] for p in pooled}) > 1
  lines = [("| run " if runs else "") + "| dataset | kind | seeds | generated | parsed | true | "
           "parsed % | true / parsed | labels |",
           ("|---" if runs else "") + "|---|---|---:|---:|---:|---:|---:|---:|---|"]
  for p in pooled:
    parsed_pct = f"{100 * p['parsed'] / p['generated']:.1f}" if p["generated"] else ""
    precision = f"{p['true'] / p['parsed']:.3f}" if p["parsed"] else ""
    labels = ", ".join(f"{k} {v}" for k, v in sorted(p["counts"].items()))
    lines.append((f"| {p['run']} " if runs else "") +
                 f"| {p['dataset']} | {p['kind']} | {p['cards']} | {p['generated']} | "
                 f"{p['parsed']} | {p['true']} | {parsed_pct} | {precision} | {labels} |")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# A study's table.md
# ---------------------------------------------------------------------------


def weights_line(info: Mapping[str, Any] | None) -> str:
  """table.md's line on named checkpoint weights (source, quantization), or "" for others."""
  return f"Weights: {info['source']}, {info['weights']}.\n\n" if info else ""


def study_table(run: str, rows: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                subsamples: Mapping[str, Mapping[Any, int]],
                finetuning: Sequence[Mapping[str, Any]],
                audits: Sequence[Mapping[str, Any]], note: str = "", weights: str = "") -> str:
  """The text of a study's table.md from its seeds-pooled rows and records (`note`: a
  paragraph after the accuracy table; `weights`: a line on the model's weights before it)."""
  out = (f"Study {run}: accuracy per dataset, test split and condition, seeds {list(seeds)} "
         f"pooled; {SE_NOTE}; chance = a uniform random choice.\n\n" + weights + pivot_table(rows))
  if any(r.get("subset_se") is not None for r in rows):
    out += (f"\nThe same accuracies ± {SUBSET_SE_NOTE} (no ±: fewer than 2 subsets):\n\n"
            + pivot_table(rows, se_key="subset_se"))
  if note:
    out += f"\n{note}\n"
  factors = []  # per dataset, in the rows' order
  for name in dict.fromkeys([*(r["dataset"] for r in rows), *subsamples]):
    if name in subsamples:
      values = sorted(set(subsamples[name].values()))
      factors.append(f"{name} {values[0] if len(values) == 1 else dict(subsamples[name])}")
  if factors:
    out += f"\nICL documents subsample factor: {', '.join(factors)}.\n"
  if audits:
    out += ("\nAugmentation usability per dataset and kind (seeds pooled): generated statements, "
            "those the audit could read as claims (parsed) and those true to the dataset's "
            "knowledge (icl_ft.augment.audit); every generated statement is trained on:\n\n"
            + usability_table(audits))
  if finetuning:
    out += ("\nFinetuning data per condition and seed (target tokens: the positions the loss "
            "is computed on; epochs = target tokens trained / target tokens per epoch). "
            "Per dataset, over its finetuned conditions:\n\n" + finetuning_note(finetuning)
            + "\n" + finetuning_table(finetuning))
  return out


def context_shards_text(context_shards: Mapping[str, int]) -> str:
  """The table's line naming the datasets whose ICL documents were split into shards."""
  used = ", ".join(f"{n} {k}" for n, k in context_shards.items() if k)
  if not used:
    return ""
  return ("\nICL context shards (the training documents did not fit the model's context; each "
          f"question scored against a shard stating every fact it depends on): {used}.\n")


def knowledge_check(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per (dataset, split) with both: is `pretrained` within 2 SE of `no_knowledge`?

  Rows are `summarize` rows (seeds pooled). With K >= 2 fresh-word mappings
  (`relabellings`), a model that knows nothing sees the real words as one more draw of words:
  SE = s sqrt(1 + 1/K), s the sd of the K mappings' accuracies, at least one mapping's
  binomial SE (the spread word choice alone gives, which a binomial SE over questions that
  share words understates). With one mapping, sqrt(se_pretrained^2 + se_no_knowledge^2).
  """
  cells = {(r["dataset"], r["split"], r["condition"]): r for r in rows}
  out = []
  for (dataset, split, condition), p in cells.items():
    n = cells.get((dataset, split, "no_knowledge"))
    if condition != "pretrained" or n is None:
      continue
    diff = float(p["accuracy"]) - float(n["accuracy"])
    draws = n.get("relabellings") or []
    if len(draws) >= 2:
      k = len(draws)
      one = standard_error(float(n["accuracy"]), int(n["n"]) // k)
      se = max(statistics.stdev(draws), one) * math.sqrt(1 + 1 / k)
    else:
      se = math.sqrt(float(p["se"]) ** 2 + float(n["se"]) ** 2)
    out.append({"dataset": dataset, "split": split, "pretrained": p["accuracy"],
                "no_knowledge": n["accuracy"], "difference": diff, "se": se,
                "relabellings": len(draws) or 1,
                "within_2se": bool(abs(diff) <= 2 * se) if math.isfinite(se) else None})
  return out


def knowledge_text(checks: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
  """table.md's contamination check: a row per split and the verdict over all of them."""
  if not checks:
    return ""
  lines = ["", "Contamination check: `pretrained` within 2 SE of `no_knowledge` (the same "
           "questions over K fresh-word mappings; if the model knows nothing, the real words "
           "are one more draw of words, so SE = s x sqrt(1 + 1/K), s = the spread (sd) of "
           "no_knowledge's accuracy over the K mappings, at least one mapping's binomial SE; "
           "with one mapping, sqrt(SE_pretrained² + SE_no_knowledge²)):", "",
           "| dataset | split | pretrained | no_knowledge | difference | 2 SE | within 2 SE |",
           "|---|---|---:|---:|---:|---:|---|"]
  for c in checks:
    verdict = {True: "yes", False: "**no**", None: "n/a"}[c["within_2se"]]
    lines.append(f"| {c['dataset']} | {c['split']} | {c['pretrained']:.{digits}f} | "
                 f"{c['no_knowledge']:.{digits}f} | {c['difference']:+.{digits}f} | "
                 f"{2 * c['se']:.{digits}f} | {verdict} |")
  ok = sum(c["within_2se"] is True for c in checks)
  lines += ["", f"`pretrained` within 2 SE of `no_knowledge` on {ok} of {len(checks)} splits"
            + (" (every split)." if ok == len(checks) else ".")]
  return "\n".join(lines) + "\n"
