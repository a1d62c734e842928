"""Validation of the binaries' configs, in one place: one function per config kind.

`validate_train(config)`, `validate_eval(config)`, `validate_data(config)`,
`validate_augment(config)`, `validate_study(config)`, `validate_pretrain(config)` check a
typed config (`icl_ft.config.schema`; a ConfigDict is converted first) for types, names,
enumerations, mesh sizes and batch divisibility when the mesh is fixed, without touching files or
devices; `require_inputs=True` also demands the fields a real run needs (workdir, dataset
directories, tokenizer, a checkpoint for finetuned conditions; not needed by a dry run). Each
raises a one-line ValueError naming the field. The binaries call them before doing anything;
tests/test_configs.py calls `validate(config)` on every config file. `kind_of(config)` tells
the kinds apart by their fields; every config also gets the checks of its nested model / mesh /
multihost blocks (`validate_blocks`).

Layer: this module checks against the vocabularies of the modules the configs drive (formats,
optimizer, conditions, metrics, strategies, presets, datasets), so it imports them: it sits
above them, below the study and the binaries, which are its only users.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from icl_ft import sharding
from icl_ft.augment import augment
from icl_ft.config import schema
from icl_ft.datasets import registry
from icl_ft.evaluation import evaluate
from icl_ft.inference import scoring
from icl_ft.model import builder
from icl_ft.model import config as model_config
from icl_ft.pipeline import formats
from icl_ft.pretrain import corpus as corpus_lib
from icl_ft.pretrain import recipe
from icl_ft.train import optimizer as optimizer_lib

DTYPES = ("", "float32", "bfloat16", "float16")


def _int(cfg: Any, name: str, where: str, minimum: int | None = None) -> int:
  value = getattr(cfg, name)
  if isinstance(value, bool) or not isinstance(value, int):
    raise ValueError(f"{where}.{name} must be an integer, got {value!r}")
  if minimum is not None and value < minimum:
    raise ValueError(f"{where}.{name} must be >= {minimum}, got {value}")
  return value


def _number(cfg: Any, name: str, where: str, minimum: float = 0.0) -> float:
  value = getattr(cfg, name)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
    raise ValueError(f"{where}.{name} must be a number >= {minimum:g}, got {value!r}")
  return float(value)


def _one_of(value: Any, valid: tuple[str, ...], what: str) -> None:
  if value not in valid:
    raise ValueError(f"{what} {value!r} is not one of {', '.join(repr(v) for v in valid)}")


def _divisible(batch: int, sizes: dict[str, int], field: str, relation: str = "a multiple of"
               ) -> None:
  """ValueError unless `batch` is `relation` (e.g. "divisible by") the fixed data-parallel size."""
  dp = sharding.configured_data_parallel_size(sizes)
  if dp and batch % dp:
    raise ValueError(f"{field}={batch} is not {relation} the data-parallel size {dp} "
                     f"(mesh data={sizes['data']} x fsdp={sizes['fsdp']})")


# ---------------------------------------------------------------------------
# Shared blocks
# ---------------------------------------------------------------------------


def validate_model(model: schema.ModelConfig, where: str = "config.model",
                   require_inputs: bool = False) -> None:
  """The model block: a known preset, format, dtypes."""
  if model.preset not in model_config.PRESETS and model.preset != "tiny":
    raise ValueError(f"{where}.preset {model.preset!r} is not a model preset; valid: "
                     f"{', '.join(sorted(model_config.PRESETS))}")
  _one_of(model.checkpoint_format, builder.FORMATS, f"{where}.checkpoint_format")
  for f in ("dtype", "param_dtype"):
    _one_of(getattr(model, f) or "", DTYPES, f"{where}.{f}")
  _int(model, "seed", where, 0)
  if require_inputs and model.checkpoint_format == "gemma":
    if not model.checkpoint:
      raise ValueError(f"{where}.checkpoint is required with checkpoint_format 'gemma' (the "
                       "official release's directory, e.g. gs://bucket/gemma2-2b)")
    if not model.tokenizer:
      raise ValueError(f"{where}.tokenizer is required with checkpoint_format 'gemma' (the "
                       "release's tokenizer.model)")


def mesh_sizes(mesh: schema.MeshConfig, where: str = "config.mesh") -> dict[str, int]:
  """The mesh block's axis sizes, checked (-1 = the rest, at most once)."""
  sizes = {a: _int(mesh, a, where) for a in sharding.MESH_AXES}
  bad = [a for a, s in sizes.items() if s == 0 or s < -1]
  if bad:
    raise ValueError(f"{where}.{bad[0]} must be positive or -1, got {sizes[bad[0]]}")
  if sum(s == -1 for s in sizes.values()) > 1:
    raise ValueError(f"{where}: at most one of data, fsdp, tensor may be -1, got {sizes}")
  for name, axes in mesh.rules.items():
    for a in (axes,) if isinstance(axes, str) else (axes or ()):
      if a not in sharding.MESH_AXES:
        raise ValueError(f"{where}.rules.{name} -> {axes!r}: {a!r} is not a mesh axis {sharding.MESH_AXES}")
  return sizes


