"""The controlled study end to end: `run_study(config) -> StudyResult` (configs/study.py).

For each dataset (generated once, at one seed: every condition sees the same documents):

  pretrained      evaluate the base model, no context
  no_knowledge    the contamination control: `pretrained` on the same questions with every
                  nonsense word and celebrity name replaced by fresh words no document holds
                  (`icl_ft.datasets.relabel`); table.md says, per split, whether `pretrained`
                  is within 2 SE of it (`knowledge_check`)
  icl             evaluate the base model with the training documents in context; when they
                  do not fit the model's context, in context shards (`icl_ft.evaluation.contexts`:
                  each question against a shard stating every fact it depends on), recorded
                  in table.md
  ft              finetune on the documents (`train.format`, default `document`), evaluate
  ft_split        finetune on the documents split into sentences (`train.split_format`);
                  only datasets with multi-sentence documents (syllogisms, semantic_structure)
  ft_aug_<s>      augment the documents with the base model's own in-context inferences
                  (`icl_ft.augment.augment_dataset`, strategy s = local | global | all), then
                  finetune on original + generated documents, evaluate; `all` merges the
                  local and the global generations of the same seed (`merge_augmented`:
                  what `augment_dataset(..., "all")` samples, without sampling it twice)

Everything runs in this process through the library functions the binaries use:
`datasets.registry.generate` + `records.write_dataset` -> `train.loop.train` (config from
configs/train.py) -> orbax checkpoints -> `evaluate.evaluate` (config from configs/eval.py).
Every finetuned condition of a dataset runs the same steps at the same batch size; the
examples, tokens and epochs each one trained on are reported (study.json, table.md).

Outputs in `<results_dir>/<run>/`:

  data/<dataset>/                  the dataset (icl-ft-data layout); data/<dataset>_aug_<s>_s<seed>/
  tokenizer.model                  only for a fresh model without a tokenizer (smoke setups)
  train/<dataset>/<condition>_s<seed>/   icl-ft-train workdir (checkpoints/, metrics.jsonl)
  eval/<dataset>/<condition>[_s<seed>]/  icl-ft-eval run (questions.jsonl, summary.json, table.md)
  stages/<stage>.json              completion markers (seconds and what the stage produced)
  summary.json                     rows {dataset, split, condition, seed, accuracy, se, n, chance,
                                   subset_se, subsets} (icl_ft.evaluation.report: se is binomial)
  table.md                         accuracy ± binomial SE per dataset x split x condition (seeds
                                   pooled), the paper's subset SE labelled, augmentation
                                   usability, then the finetuning data of every finetuned condition
  figure.png                       a panel per (dataset, split): a bar per condition, SE bars,
                                   the chance level as a dashed line (icl_ft.evaluation.plots)
  study.json                       settings, model, devices, per-stage timings, finetuning data

Resuming: a stage whose marker exists is skipped; an interrupted training resumes from its
last checkpoint and an interrupted evaluation from its questions.jsonl. `settings.json` holds
the settings that determine the results; re-running with different ones is an error unless
`overwrite` (which deletes the run directory first).

Seeds: `seeds` lists run seeds. A seed sets the finetuning data order, the ICL subsample and
the augmentation sampling; the dataset (`data_seed`) and the base model are the same for all.
Conditions that do not depend on the seed (`pretrained`, `no_knowledge`; `icl` with the whole
training set in context or in shards) are evaluated once, with the first seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_ft import config_blocks
from icl_ft import fileio
from icl_ft.evaluation import report
from icl_ft.datasets import records

CONDITIONS = ("pretrained", "no_knowledge", "icl", "ft", "ft_split", "ft_aug_local",
              "ft_aug_global", "ft_aug_all")
NO_CONTEXT_BASE = ("pretrained", "no_knowledge")  # the base model, no context, seed-independent
AUGMENT_STRATEGIES = {"ft_aug_local": "local", "ft_aug_global": "global", "ft_aug_all": "all"}
FINETUNED = ("ft", "ft_split", *AUGMENT_STRATEGIES)

SUMMARY_FILE = "summary.json"
TABLE_FILE = "table.md"
FIGURE_FILE = "figure.png"
STUDY_FILE = "study.json"
SETTINGS_FILE = "settings.json"
TOKENIZER_FILE = "tokenizer.model"


# Fields that do not change the results (compared on resume without them).
_NON_RESULT_FIELDS = ("run", "results_dir", "overwrite", "progress", "figure",
                      "compilation_cache_dir")


# ---------------------------------------------------------------------------
# Config helpers
# ---------------------------------------------------------------------------


def default_model_config():
  """The committed default model (`icl_ft.model.loader.ASSETS_DIR`) if installed, else fresh `tiny`.

  The asset paths are resolved here (absolute), so every stage and settings.json name the
  files the study used. Without the assets the model is a fresh `tiny` one and the study
  trains a tokenizer on its own text: a smoke setup whose accuracies are chance by construction.
  """
  from icl_ft.model import loader  # pylint: disable=g-import-not-at-top

  try:
    params = loader.default_asset("params")
    tokenizer = loader.default_asset("tokenizer.model")
  except FileNotFoundError:
    return config_blocks.model_config("tiny")
  cfg = config_blocks.model_config(loader.DEFAULT_PRESET)
  cfg.checkpoint = os.path.abspath(params)
  cfg.tokenizer = os.path.abspath(tokenizer)
  return cfg


def _to_dict(node: Any) -> Any:
  return node.to_dict() if hasattr(node, "to_dict") else node


def parse_list(value: Any) -> list[str]:
  """A comma-separated string (or a sequence) as a list of non-empty stripped items."""
  items = value.split(",") if isinstance(value, str) else list(value or [])
  return [str(s).strip() for s in items if str(s).strip()]


def parse_seeds(value: Any) -> list[int]:
  """Run seeds from "0,1,2" (or an int / a sequence); ValueError names a bad one."""
  if isinstance(value, int):
    return [value]
  seeds = []
  for s in parse_list(value):
    try:
      seeds.append(int(s))
    except ValueError:
      raise ValueError(f"config.seeds: {s!r} is not an integer") from None
  if not seeds:
    raise ValueError("config.seeds is empty; give at least one seed, e.g. 0")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"config.seeds has duplicates: {seeds}")
  return seeds


def check_config(config: Any) -> tuple[list[str], list[str], list[int]]:
  """(datasets, conditions, seeds) of a study config; one-line ValueError for bad input."""
  from icl_ft.datasets import registry  # pylint: disable=g-import-not-at-top

  names = parse_list(config.datasets)
  if not names:
    raise ValueError("config.datasets is empty; valid: " + ",".join(registry.NAMES))
  for name in names:
    registry.module(name)  # unknown name -> ValueError listing the valid ones
  if len(set(names)) != len(names):
    raise ValueError(f"config.datasets has duplicates: {names}")
  conditions = parse_list(config.conditions)
  unknown = [c for c in conditions if c not in CONDITIONS]
  if unknown or not conditions:
    raise ValueError(f"unknown condition(s) {unknown or conditions}; valid: {','.join(CONDITIONS)}")
  extra = sorted(set(_to_dict(config.dataset_params) or {}) - set(names))
  if extra:
    raise ValueError(f"config.dataset_params names dataset(s) {extra} not in config.datasets")
  for name in names:
    registry.params(name, config.scale, **dict(_to_dict(config.dataset_params.get(name, {})) or {}))
  from icl_ft.pipeline import formats  # pylint: disable=g-import-not-at-top

  for field in ("format", "split_format", "aug_format"):
    formats.check_format(config.train[field])
  for field in ("batch_size", "seq_len"):
    if int(config.train[field]) < 1:
      raise ValueError(f"config.train.{field} must be >= 1, got {config.train[field]}")
  if int(config.train.steps) < 0 or (int(config.train.steps) == 0
                                     and not float(config.train.epochs) > 0):
    raise ValueError(f"config.train.steps must be >= 1, or 0 with config.train.epochs > 0; got "
                     f"steps={config.train.steps}, epochs={config.train.epochs}")
  if int(config.eval.icl_subsample) < 0:
    raise ValueError(f"config.eval.icl_subsample must be >= 0 (0 = auto), got "
                     f"{config.eval.icl_subsample}")
  if not config.run or "/" in str(config.run):
    raise ValueError(f"config.run must name the run (no '/'), got {config.run!r}")
  return names, [c for c in CONDITIONS if c in conditions], parse_seeds(config.seeds)


def settings_of(config: Any) -> dict[str, Any]:
  """The config fields that determine the results (stored in settings.json)."""
  d = _to_dict(config)
  return {k: v for k, v in sorted(d.items()) if k not in _NON_RESULT_FIELDS}


def enable_compilation_cache(path: str | os.PathLike[str]) -> None:
  """Points JAX's persistent compilation cache at `path` (every program, however fast to compile)."""
  import jax  # pylint: disable=g-import-not-at-top

  path = os.path.abspath(os.fspath(path))
  if jax.config.jax_compilation_cache_dir == path:
    return
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  try:  # JAX reads the settings once, at the first compile; make it read them again
    from jax._src import compilation_cache  # pylint: disable=g-import-not-at-top

    compilation_cache.reset_cache()
  except (ImportError, AttributeError):
    pass


