"""What a study runs: its conditions, its default config, the settings that determine its results,
the number of stages, the ICL subsample factor."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.evaluation import contexts
from icl_ft.evaluation import prompts
from icl_ft.inference import prefill
from icl_ft.model import loader

NO_CONTEXT_BASE = ("pretrained", "no_knowledge")  # the base model, no context, seed-independent
AUGMENT_STRATEGIES = {"ft_aug_local": "local", "ft_aug_global": "global", "ft_aug_all": "all"}
FINETUNED = ("ft", "ft_split", *AUGMENT_STRATEGIES)

# Fields that do not change the results (compared on resume without them).
NON_RESULT_FIELDS = ("run", "results_dir", "overwrite", "progress", "figure",
                     "compilation_cache_dir")


def default_model_config() -> schema.ModelConfig:
  """The committed default model (`icl_ft.model.loader.ASSETS_DIR`) if installed, else fresh `tiny`.

  The asset paths are resolved here (absolute), so every stage and settings.json name the
  files the study used. Without the assets the model is a fresh `tiny` one and the study
  trains a tokenizer on its own text: a smoke setup whose accuracies are chance by construction.
  """
  try:
    params = loader.default_asset("params")
    tokenizer = loader.default_asset("tokenizer.model")
  except FileNotFoundError:
    return schema.ModelConfig(preset="tiny")
  return schema.ModelConfig(preset=loader.DEFAULT_PRESET, checkpoint=os.path.abspath(params),
                            tokenizer=os.path.abspath(tokenizer))


def default_config() -> schema.StudyConfig:
  """The study's default config (`icl-ft-study` without --config; configs/study.py starts here)."""
  return schema.StudyConfig(model=default_model_config())


def settings_of(config: schema.StudyConfig) -> dict[str, Any]:
  """The config fields that determine the results (stored in settings.json)."""
  d = schema.plain(config)
  return {k: v for k, v in sorted(d.items()) if k not in NON_RESULT_FIELDS}


def applicable(conditions: Sequence[str], dataset: records.Dataset) -> list[str]:
  """The conditions that apply to `dataset`: `ft_split` needs multi-sentence documents."""
  multi = any(len(d.sentences) > 1 for d in dataset.train)
  return [c for c in conditions if c != "ft_split" or multi]


def plan_size(names: Sequence[str], conditions: Sequence[str], seeds: Sequence[int],
              multi: Mapping[str, bool], fresh_tokenizer: bool) -> int:
  """How many stages the study runs (an upper bound: `icl` once when the whole set fits)."""
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


def icl_subsample(name: str, dataset: records.Dataset, tokenizer: Any, max_len: int,
                  requested: int, chat: bool, seed: int, shards: bool = False) -> int:
  """The ICL subsample factor: `requested`, or (0) 1 with `shards` (the evaluation shards the
  documents if they do not fit), else the smallest factor that fits the context."""
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