def validate_multihost(mh: schema.MultihostConfig, where: str = "config.multihost") -> None:
  """The multihost block: a boolean switch, process counts in range."""
  if not isinstance(mh.initialize, bool):
    raise ValueError(f"{where}.initialize must be true or false")
  _int(mh, "num_processes", where, 0)
  _int(mh, "process_id", where, -1)


def validate_dry_run(config: schema.TrainConfig | schema.EvalConfig) -> None:
  """`dry_run` a boolean, `device_memory_gib` >= 0."""
  if not isinstance(config.dry_run, bool):
    raise ValueError(f"config.dry_run must be true or false, got {config.dry_run!r}")
  _number(config, "device_memory_gib", "config")


def validate_blocks(config: Any, where: str = "config") -> None:
  """Checks every nested model / mesh / multihost block (any config kind)."""
  for field in dataclasses.fields(config):
    value, path = getattr(config, field.name), f"{where}.{field.name}"
    if isinstance(value, schema.ModelConfig):
      validate_model(value, path)
    elif isinstance(value, schema.MeshConfig):
      mesh_sizes(value, path)
    elif isinstance(value, schema.MultihostConfig):
      validate_multihost(value, path)
    elif dataclasses.is_dataclass(value):
      validate_blocks(value, path)


def validate_sampling(sampling: Any, where: str = "config.sampling") -> None:
  """max_new_tokens >= 1, temperature >= 0 (0 = greedy), 0 < top_p <= 1."""
  _int(sampling, "max_new_tokens", where, 1)
  _number(sampling, "temperature", where)
  top_p = _number(sampling, "top_p", where)
  if not 0 < top_p <= 1:
    raise ValueError(f"{where}.top_p must be in (0, 1], got {top_p:g}")


# ---------------------------------------------------------------------------
# Kinds
# ---------------------------------------------------------------------------


def validate_train(config: schema.TrainConfig, require_inputs: bool = False,
                   check_paths: bool = False) -> None:
  """icl-ft-train's config; `check_paths`: the dataset directories exist (a real local run)."""
  validate_model(config.model, require_inputs=require_inputs)
  sizes = mesh_sizes(config.mesh)
  data = config.data
  formats.check_format(data.format)
  _int(data, "seq_len", "config.data", 2)
  batch = _int(data, "batch_size", "config.data", 1)
  _divisible(batch, sizes, "config.data.batch_size", "divisible by")
  steps = _int(config, "steps", "config", 1)
  optimizer_lib.make_optimizer(config.optimizer, steps)  # one-line ValueErrors
  if _number(config.optimizer, "learning_rate", "config.optimizer") <= 0:
    raise ValueError("config.optimizer.learning_rate must be positive")
  _int(config.checkpoint, "every", "config.checkpoint", 0)
  _int(config.checkpoint, "keep", "config.checkpoint", 1)
  _int(config.log, "every", "config.log", 1)
  if config.eval.dataset_dir:
    formats.check_format(config.eval.format or data.format)
    if int(config.eval.every) < 1 or int(config.eval.num_batches) < 1:
      raise ValueError("config.eval.every and config.eval.num_batches must be >= 1")
  validate_multihost(config.multihost)
  validate_dry_run(config)
  if require_inputs:
    if not config.workdir:
      raise ValueError("config.workdir is required (checkpoints, metrics.jsonl, tensorboard/)")
    if not data.dataset_dir:
      raise ValueError("config.data.dataset_dir is required (a directory written by icl-ft-data)")
    if not config.model.tokenizer:
      raise ValueError("config.model.tokenizer is required for training (a SentencePiece .model)")
  if check_paths:
    for field, path in (("data", data.dataset_dir), ("eval", config.eval.dataset_dir)):
      if path and not os.path.isdir(path):
        raise ValueError(f"config.{field}.dataset_dir {path!r} is not a directory")