def _json(obj: Any) -> str:
  return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


# ---------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class StageRecord:
  """One stage of the study: what it was, how long it took, what it produced."""

  key: str  # e.g. "train/simple_reversals/ft_s0"
  kind: str  # data | tokenizer | augment | train | eval | report
  seconds: float
  resumed: bool  # finished by an earlier call (seconds are that call's)
  info: dict[str, Any]
  # Process CPU time (all threads): on a shared machine, what the stage cost regardless of load.
  cpu_seconds: float = 0.0


class _Stages:
  """Runs stages in order; a stage with a completion marker is skipped."""

  def __init__(self, run_dir: Path, total: int, progress: bool):
    self.dir = run_dir / "stages"
    self.total = total
    self.progress = progress
    self.records: list[StageRecord] = []
    self._done: dict[str, dict[str, Any]] = {}  # key -> info, for stages already seen this call

  def _say(self, text: str) -> None:
    if self.progress:
      print(f"[study {len(self.records) + 1}/{self.total}] {text}", flush=True)

  def run(self, key: str, kind: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`fn()` once per run directory: its info (a stage asked for again is neither re-run nor
    recorded twice; one finished by an earlier call is recorded as resumed)."""
    if key in self._done:
      return self._done[key]
    self._done[key] = info = self._run(key, kind, fn)
    return info

  def _run(self, key: str, kind: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    marker = self.dir / (key.replace("/", "__") + ".json")
    if marker.is_file() and _has_duplicates(kind, marker):
      marker.unlink()  # an unlocked older run scored questions twice: the rerun repairs it
    if marker.is_file():
      done = json.loads(marker.read_text(encoding="utf-8"))
      self._say(f"{key}: done earlier ({done['seconds']:.1f} s), skipped")
      self.records.append(StageRecord(key, kind, float(done["seconds"]), True, done["info"],
                                      float(done.get("cpu_seconds", 0.0))))
      return done["info"]
    self._say(f"{key} ...")
    start, cpu = time.perf_counter(), time.process_time()
    info = fn() or {}
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    fileio.atomic_write(marker, _json({"key": key, "kind": kind, "seconds": seconds,
                                       "cpu_seconds": cpu, "info": info}))
    if self.progress:
      print(f"[study {len(self.records) + 1}/{self.total}] {key}: {seconds:.1f} s "
            f"(cpu {cpu:.1f} s)", flush=True)
    self.records.append(StageRecord(key, kind, seconds, False, info, cpu))
    return info


def _has_duplicates(kind: str, marker: Path) -> bool:
  """Whether a finished eval stage's questions.jsonl holds a question twice."""
  if kind != "eval":
    return False
  from icl_ft.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  info = json.loads(marker.read_text(encoding="utf-8")).get("info", {})
  path = Path(info.get("dir", "")) / evaluate.QUESTIONS_FILE
  return bool(info.get("dir")) and path.is_file() and evaluate.has_duplicate_records(path)


# ---------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------


def _next_pow2(n: int) -> int:
  return 1 << max(0, (int(n) - 1).bit_length())


def example_stats(dataset: records.Dataset, fmt: str, tokenizer: Any) -> dict[str, Any]:
  """Counts of the training examples of `dataset` in format `fmt` (tokens as the pipeline makes them)."""
  from icl_ft.pipeline import formats  # pylint: disable=g-import-not-at-top
  from icl_ft.pipeline import loader as data_loader  # pylint: disable=g-import-not-at-top

  examples = formats.examples(dataset, fmt)
  elements = data_loader.tokenize_examples(examples, tokenizer)
  lengths = [len(e["tokens"]) for e in elements]
  return {"format": fmt, "documents": len(dataset.train), "examples": len(examples),
          "tokens_per_epoch": int(sum(lengths)),
          "target_tokens_per_epoch": int(sum(int(e["loss_mask"].sum()) for e in elements)),
          "longest_example": int(max(lengths))}


def finetuning_steps(train_cfg: Any, stats: Mapping[str, Any]) -> int:
  """`train_cfg.steps`, or (0) the steps for `train_cfg.epochs` passes over the examples.

  A step holds `batch_size` rows of `seq_len` tokens; packing fills ~95% of them.
  """
  if int(train_cfg.steps) > 0:
    return int(train_cfg.steps)
  rows = int(train_cfg.batch_size) * int(train_cfg.seq_len) * 0.95
  return max(1, math.ceil(float(train_cfg.epochs) * stats["tokens_per_epoch"] / rows))


def _metrics_totals(workdir: Path, steps: int) -> dict[str, Any]:
  """Tokens trained on (all rows, loss positions) and the last loss, from metrics.jsonl."""
  tokens = loss_tokens = 0.0
  last = None
  path = workdir / "metrics.jsonl"
  if path.is_file():
    for line in path.read_text(encoding="utf-8").splitlines():
      if not line.strip():
        continue
      r = json.loads(line)
      if "loss" not in r or int(r.get("step", 0)) > steps:
        continue
      tokens += float(r.get("tokens", 0.0))
      loss_tokens += float(r.get("loss_tokens", 0.0))
      last = r
  return {"tokens_seen": int(tokens), "loss_tokens_seen": int(loss_tokens),
          "final_loss": None if last is None else float(last["loss"])}


def train_tokenizer(datasets: Sequence[records.Dataset], vocab_size: int, path: Path) -> None:
  """A SentencePiece tokenizer on the study's own text (smoke setups with a fresh model)."""
  from icl_ft.datasets import words  # pylint: disable=g-import-not-at-top
  from icl_ft.model.tokenizer import train_sentencepiece  # pylint: disable=g-import-not-at-top

  texts = [d.text for ds in datasets for d in ds.train]
  texts += [q.prompt + c for ds in datasets for qs in ds.tests.values() for q in qs
            for c in q.choices]
  texts += list(words.pool("pretraining"))  # enough distinct text for the preset's pieces
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  train_sentencepiece(texts, vocab_size, tmp)
  os.replace(tmp, path)


def merge_augmented(original: records.Dataset, parts: Sequence[records.Dataset]
                    ) -> records.Dataset:
  """`original` + the generated documents of each augmented `parts` (in order), one card.

  Local and global augmentation of the same seed merged this way are exactly what
  `augment_dataset(..., "all")` produces (it runs local, then global, deduplicating each on
  its own), without sampling everything a second time.
  """
  from icl_ft.augment import audit  # pylint: disable=g-import-not-at-top

  n = len(original.train)
  generated: list[records.Document] = []
  strategies: dict[str, Any] = {}
  for part in parts:
    if tuple(part.train[:n]) != tuple(original.train):
      raise ValueError(f"augmented dataset {part.name!r} does not start with the original "
                       "training documents")
    generated += part.train[n:]
    strategies.update(part.card["augmentation"]["strategies"])
  first = parts[0].card["augmentation"]
  card = dict(original.card)
  card["augmentation"] = {
      "strategy": "all", "strategies": strategies,
      "counts": {"original_documents": n, "generated_documents": len(generated)},
      "audit": audit.summarize(d.metadata["audit"] for d in generated),
      "sampling": first["sampling"], "seed": first["seed"], "source_name": original.name,
  }
  return records.Dataset(name=original.name, train=tuple(original.train) + tuple(generated),
                         tests=original.tests, card=card)


def icl_subsample(name: str, dataset: records.Dataset, tokenizer: Any, max_len: int,
                  requested: int, chat: bool, seed: int, shards: bool = False) -> int:
  """The ICL subsample factor: `requested`, or (0) 1 with `shards` (the evaluation shards the
  documents if they do not fit), else the smallest factor that fits the context."""
  from icl_ft.evaluation import contexts  # pylint: disable=g-import-not-at-top
  from icl_ft.evaluation import prompts  # pylint: disable=g-import-not-at-top
  from icl_ft.inference import prefill  # pylint: disable=g-import-not-at-top

  if requested > 0:
    return requested
  if shards:
    return 1
  fmt = prompts.PromptFormat(chat=chat)
  try:
    contexts.check_budget(name, dataset, "icl", tokenizer, fmt, 1, seed, max_len)
    return 1
  except prefill.ContextTooLongError as e:
    k = contexts.fitting_subsample(tokenizer, dataset.train, fmt, seed,
                                   max_len - e.question_tokens)
    if k is None:
      raise ValueError(f"dataset {name}: not even one training document fits the model's "
                       f"max_seq_len {max_len} in context") from None
    return k


# ---------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class StudyResult:
  """What `run_study` did.

  rows: summary rows per seed (summary.json); table_rows: seeds pooled (table.md, figure.png);
  finetuning: one dict per finetuned (dataset, condition, seed); stages: every stage in order.
  """

  run_dir: Path
  rows: list[dict[str, Any]]
  table_rows: list[dict[str, Any]]
  finetuning: list[dict[str, Any]]
  stages: list[StageRecord]
  seconds: float
  table: str


def applicable(conditions: Sequence[str], dataset: records.Dataset) -> list[str]:
  """The conditions that apply to `dataset`: `ft_split` needs multi-sentence documents."""
  multi = any(len(d.sentences) > 1 for d in dataset.train)
  return [c for c in conditions if c != "ft_split" or multi]


def _plan_size(names: Sequence[str], conditions: Sequence[str], seeds: Sequence[int],
               multi: Mapping[str, bool], fresh_tokenizer: bool) -> int:
  n = len(names) + (1 if fresh_tokenizer else 0) + 1  # datasets, tokenizer, report
  for name in names:
    for c in conditions:
      if c == "ft_split" and not multi.get(name, True):
        continue
      if c in NO_CONTEXT_BASE:
        n += 1
      elif c == "icl":
        n += len(seeds)  # an upper bound (once when the whole training set fits)
      elif c in AUGMENT_STRATEGIES:
        n += 3 * len(seeds)
        if c == "ft_aug_all":  # merges local and global: generated even if not studied
          n += sum(len(seeds) for p in ("ft_aug_local", "ft_aug_global") if p not in conditions)
      else:
        n += 2 * len(seeds)
  return n


def run_study(config: Any) -> StudyResult:
  """Runs the study described by `config` (configs/study.py); see the module docstring.

  Holds the run directory's lock (`fileio.run_dir_lock`): a second study into the same run
  directory is refused at once, before it reads or writes anything there.
  """
  check_config(config)
  with fileio.run_dir_lock(Path(config.results_dir) / str(config.run), "study"):
    return _run_study(config)


def _clear_run_dir(run_dir: Path) -> None:
  """Deletes everything in `run_dir` but its lock file (held by this process)."""
  for child in run_dir.iterdir():
    if child.name == fileio.LOCK_FILE:
      continue
    if child.is_dir() and not child.is_symlink():
      shutil.rmtree(child)
    else:
      child.unlink()


def _run_study(config: Any) -> StudyResult:
  """`run_study` under the run directory's lock."""
  start = time.perf_counter()
  names, conditions, seeds = check_config(config)
  progress = bool(config.get("progress", True))
  run_dir = Path(config.results_dir) / str(config.run)
  settings = settings_of(config)
  settings_file = run_dir / SETTINGS_FILE
  if bool(config.get("overwrite", False)) and run_dir.exists():
    _clear_run_dir(run_dir)
  fileio.check_run_dir(run_dir, SETTINGS_FILE, settings, "a study")
  fileio.atomic_write(settings_file, _json(fileio.portable_paths(settings, run_dir)))
  cache = str(config.get("compilation_cache_dir", "") or "")
  if cache:
    enable_compilation_cache(Path(config.results_dir) / "xla_cache" if cache == "auto" else cache)

  from icl_ft import sharding  # pylint: disable=g-import-not-at-top
  from icl_ft.datasets import registry  # pylint: disable=g-import-not-at-top
  from icl_ft.model import loader  # pylint: disable=g-import-not-at-top

  model_cfg = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
  preset_cfg = loader.model_config_from(model_cfg)
  max_len = int(preset_cfg.max_seq_len)
  fresh_tokenizer = not model_cfg.get("tokenizer")
  if fresh_tokenizer and model_cfg.get("checkpoint"):
    raise ValueError("config.model.tokenizer is required with a model checkpoint "
                     f"({model_cfg['checkpoint']})")

  # Multi-sentence datasets are known only after generation; count ft_split for all first.
  stages = _Stages(run_dir, _plan_size(names, conditions, seeds, {}, fresh_tokenizer), progress)

  # 1. Datasets: generated once; every condition trains / tests on these files.
  data_dirs: dict[str, Path] = {}
  datasets: dict[str, records.Dataset] = {}
  for name in names:
    directory = run_dir / "data" / name

    def make(name=name, directory=directory) -> dict[str, Any]:
      overrides = dict(_to_dict(config.dataset_params.get(name, {})) or {})
      ds = registry.generate(name, config.scale, int(config.data_seed), **overrides)
      records.write_dataset(ds, directory, overwrite=True)
      return {"dir": str(directory), "documents": len(ds.train),
              "questions": {s: len(q) for s, q in ds.tests.items()}}

    stages.run(f"data/{name}", "data", make)
    data_dirs[name] = directory
    datasets[name] = records.read_dataset(directory)
  multi = {n: any(len(d.sentences) > 1 for d in ds.train) for n, ds in datasets.items()}
  stages.total = _plan_size(names, conditions, seeds, multi, fresh_tokenizer)

  # 2. Tokenizer (only a fresh model without one: trained on the study's own text).
  if fresh_tokenizer:
    tok_path = run_dir / TOKENIZER_FILE
    vocab = int(config.get("tokenizer_vocab_size", 0) or 0) or int(preset_cfg.vocab_size)
    stages.run("tokenizer", "tokenizer",
               lambda: (train_tokenizer(list(datasets.values()), vocab, tok_path),
                        {"path": str(tok_path), "vocab_size": vocab})[1])
    model_cfg["tokenizer"] = str(tok_path)
  tokenizer = loader.load_tokenizer(model_cfg, preset_cfg)

  train_module = config_blocks.config_module("train")
  eval_module = config_blocks.config_module("eval")
  base: dict[str, Any] = {}  # the base model for augmentation, loaded on first use

  def base_model():
    if not base:
      mesh, rules = sharding.mesh_from_config(config.mesh)
      model, _ = loader.load_model(model_cfg, mesh, rules)
      base.update(model=model, mesh=mesh, rules=rules)
    return base

  def set_model(block: Any, checkpoint: str | None = None, fmt: str | None = None) -> None:
    for k, v in model_cfg.items():
      block[k] = v
    if checkpoint is not None:
      block.checkpoint = checkpoint
      block.checkpoint_format = fmt

  def set_mesh(block: Any) -> None:
    block.data, block.fsdp, block.tensor = (int(config.mesh.data), int(config.mesh.fsdp),
                                            int(config.mesh.tensor))
    for k, v in (_to_dict(config.mesh.rules) or {}).items():
      block.rules[k] = v

  def evaluate_stage(name: str, condition: str, run: str, checkpoint: str | None,
                     subsample: int, seed: int) -> dict[str, Any]:
    from icl_ft.evaluation import evaluate  # pylint: disable=g-import-not-at-top

    ec = eval_module.get_config(condition)
    ec.run = run
    ec.results_dir = str(run_dir / "eval" / name)
    ec.datasets = str(data_dirs[name])
    set_model(ec.model, checkpoint, "icl_ft" if checkpoint else None)
    set_mesh(ec.mesh)
    ec.prompt.chat = bool(config.eval.chat)
    ec.icl.subsample = int(subsample)
    ec.icl.seed = int(seed)
    ec.icl.shards = bool(config.eval.get("icl_shards", True))
    ec.scoring.metric = str(config.eval.metric)
    ec.scoring.batch_size = int(config.eval.batch_size)
    ec.scoring.prefill_chunk = int(config.eval.prefill_chunk)
    ec.progress = progress
    result = evaluate.evaluate(ec)
    return {"dir": str(result.run_dir), "questions": result.scored + result.skipped,
            "context_tokens": result.stats.get("context_tokens", {}).get(name),
            "context_shards": result.stats.get("context_shards", {}).get(name, 0)}

  def train_stage(name: str, condition: str, seed: int, data_dir: Path, fmt: str
                  ) -> dict[str, Any]:
    from icl_ft.train import loop  # pylint: disable=g-import-not-at-top

    workdir = run_dir / "train" / name / f"{condition}_s{seed}"
    stats = example_stats(records.read_dataset(data_dir), fmt, tokenizer)
    seq_len = max(int(config.train.seq_len), _next_pow2(stats["longest_example"]))
    steps = steps_for[name]
    tc = train_module.get_config(model_cfg["preset"])
    tc.workdir = str(workdir)
    set_model(tc.model)
    set_mesh(tc.mesh)
    tc.data.dataset_dir = str(data_dir)
    tc.data.format = fmt
    tc.data.seq_len = seq_len
    tc.data.batch_size = int(config.train.batch_size)
    tc.data.seed = int(seed)
    tc.optimizer.learning_rate = float(config.train.learning_rate)
    tc.optimizer.warmup_steps = min(int(config.train.warmup_steps), steps)
    tc.optimizer.schedule = str(config.train.schedule)
    tc.steps = steps
    tc.checkpoint.every = int(config.train.checkpoint_every) or steps
    tc.checkpoint.keep = 1
    tc.log.tensorboard = False
    tc.log.progress = progress
    t0 = time.perf_counter()
    result = loop.train(tc)
    seconds = time.perf_counter() - t0
    totals = _metrics_totals(workdir, steps)
    del result
    epochs = (totals["loss_tokens_seen"] / stats["target_tokens_per_epoch"]
              if stats["target_tokens_per_epoch"] else float("nan"))
    return {**stats, **totals, "dataset": name, "condition": condition, "seed": seed,
            "steps": steps, "batch_size": int(config.train.batch_size), "seq_len": seq_len,
            "epochs": epochs, "train_seconds": seconds,
            "checkpoint_dir": str(workdir / "checkpoints")}

  def augment_stage(name: str, strategy: str, seed: int, out_dir: Path) -> dict[str, Any]:
    from icl_ft import augment  # pylint: disable=g-import-not-at-top
    from icl_ft.inference import sampling  # pylint: disable=g-import-not-at-top

    params = sampling.SamplingParams(
        max_new_tokens=int(config.augment.max_new_tokens),
        temperature=float(config.augment.temperature), top_p=float(config.augment.top_p),
        seed=int(seed))
    original = datasets[name]
    if strategy == "all":  # exactly local + global (same seed; each dedups on its own)
      augmented = merge_augmented(original, [records.read_dataset(aug_dir(name, s, seed))
                                             for s in ("local", "global")])
    else:
      b = base_model()
      augmented = augment.augment_dataset(b["model"], tokenizer, original, strategy,
                                          sampling=params, seed=int(seed), mesh=b["mesh"],
                                          rules=b["rules"], progress=progress,
                                          batch_size=int(config.augment.batch_size))
    records.write_dataset(augmented, out_dir, overwrite=True)
    card = augmented.card.get("augmentation", {})
    return {"dir": str(out_dir), "documents": len(augmented.train),
            "generated": len(augmented.train) - len(original.train),
            "audit": card.get("audit"), "strategies": card.get("strategies")}

  def aug_dir(name: str, strategy: str, seed: int) -> Path:
    return run_dir / "data" / f"{name}_aug_{strategy}_s{seed}"

  def augment(name: str, strategy: str, seed: int) -> dict[str, Any]:
    return stages.run(f"augment/{name}/{strategy}_s{seed}", "augment",
                      lambda: augment_stage(name, strategy, seed, aug_dir(name, strategy, seed)))

  # Finetuning steps per dataset: `train.steps`, or (0) enough for `train.epochs` passes over
  # the plain `ft` examples; every finetuned condition of the dataset runs the same steps.
  steps_for = {name: finetuning_steps(config.train, example_stats(ds, str(config.train.format),
                                                                  tokenizer))
               for name, ds in datasets.items()}

  # 3. Conditions, dataset by dataset.
  evals: list[tuple[str, str, int, Path]] = []  # (dataset, condition, seed, eval run dir)
  finetuning: list[dict[str, Any]] = []
  subsamples: dict[str, dict[int, int]] = {}
  context_shards: dict[str, int] = {}  # ICL datasets scored in context shards: how many
  for name in names:
    for condition in applicable(conditions, datasets[name]):
      if condition in NO_CONTEXT_BASE:
        info = stages.run(f"eval/{name}/{condition}", "eval",
                          lambda name=name, condition=condition:
                          evaluate_stage(name, condition, condition, None, 1, seeds[0]))
        evals.append((name, condition, seeds[0], Path(info["dir"])))
        continue
      if condition == "icl":
        for i, seed in enumerate(seeds):
          k = icl_subsample(name, datasets[name], tokenizer, max_len,
                            int(config.eval.icl_subsample), bool(config.eval.chat), seed,
                            bool(config.eval.get("icl_shards", True)))
          subsamples.setdefault(name, {})[seed] = k
          if k == 1 and i > 0:
            break  # the whole training set in context: the same for every seed
          run = f"icl_s{seed}"
          info = stages.run(f"eval/{name}/{run}", "eval",
                            lambda name=name, run=run, k=k, seed=seed:
                            evaluate_stage(name, "icl", run, None, k, seed))
          evals.append((name, condition, seed, Path(info["dir"])))
          if info.get("context_shards"):
            context_shards[name] = int(info["context_shards"])
        continue
      for seed in seeds:
        data_dir = data_dirs[name]
        fmt = str(config.train.format)
        if condition == "ft_split":
          fmt = str(config.train.split_format)
        elif condition in AUGMENT_STRATEGIES:
          strategy = AUGMENT_STRATEGIES[condition]
          if strategy == "all":  # merges local and global: generate them first if needed
            for part in ("local", "global"):
              augment(name, part, seed)
          aug = augment(name, strategy, seed)
          data_dir = aug_dir(name, strategy, seed)
          fmt = str(config.train.aug_format)
        run = f"{condition}_s{seed}"
        ft = stages.run(f"train/{name}/{run}", "train",
                        lambda name=name, condition=condition, seed=seed, d=data_dir, fmt=fmt:
                        train_stage(name, condition, seed, d, fmt))
        if condition in AUGMENT_STRATEGIES:
          ft = {**ft, "generated_documents": aug["generated"]}
        finetuning.append(ft)
        info = stages.run(f"eval/{name}/{run}", "eval",
                          lambda name=name, condition=condition, run=run, seed=seed,
                          ckpt=ft["checkpoint_dir"]:
                          evaluate_stage(name, condition, run, ckpt, 1, seed))
        evals.append((name, condition, seed, Path(info["dir"])))
        if not config.train.keep_checkpoints:  # scored: the weights are done
          shutil.rmtree(ft["checkpoint_dir"], ignore_errors=True)
  base.clear()

  # 4. Report (always rewritten: cheap): per-seed summary rows, the seeds-pooled table, figure.
  t0 = time.perf_counter()
  rows, table_rows, table = write_report(run_dir, names, datasets, evals, finetuning,
                                         subsamples, figure=bool(config.get("figure", True)),
                                         context_shards=context_shards, model_cfg=model_cfg)
  report_seconds = time.perf_counter() - t0
  stages.records.append(StageRecord("report", "report", report_seconds, False,
                                    {"rows": len(rows)}))
  seconds = time.perf_counter() - start
  write_study_json(run_dir, config, model_cfg, stages.records, finetuning, subsamples, seconds)
  if progress:
    print(f"[study] report: {report_seconds:.1f} s; total {seconds:.1f} s; results in {run_dir}",
          flush=True)
  return StudyResult(run_dir=run_dir, rows=rows, table_rows=table_rows, finetuning=finetuning,
                     stages=stages.records, seconds=seconds, table=table)


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------


def collect_records(evals: Sequence[tuple[str, str, int, Path]]) -> list[dict[str, Any]]:
  """Every per-question record of the study's evaluations, with its run seed added."""
  from icl_ft.evaluation import evaluate  # pylint: disable=g-import-not-at-top

  out = []
  for name, condition, seed, directory in evals:
    for r in evaluate.read_records(directory / evaluate.QUESTIONS_FILE):
      if r["dataset"] == name and r["condition"] == condition:
        out.append({**r, "seed": seed})
  return out


def _ordered(rows: list[dict[str, Any]], names: Sequence[str],
             datasets: Mapping[str, records.Dataset]) -> list[dict[str, Any]]:
  return report.order_rows(rows, names, {n: list(datasets[n].tests) for n in names})


def _weights_line(model_cfg: Mapping[str, Any] | None) -> str:
  """"Weights: ..." (named GGUF weights: source and quantization) for table.md, else ""."""
  from icl_ft.model import loader  # pylint: disable=g-import-not-at-top

  return report.weights_line(loader.weights_info(model_cfg or {}))


def write_report(run_dir: Path, names: Sequence[str], datasets: Mapping[str, records.Dataset],
                 evals: Sequence[tuple[str, str, int, Path]],
                 finetuning: Sequence[Mapping[str, Any]], subsamples: Mapping[str, Any], *,
                 figure: bool = True, context_shards: Mapping[str, int] | None = None,
                 model_cfg: Mapping[str, Any] | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
  """Writes summary.json, table.md and figure.png; returns (rows, pooled rows, table text).

  Conditions (those the records hold) are ordered by report.CONDITION_ORDER; the
  augmentation usability comes from the augment stages' markers (stages/augment__*.json).
  """
  from icl_ft.evaluation import plots  # pylint: disable=g-import-not-at-top

  recs = collect_records(evals)
  rows = []
  for seed in sorted({r["seed"] for r in recs}):
    rows += [{**row, "seed": seed} for row in report.summarize(r for r in recs if r["seed"] == seed)]
  rows = _ordered(rows, names, datasets)
  table_rows = _ordered(report.summarize(recs), names, datasets)
  seeds = sorted({r["seed"] for r in recs})
  fileio.atomic_write(run_dir / SUMMARY_FILE, json.dumps(rows, indent=2) + "\n")
  stages = [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((run_dir / "stages").glob("augment__*.json"))]
  note = (context_shards_text(context_shards or {})
          + knowledge_text(knowledge_check(table_rows))).strip()
  table = report.study_table(run_dir.name, table_rows, seeds, subsamples, finetuning,
                             report.audits_from_stages(stages), note=note,
                             weights=_weights_line(model_cfg))
  fileio.atomic_write(run_dir / TABLE_FILE, table)
  if figure:
    plots.accuracy_figure(table_rows, run_dir / FIGURE_FILE, title=plots.study_title(run_dir.name))
  return rows, table_rows, table


def context_shards_text(context_shards: Mapping[str, int]) -> str:
  """The table's line naming the datasets whose ICL documents were split into shards."""
  used = ", ".join(f"{n} {k}" for n, k in context_shards.items() if k)
  if not used:
    return ""
  return ("\nICL context shards (the training documents did not fit the model's context; each "
          f"question scored against a shard stating every fact it depends on): {used}.\n")


def knowledge_check(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per (dataset, split) with both: is `pretrained` within 2 SE of `no_knowledge`?

  Rows are `report.summarize` rows (seeds pooled); the SE of the difference of the two
  accuracies is sqrt(se_pretrained^2 + se_no_knowledge^2) of their own SEs.
  """
  cells = {(r["dataset"], r["split"], r["condition"]): r for r in rows}
  out = []
  for (dataset, split, condition), p in cells.items():
    n = cells.get((dataset, split, "no_knowledge"))
    if condition != "pretrained" or n is None:
      continue
    diff = float(p["accuracy"]) - float(n["accuracy"])
    se = math.sqrt(float(p["se"]) ** 2 + float(n["se"]) ** 2)
    out.append({"dataset": dataset, "split": split, "pretrained": p["accuracy"],
                "no_knowledge": n["accuracy"], "difference": diff, "se": se,
                "within_2se": bool(abs(diff) <= 2 * se) if math.isfinite(se) else None})
  return out


def knowledge_text(checks: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
  """table.md's contamination check: a row per split and the verdict over all of them."""
  if not checks:
    return ""
  lines = ["", "Contamination check: `pretrained` within 2 SE of `no_knowledge` (the same "
           "questions over fresh words; SE of the difference = sqrt(SE_pretrained² + "
           "SE_no_knowledge²)):", "",
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


def write_study_json(run_dir: Path, config: Any, model_cfg: Mapping[str, Any],
                     stage_records: Sequence[StageRecord], finetuning: Sequence[Mapping[str, Any]],
                     subsamples: Mapping[str, Any], seconds: float) -> None:
  """study.json: settings, model, devices, per-stage timings, finetuning data (`fileio.portable_paths`)."""
  import jax  # pylint: disable=g-import-not-at-top

  from icl_ft.model import loader  # pylint: disable=g-import-not-at-top

  weights = loader.weights_info(model_cfg)
  by_kind: dict[str, float] = {}
  cpu_by_kind: dict[str, float] = {}
  for s in stage_records:
    by_kind[s.kind] = by_kind.get(s.kind, 0.0) + s.seconds
    cpu_by_kind[s.kind] = cpu_by_kind.get(s.kind, 0.0) + s.cpu_seconds
  devices = jax.devices()
  study = {
      "run": str(config.run),
      "config": _to_dict(config),
      "model": dict(model_cfg),
      **({"weights": weights} if weights else {}),  # named GGUF weights: quantization
      "devices": {"platform": devices[0].platform, "count": len(devices),
                  "kind": getattr(devices[0], "device_kind", ""), "cpu_count": os.cpu_count()},
      "python": sys.version.split()[0],
      "seconds": seconds,
      "seconds_by_kind": by_kind,
      "cpu_seconds_by_kind": cpu_by_kind,
      "stages": [dataclasses.asdict(s) for s in stage_records],
      "finetuning": list(finetuning),
      "icl_subsample": {n: {str(k): v for k, v in s.items()} for n, s in subsamples.items()},
  }
  fileio.atomic_write(run_dir / STUDY_FILE, _json(_finite(fileio.portable_paths(study, run_dir))))


def _finite(obj: Any) -> Any:
  """NaN/inf -> None, so study.json is strict JSON."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj
