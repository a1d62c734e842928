"""Run an evaluation: score datasets' test questions under one condition, write results/<run>/.

`evaluate(config)` (config = `configs/eval.py`) does, in order:

1. validation, before anything is written: the condition (`pretrained`, `icl`, `ft`,
   `ft_<name>`; finetuned ones need `model.checkpoint`), the run name, the metric, the dataset
   directories (`records.read_dataset`: a malformed line is an error naming `file:line`), the
   splits (each named split must exist in at least one dataset), the tokenizer against the
   model's vocabulary, the checkpoint's existence, and the context budget (below);
2. loads the model (`icl_ft.model.loader.load_model`, on the configured mesh);
3. per dataset: builds the condition's shared context (`icl_ft.evaluation.prompts.context_text`),
   prefills it once (`icl_ft.inference.scoring.ContextScorer`), and scores the questions of every split
   in groups of about `scoring.batch_size` (question, choice) rows; after each group its
   records are appended to `questions.jsonl` and flushed (tqdm shows questions/s). ICL with
   `icl.shards` and a training set too long for the context: one context per shard
   (`icl_ft.evaluation.contexts`: each question against a shard stating every fact it depends on,
   the shard's other documents as distractors), each prefilled once; records carry
   `context_shard`;
4. at the end, reads `questions.jsonl` back and writes `summary.json` and `table.md`
   (`icl_ft.evaluation.report`), each atomically.

`no_knowledge` (the contamination control): each dataset's questions with every nonsense word
and celebrity name replaced by fresh words (`icl_ft.datasets.relabel.relabel_many`:
`no_knowledge.relabellings` mappings from seed `no_knowledge.seed`, every mapping's questions
scored), scored like `pretrained` (no context); the relabelled datasets are written to
`relabelled/<dataset>/` for inspection.

Resuming: `run.json` records the settings that determine the scores (condition, model,
datasets, splits, prompt, ICL subsample, metric). Re-running the same config skips every
question already in `questions.jsonl` (a last line cut off by a kill is dropped) and then
rewrites the summary; a different config for an existing run is an error unless `overwrite`.

Context budget: if [BOS] + context + the longest prompt + choice exceeds the model's
`max_seq_len`, the run fails before scoring with a `ContextTooLongError` saying by how many
tokens, and (ICL) the smallest `icl.subsample` factor that would fit; with `icl.shards`
(default) and subsample 1, ICL splits the documents into shards instead, and only a question
whose facts cannot all be stated within the budget is an error (naming it). Nothing is
truncated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
from tqdm import tqdm

from icl_ft import fileio
from icl_ft import sharding
from icl_ft.datasets import records
from icl_ft.datasets import relabel
from icl_ft.evaluation import contexts
from icl_ft.evaluation import prompts
from icl_ft.evaluation import report
from icl_ft.inference import scoring
from icl_ft.model import loader

QUESTIONS_FILE = "questions.jsonl"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "table.md"
RUN_FILE = "run.json"
RELABELLED_DIR = "relabelled"  # no_knowledge: each dataset as scored (fresh words)

BASE_CONDITIONS = ("pretrained", "no_knowledge", "icl")
FINETUNED_PATTERN = re.compile(r"^ft(_[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def check_run_name(run: str) -> None:
  """ValueError unless `run` can name a run directory (letters, digits, _.=+-)."""
  if not _RUN_NAME.match(run):
    raise ValueError(f"config.run must name the run (letters, digits, _.=+-), got {run!r}")


@dataclasses.dataclass
class EvalResult:
  """What `evaluate` did."""

  run_dir: Path
  rows: list[dict[str, Any]]
  scored: int  # questions scored in this call
  skipped: int  # questions already in questions.jsonl
  seconds: float
  stats: dict[str, Any]


def parse_list(value: Any) -> list[str]:
  """A comma-separated string (or a sequence) as a list of non-empty stripped items."""
  if value is None:
    return []
  items = value.split(",") if isinstance(value, str) else list(value)
  return [str(s).strip() for s in items if str(s).strip()]


def check_condition(condition: str, checkpoint: str) -> None:
  """Raises ValueError for an unknown condition or a finetuned one without a checkpoint."""
  if condition in BASE_CONDITIONS:
    return
  if not FINETUNED_PATTERN.match(condition or ""):
    raise ValueError(f"unknown condition {condition!r}; valid: pretrained, no_knowledge, icl, ft "
                     "or ft_<name> "
                     "(a finetuned checkpoint in config.model.checkpoint)")
  if not checkpoint:
    raise ValueError(f"condition {condition!r} is a finetuned model: set config.model.checkpoint "
                     "to its checkpoint directory")


def prompt_format(config: Any) -> prompts.PromptFormat:
  return prompts.PromptFormat(chat=bool(config.prompt.chat))


def load_datasets(dirs: Sequence[str], splits: Sequence[str]
                  ) -> list[tuple[str, records.Dataset, str]]:
  """(name, dataset, directory) per directory, each with the requested splits it has (all if none given).

  A split named in `splits` that no dataset has is a ValueError listing the available ones; a
  dataset with none of the named splits (or only empty ones) is left out.
  """
  if not dirs:
    raise ValueError("no datasets: set config.datasets to dataset directories written by "
                     "icl-ft-data (comma-separated)")
  out = []
  available: dict[str, list[str]] = {}
  for d in dirs:
    if not Path(d).is_dir():
      raise FileNotFoundError(f"dataset directory not found: {d}")
    have = sorted(p.name[len(records.TEST_PREFIX):-len(".jsonl")]
                  for p in Path(d).glob(f"{records.TEST_PREFIX}*.jsonl"))
    available[d] = have
    wanted = [s for s in splits if s in have] if splits else have
    ds = records.read_dataset(d, splits=wanted)
    out.append((str(ds.name), ds, d))
  missing = [s for s in splits if not any(s in have for have in available.values())]
  if missing:
    raise ValueError(f"unknown split(s) {missing}; available: "
                     + "; ".join(f"{d}: {v}" for d, v in available.items()))
  names = [n for n, _, _ in out]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f"two dataset directories hold the same dataset name {dupes}; evaluate them "
                     "in separate runs")
  out = [(n, ds, d) for n, ds, d in out if any(ds.tests.values())]  # none of the selected splits
  if not out:
    raise ValueError(f"no test questions in the selected splits {list(splits) or 'all'} of {list(dirs)}")
  return out


def run_settings(config: Any, datasets: Sequence[tuple[str, records.Dataset, str]],
                 splits: Sequence[str]) -> dict[str, Any]:
  """The settings that determine the scores (stored in run.json, compared on resume)."""
  model = config.model
  icl = config.icl
  weights = loader.weights_info(model)  # named GGUF weights: their quantization
  return {
      "condition": config.condition,
      "model": {k: getattr(model, k) for k in ("preset", "checkpoint", "checkpoint_format",
                                             "tokenizer", "seed", "dtype", "param_dtype")},
      **({"weights": weights} if weights else {}),
      "datasets": [{"dir": os.path.abspath(d), "name": n, "seed": ds.card.get("seed"),
                    "scale": ds.card.get("scale"), "splits": sorted(ds.tests)}
                   for n, ds, d in datasets],
      "splits": list(splits),
      "prompt": dataclasses.asdict(prompt_format(config)),
      "icl": ({"subsample": int(icl.subsample), "seed": int(icl.seed),
               "shards": bool(icl.shards)}
              if contexts.uses_documents(config.condition) else None),
      **({"no_knowledge": {"seed": no_knowledge_seed(config),
                           "relabellings": int(config.no_knowledge.relabellings)}}
         if config.condition == relabel.CONTROL else {}),
      "metric": config.scoring.metric,
  }


def no_knowledge_seed(config: Any) -> int:
  """The seed of the `no_knowledge` fresh-word mapping (config.no_knowledge.seed)."""
  return int(config.no_knowledge.seed)


def _done_keys(path: Path, truncate_partial: bool) -> set[tuple[str, str, str]]:
  """(dataset, split, id) already in questions.jsonl; drops a cut-off last line."""
  if not path.exists():
    return set()
  if truncate_partial:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
      cut = data.rfind(b"\n") + 1
      with open(path, "r+b") as f:
        f.truncate(cut)
  return {(r["dataset"], r["split"], r["id"]) for r in report.read_results(path)}


def _groups(questions: Sequence[records.Question], rows_per_group: int
            ) -> Iterator[list[records.Question]]:
  """Consecutive groups of questions with about `rows_per_group` choices in total."""
  group: list[records.Question] = []
  rows = 0
  for q in questions:
    if group and rows + len(q.choices) > rows_per_group:
      yield group
      group, rows = [], 0
    group.append(q)
    rows += len(q.choices)
  if group:
    yield group


def _record(dataset: str, condition: str, s: scoring.QuestionScore,
            shard: int | None = None) -> dict[str, Any]:
  q = s.question
  return {"dataset": dataset, "split": q.split, "subset": q.subset, "condition": condition,
          "id": q.id, **s.to_json(), **({} if shard is None else {"context_shard": shard})}


def _model_max_len(model_cfg: Any) -> tuple[Any, int]:

  cfg = loader.model_config_from(model_cfg)
  return cfg, int(cfg.max_seq_len)


class NonFiniteScoreError(ValueError):
  """The model gave a NaN/inf log-probability: its scores would be meaningless."""


def check_scores_finite(scores: Sequence[scoring.QuestionScore], dataset: str) -> None:
  """NonFiniteScoreError naming the first question with a NaN/inf choice log-probability."""
  for s in scores:
    for c in s.choices:
      if not (math.isfinite(c.logprob) and math.isfinite(c.mean_logprob)):
        raise NonFiniteScoreError(
            f"non-finite log-probability {c.logprob} for question {s.question.id!r} of "
            f"{dataset}/{s.question.split}: the model's outputs are NaN/inf (diverged or "
            f"overflowing weights?); no scores of this group were recorded")


def unique_records(records_: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """`records_` with each (dataset, split, condition, id) once: the first written."""
  seen: set[tuple[Any, ...]] = set()
  out = []
  for r in records_:
    key = (r.get("dataset"), r.get("split"), r.get("condition"), r.get("id"))
    if key not in seen:
      seen.add(key)
      out.append(r)
  return out


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """questions.jsonl's records, each (dataset, split, condition, id) once: the first written."""
  return unique_records(report.read_results(path))