def validate_eval(config: schema.EvalConfig, require_inputs: bool = False) -> None:
  """icl-ft-eval's config."""
  condition = str(config.condition)
  if condition not in evaluate.BASE_CONDITIONS and not evaluate.FINETUNED_PATTERN.match(condition):
    raise ValueError(f"unknown condition {condition!r}; valid: pretrained, no_knowledge, icl, ft "
                     "or ft_<name>")
  validate_model(config.model, require_inputs=require_inputs)
  sizes = mesh_sizes(config.mesh)
  _one_of(config.scoring.metric, tuple(scoring.METRICS), "config.scoring.metric")
  batch = _int(config.scoring, "batch_size", "config.scoring", 1)
  _divisible(batch, sizes, "config.scoring.batch_size")
  _int(config.scoring, "prefill_chunk", "config.scoring", 1)
  _int(config.icl, "subsample", "config.icl", 1)
  _int(config.no_knowledge, "relabellings", "config.no_knowledge", 1)
  validate_multihost(config.multihost)
  validate_dry_run(config)
  if require_inputs:
    evaluate.check_run_name(str(config.run))
    if not evaluate.parse_list(config.datasets):
      raise ValueError("config.datasets is required: dataset directories written by icl-ft-data")
    if not config.model.tokenizer:
      raise ValueError("config.model.tokenizer is required (a SentencePiece .model file)")
    evaluate.check_condition(condition, config.model.checkpoint)


def validate_data(config: schema.DataConfig, require_inputs: bool = False) -> None:
  """icl-ft-data's config: known dataset, scale, Params fields."""
  del require_inputs  # everything has a default
  overrides = {k: v for k, v in config.params.items() if v is not None}
  registry.params(config.name, config.scale, **overrides)
  _int(config, "seed", "config", 0)


def validate_augment(config: schema.AugmentConfig, require_inputs: bool = False) -> None:
  """icl-ft-augment's config."""
  _one_of(config.strategy, augment.STRATEGIES, "config.strategy")
  validate_model(config.model, require_inputs=require_inputs)
  sizes = mesh_sizes(config.mesh)
  validate_sampling(config.sampling)
  _int(config, "seed", "config", 0)
  _int(config, "max_context_tokens", "config", 0)
  _int(config, "prefill_chunk", "config", 1)
  batch = _int(config, "batch_size", "config", 1)
  _divisible(batch, sizes, "config.batch_size")
  if require_inputs:
    for field in ("dataset_dir", "output_dir"):
      if not getattr(config, field):
        raise ValueError(f"config.{field} is required")
    if not config.model.tokenizer:
      raise ValueError("config.model.tokenizer is required (a SentencePiece .model file)")


def validate_pretrain(config: schema.PretrainConfig, require_inputs: bool = False) -> None:
  """icl-ft-pretrain's config; `train` is a full train config."""
  for block, fields in (("corpus", ("num_episodes", "max_chars", "episodes_per_dataset")),
                        ("tokenizer", ("vocab_size", "max_texts")),
                        ("eval", ("episodes", "batch_size"))):
    for field in fields:
      _int(getattr(config, block), field, f"config.{block}", 1)
  _int(config, "workers", "config", 1)
  _int(config, "seed", "config", 0)
  try:
    corpus_lib.check(recipe.corpus_params(config))
  except ValueError as e:
    raise ValueError(f"config.corpus: {e}") from None
  try:
    validate_train(config.train)  # workdir, dataset and tokenizer are filled in by the stages
  except ValueError as e:
    raise ValueError(f"config.train (a configs/train.py config): {e}") from None
  if require_inputs and not config.workdir:
    raise ValueError("config.workdir is required (corpus, tokenizer, checkpoints, eval.json)")


def parse_seeds(value: Any) -> list[int]:
  """Run seeds from "0,1,2" (or an int / a sequence); ValueError names a bad one."""
  if isinstance(value, int):
    return [value]
  seeds = []
  for s in evaluate.parse_list(value):
    try:
      seeds.append(int(s))
    except ValueError:
      raise ValueError(f"config.seeds: {s!r} is not an integer") from None
  if not seeds:
    raise ValueError("config.seeds is empty; give at least one seed, e.g. 0")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"config.seeds has duplicates: {seeds}")
  return seeds


def study_plan(config: schema.StudyConfig) -> tuple[list[str], list[str], list[int]]:
  """(datasets, conditions in table order, seeds) of a study config; one-line ValueError."""
  names = evaluate.parse_list(config.datasets)
  if not names:
    raise ValueError("config.datasets is empty; valid: " + ",".join(registry.NAMES))
  for name in names:
    registry.module(name)  # unknown name -> ValueError listing the valid ones
  if len(set(names)) != len(names):
    raise ValueError(f"config.datasets has duplicates: {names}")
  conditions = evaluate.parse_list(config.conditions)
  unknown = [c for c in conditions if c not in schema.STUDY_CONDITIONS]
  if unknown or not conditions:
    raise ValueError(f"unknown condition(s) {unknown or conditions}; valid: "
                     f"{','.join(schema.STUDY_CONDITIONS)}")
  extra = sorted(set(config.dataset_params) - set(names))
  if extra:
    raise ValueError(f"config.dataset_params names dataset(s) {extra} not in config.datasets")
  for name in names:
    registry.params(name, config.scale, **dict(config.dataset_params.get(name) or {}))
  for field in ("format", "split_format", "aug_format"):
    formats.check_format(getattr(config.train, field))
  for field in ("batch_size", "seq_len"):
    if int(getattr(config.train, field)) < 1:
      raise ValueError(f"config.train.{field} must be >= 1, got {getattr(config.train, field)}")
  if int(config.train.steps) < 0 or (int(config.train.steps) == 0
                                     and not float(config.train.epochs) > 0):
    raise ValueError(f"config.train.steps must be >= 1, or 0 with config.train.epochs > 0; got "
                     f"steps={config.train.steps}, epochs={config.train.epochs}")
  if int(config.eval.icl_subsample) < 0:
    raise ValueError(f"config.eval.icl_subsample must be >= 0 (0 = auto), got "
                     f"{config.eval.icl_subsample}")
  if not config.run or "/" in str(config.run):
    raise ValueError(f"config.run must name the run (no '/'), got {config.run!r}")
  return (names, [c for c in schema.STUDY_CONDITIONS if c in conditions],
          parse_seeds(config.seeds))


def validate_study(config: schema.StudyConfig, require_inputs: bool = False) -> None:
  """icl-ft-study's config: its datasets, conditions and seeds, then its blocks."""
  del require_inputs  # every input has a default (the study writes its own data)
  study_plan(config)
  validate_model(config.model)
  sizes = mesh_sizes(config.mesh)
  for block in ("train", "augment", "eval"):
    batch = _int(getattr(config, block), "batch_size", f"config.{block}", 1)
    _divisible(batch, sizes, f"config.{block}.batch_size")


VALIDATORS: dict[str, Callable[..., None]] = {
    "train": validate_train, "eval": validate_eval, "data": validate_data,
    "study": validate_study, "augment": validate_augment, "pretrain": validate_pretrain}


# The fields that tell a binary's config apart (each set is in no other kind's config).
KIND_FIELDS: dict[str, frozenset[str]] = {
    "train": frozenset({"workdir", "data", "optimizer", "steps"}),
    "eval": frozenset({"condition", "datasets", "scoring"}),
    "data": frozenset({"name", "scale", "params", "output_dir"}),
    "study": frozenset({"datasets", "conditions", "seeds", "train", "augment", "eval"}),
    "augment": frozenset({"strategy", "dataset_dir", "output_dir", "sampling"}),
    "pretrain": frozenset({"workdir", "corpus", "tokenizer", "train"}),
}


def kind_of(config: Any) -> str | None:
  """The config's kind (a VALIDATORS key) by its class or its fields, else None."""
  for kind, cls in schema.KINDS.items():
    if isinstance(config, cls):
      return kind
  keys = set(config.keys())
  kinds = [k for k, fields in KIND_FIELDS.items() if fields <= keys]
  return kinds[0] if kinds else None


def validate(config: Any, require_inputs: bool = False) -> str | None:
  """Validates `config` (typed, or a ConfigDict of a known kind) and its blocks; returns the kind."""
  kind = kind_of(config)
  if kind is None:
    return None
  typed = schema.typed(kind, config)
  VALIDATORS[kind](typed, require_inputs=require_inputs)
  validate_blocks(typed)
  return kind