def has_duplicate_records(path: str | os.PathLike[str]) -> bool:
  """Whether questions.jsonl holds some question more than once."""
  written = report.read_results(path)
  return len(unique_records(written)) < len(written)


def _drop_duplicate_records(path: Path) -> None:
  """Rewrites questions.jsonl without repeated questions (left by an unlocked older run)."""
  if not path.exists():
    return
  written = report.read_results(path)
  unique = unique_records(written)
  if len(unique) < len(written):
    fileio.atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in unique))


def evaluate(config: Any) -> EvalResult:
  """Runs the evaluation described by `config` (configs/eval.py); see the module docstring.

  Holds the run directory's lock (`fileio.run_dir_lock`): a second process evaluating into
  the same run is refused at once.
  """

  check_condition(str(config.condition), config.model.checkpoint)
  check_run_name(str(config.run))  # before the lock creates the directory
  run_dir = Path(config.results_dir) / str(config.run)
  with fileio.run_dir_lock(run_dir, "evaluation run", enabled=jax.process_index() == 0):
    return _evaluate(config, run_dir)


def _evaluate(config: Any, run_dir: Path) -> EvalResult:
  """`evaluate` under the run directory's lock (`run_dir`: <results_dir>/<run>)."""
  start = time.perf_counter()
  condition = str(config.condition)
  model_cfg = config.model
  run = str(config.run)
  metric = config.scoring.metric
  if metric not in scoring.METRICS:
    raise ValueError(f"unknown scoring metric {metric!r}; valid: {list(scoring.METRICS)}")
  batch_size = int(config.scoring.batch_size)
  subsample = config.icl.subsample
  seed = int(config.icl.seed)
  prompts.subsample_documents([], subsample)  # validates the factor
  subsample = int(subsample)
  fmt = prompt_format(config)

  dirs = parse_list(config.datasets)
  splits = parse_list(config.splits)
  loaded = load_datasets(dirs, splits)
  if condition == relabel.CONTROL:  # the same questions over fresh words (icl_ft.datasets.relabel)
    loaded = [(n, relabel.relabel_many(ds, int(config.no_knowledge.relabellings),
                                       seed=no_knowledge_seed(config)), d) for n, ds, d in loaded]
  datasets = [(n, ds) for n, ds, _ in loaded]
  shards = bool(config.icl.shards)

  if not model_cfg.tokenizer:
    raise ValueError("config.model.tokenizer is required (a SentencePiece .model file)")
  checkpoint = model_cfg.checkpoint

  if (checkpoint and not loader.is_named(checkpoint) and "://" not in checkpoint
      and not os.path.exists(checkpoint)):
    raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
  loader.check_named_preset(model_cfg)
  cfg, max_len = _model_max_len(model_cfg)
  tokenizer = loader.load_tokenizer(model_cfg, cfg)  # vocab mismatch -> ValueError
  budgets = {name: contexts.plan_contexts(name, ds, condition, tokenizer, fmt, subsample, seed, max_len,
                                 shards)
             for name, ds in datasets}

  settings = run_settings(config, loaded, splits)
  run_file = run_dir / RUN_FILE
  overwrite = bool(config.overwrite)
  if not overwrite:
    fileio.check_run_dir(run_dir, RUN_FILE, settings, "an evaluation run")


  mesh, rules = sharding.mesh_from_config(config.mesh)
  model, _ = loader.load_model(model_cfg, mesh, rules)

  writer = jax.process_index() == 0
  questions_path = run_dir / QUESTIONS_FILE
  if writer:
    if overwrite and run_dir.exists():
      for name in (QUESTIONS_FILE, SUMMARY_FILE, TABLE_FILE, RUN_FILE):
        if (run_dir / name).exists():
          os.remove(run_dir / name)
    run_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write(run_file, json.dumps(fileio.portable_paths(settings, run_dir), indent=2,
                                             sort_keys=True) + "\n")
    if condition == relabel.CONTROL:  # the questions as scored, for inspection
      for name, ds in datasets:
        records.write_dataset(ds, run_dir / RELABELLED_DIR / name, overwrite=True)
  done = _done_keys(questions_path, truncate_partial=writer)
  if writer:
    _drop_duplicate_records(questions_path)

  todo = {name: {s: [q for q in qs if (name, s, q.id) not in done] for s, qs in ds.tests.items()}
          for name, ds in datasets}
  remaining = sum(len(qs) for by_split in todo.values() for qs in by_split.values())
  skipped = sum(len(qs) for _, ds in datasets for qs in ds.tests.values()) - remaining
  if writer and remaining:
    for name in (SUMMARY_FILE, TABLE_FILE):  # stale until this run finishes
      if (run_dir / name).exists():
        os.remove(run_dir / name)

  stats: dict[str, Any] = {"prefill_s": 0.0, "score_s": 0.0, "context_tokens": {},
                           # ICL shards per dataset; 0 = one context holding every document
                           "context_shards": {name: contexts.shard_count(budgets[name][0])
                                              for name, _ in datasets}}
  bar = tqdm(total=remaining, unit="q", dynamic_ncols=True,
             disable=not (config.progress and writer))
  out = open(questions_path, "a", encoding="utf-8") if writer else None
  try:
    for name, ds in datasets:
      if not any(todo[name].values()):
        continue
      plans, longest = budgets[name]
      stats["context_tokens"][name] = max(len(p.context_ids) for p in plans)
      for index, plan in enumerate(plans):
        mine = {s: [q for q in qs if plan.questions is None or (s, q.id) in plan.questions]
                for s, qs in todo[name].items()}
        if not any(mine.values()):
          continue
        scorer = scoring.ContextScorer(
            model, tokenizer, context_ids=plan.context_ids, batch_size=batch_size,
            max_suffix_len=longest, max_len=max_len,
            prefill_chunk=int(config.scoring.prefill_chunk), metric=metric,
            mesh=mesh, rules=rules)
        stats["prefill_s"] += scorer.stats["prefill_s"]
        shard = None if plan.questions is None else index
        for split, questions in mine.items():
          bar.set_description(f"{name}/{split}" + ("" if shard is None else f" shard {shard}"))
          for group in _groups(questions, batch_size):
            scores = scorer.score(group)
            check_scores_finite(scores, name)
            if out is not None:
              out.write("".join(json.dumps(_record(name, condition, s, shard), sort_keys=True)
                                + "\n" for s in scores))
              out.flush()
            bar.update(len(group))
        stats["score_s"] += scorer.stats["score_s"]
  finally:
    bar.close()
    if out is not None:
      out.close()

  selected = {(n, s) for n, ds in datasets for s in ds.tests}
  order = {key: i for i, key in enumerate((n, s) for n, ds in datasets for s in ds.tests)}
  results = [r for r in read_records(questions_path)
             if (r["dataset"], r["split"]) in selected and r["condition"] == condition]
  rows = sorted(report.summarize(results), key=lambda r: order[(r["dataset"], r["split"])])
  if writer:
    fileio.atomic_write(run_dir / SUMMARY_FILE, json.dumps(rows, indent=2) + "\n")
    header = (f"Run `{run}`: condition `{condition}`, model `{model_cfg.preset}`"
              f"{' from ' + repr(checkpoint) if checkpoint else ''}, metric `{metric}`"
              + (f", ICL subsample {subsample} (seed {seed})" if contexts.uses_documents(condition) else "")
              + "".join(f", {n}: {k} ICL context shards" for n, k in
                        stats["context_shards"].items() if k)
              + (f", nonsense words replaced by fresh ones ({int(config.no_knowledge.relabellings)} "
                 f"mappings from seed {no_knowledge_seed(config)})"
                 if condition == relabel.CONTROL else "")
              + ".\n\n")
    fileio.atomic_write(run_dir / TABLE_FILE, header + report.markdown_table(rows))
  return EvalResult(run_dir=run_dir, rows=rows, scored=remaining, skipped=skipped,
                    seconds=time.perf_counter() - start, stats=stats)


def remove_run(run_dir: str | os.PathLike[str]) -> None:
  """Deletes a results directory (used by tests and notebooks)."""
  shutil.rmtree(run_dir, ignore_errors=True)
