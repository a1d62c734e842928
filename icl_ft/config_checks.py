"""Static validation of the binaries' configs: one function per config kind.

`validate_train(config)`, `validate_eval(config)`, `validate_data(config)` check a config as
loaded from configs/ (types, names, enumerations, mesh sizes, batch divisibility when the mesh
is fixed) without touching files or devices; `require_inputs=True` also demands the fields a
real run needs (workdir, dataset directories, tokenizer, a checkpoint for finetuned conditions;
not needed by a dry run). Each raises a one-line ValueError naming the field. The binaries call
them before doing anything; tests/test_configs.py calls `validate(config)` on every config file.

`validate_study`, `validate_augment` and `validate_pretrain` do the same for icl-ft-study
(the study module's own `check_config`), icl-ft-augment and icl-ft-pretrain (whose `train`
block is checked as a full train config). `kind_of(config)` tells the kinds apart by their
fields; every config also gets the checks of its nested `model` / `mesh` / `multihost` blocks
(`validate_blocks`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

DTYPES = ("", "float32", "bfloat16", "float16")
MESH_AXES = ("data", "fsdp", "tensor")
FORMATS = ("icl_ft", "gemma")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def _get(cfg: Any, name: str, default: Any = None) -> Any:
  return cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)


def _int(cfg: Any, name: str, where: str, minimum: int | None = None) -> int:
  value = _get(cfg, name)
  if isinstance(value, bool) or not isinstance(value, int):
    raise ValueError(f"{where}.{name} must be an integer, got {value!r}")
  if minimum is not None and value < minimum:
    raise ValueError(f"{where}.{name} must be >= {minimum}, got {value}")
  return value


def _number(cfg: Any, name: str, where: str, minimum: float = 0.0) -> float:
  value = _get(cfg, name)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
    raise ValueError(f"{where}.{name} must be a number >= {minimum:g}, got {value!r}")
  return float(value)


def _one_of(value: Any, valid: tuple[str, ...], what: str) -> None:
  if value not in valid:
    raise ValueError(f"{what} {value!r} is not one of {', '.join(repr(v) for v in valid)}")


# ---------------------------------------------------------------------------
# Shared blocks
# ---------------------------------------------------------------------------


def validate_model(model: Any, where: str = "config.model", require_inputs: bool = False) -> None:
  """icl_ft.config_blocks.model_config(): a known preset, format, dtypes."""
  from icl_ft.model import config as config_lib  # pylint: disable=g-import-not-at-top

  preset = _get(model, "preset", "")
  if preset not in config_lib.PRESETS and preset != "tiny":
    raise ValueError(f"{where}.preset {preset!r} is not a model preset; valid: "
                     f"{', '.join(sorted(config_lib.PRESETS))}")
  _one_of(_get(model, "checkpoint_format", "icl_ft"), FORMATS, f"{where}.checkpoint_format")
  for f in ("dtype", "param_dtype"):
    _one_of(_get(model, f, "") or "", DTYPES, f"{where}.{f}")
  _int(model, "seed", where, 0)
  if require_inputs and _get(model, "checkpoint_format", "") == "gemma":
    if not _get(model, "checkpoint", ""):
      raise ValueError(f"{where}.checkpoint is required with checkpoint_format 'gemma' (the "
                       "official release's directory, e.g. gs://bucket/gemma2-2b)")
    if not _get(model, "tokenizer", ""):
      raise ValueError(f"{where}.tokenizer is required with checkpoint_format 'gemma' (the "
                       "release's tokenizer.model)")


def mesh_sizes(mesh: Any, where: str = "config.mesh") -> dict[str, int]:
  """The mesh block's axis sizes, checked (-1 = the rest, at most once)."""
  sizes = {a: _int(mesh, a, where) for a in MESH_AXES}
  bad = [a for a, s in sizes.items() if s == 0 or s < -1]
  if bad:
    raise ValueError(f"{where}.{bad[0]} must be positive or -1, got {sizes[bad[0]]}")
  if sum(s == -1 for s in sizes.values()) > 1:
    raise ValueError(f"{where}: at most one of data, fsdp, tensor may be -1, got {sizes}")
  rules = _get(mesh, "rules", None)
  for name, axes in (rules.items() if rules is not None else ()):
    for a in (axes,) if isinstance(axes, str) else (axes or ()):
      if a not in MESH_AXES:
        raise ValueError(f"{where}.rules.{name} -> {axes!r}: {a!r} is not a mesh axis {MESH_AXES}")
  return sizes


def data_parallel(sizes: dict[str, int]) -> int | None:
  """data x fsdp when both are fixed (None when one is -1: known only with the devices)."""
  if sizes["data"] == -1 or sizes["fsdp"] == -1:
    return None
  return sizes["data"] * sizes["fsdp"]


def validate_multihost(mh: Any, where: str = "config.multihost") -> None:
  if not isinstance(_get(mh, "initialize", False), bool):
    raise ValueError(f"{where}.initialize must be true or false")
  _int(mh, "num_processes", where, 0)
  _int(mh, "process_id", where, -1)


def validate_dry_run(config: Any) -> None:
  if not isinstance(_get(config, "dry_run", False), bool):
    raise ValueError(f"config.dry_run must be true or false, got {_get(config, 'dry_run')!r}")
  _number(config, "device_memory_gib", "config")


def validate_blocks(config: Any) -> None:
  """Checks every nested model / mesh / multihost block (any config kind)."""
  def walk(cfg: Any, where: str) -> None:
    for key in list(cfg.keys()):
      value = cfg[key]
      if not hasattr(value, "keys"):
        continue
      path = f"{where}.{key}"
      if key == "model" and "preset" in value:
        validate_model(value, path)
      elif key == "mesh" and "fsdp" in value:
        mesh_sizes(value, path)
      elif key == "multihost" and "initialize" in value:
        validate_multihost(value, path)
      else:
        walk(value, path)

  walk(config, "config")


# ---------------------------------------------------------------------------
# Kinds
# ---------------------------------------------------------------------------


def validate_train(config: Any, require_inputs: bool = False) -> None:
  """A configs/train.py-style config (icl-ft-train)."""
  from icl_ft.pipeline import formats  # pylint: disable=g-import-not-at-top
  from icl_ft.train import optimizer as optimizer_lib  # pylint: disable=g-import-not-at-top

  validate_model(config.model, require_inputs=require_inputs)
  sizes = mesh_sizes(config.mesh)
  data = config.data
  formats.check_format(data.format)
  _int(data, "seq_len", "config.data", 2)
  batch = _int(data, "batch_size", "config.data", 1)
  dp = data_parallel(sizes)
  if dp and batch % dp:
    raise ValueError(f"config.data.batch_size={batch} is not divisible by the data-parallel size "
                     f"{dp} (mesh data={sizes['data']} x fsdp={sizes['fsdp']})")
  steps = _int(config, "steps", "config", 1)
  optimizer_lib.make_optimizer(config.optimizer, steps)  # one-line ValueErrors
  if _number(config.optimizer, "learning_rate", "config.optimizer") <= 0:
    raise ValueError("config.optimizer.learning_rate must be positive")
  _int(config.checkpoint, "every", "config.checkpoint", 0)
  _int(config.checkpoint, "keep", "config.checkpoint", 1)
  _int(config.log, "every", "config.log", 1)
  if "multihost" in config:
    validate_multihost(config.multihost)
  validate_dry_run(config)
  if require_inputs:
    if not _get(config, "workdir", ""):
      raise ValueError("config.workdir is required (checkpoints, metrics.jsonl, tensorboard/)")
    if not data.dataset_dir:
      raise ValueError("config.data.dataset_dir is required (a directory written by icl-ft-data)")
    if not _get(config.model, "tokenizer", ""):
      raise ValueError("config.model.tokenizer is required for training (a SentencePiece .model)")


def validate_eval(config: Any, require_inputs: bool = False) -> None:
  """A configs/eval.py-style config (icl-ft-eval)."""
  from icl_ft.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from icl_ft.inference import scoring  # pylint: disable=g-import-not-at-top

  condition = str(config.condition)
  if condition not in evaluate.BASE_CONDITIONS and not evaluate.FINETUNED_PATTERN.match(condition):
    raise ValueError(f"unknown condition {condition!r}; valid: pretrained, no_knowledge, icl, ft "
                     "or ft_<name>")
  validate_model(config.model, require_inputs=require_inputs)
  sizes = mesh_sizes(config.mesh)
  _one_of(config.scoring.metric, tuple(scoring.METRICS), "config.scoring.metric")
  batch = _int(config.scoring, "batch_size", "config.scoring", 1)
  dp = data_parallel(sizes)
  if dp and batch % dp:
    raise ValueError(f"config.scoring.batch_size={batch} is not a multiple of the data-parallel "
                     f"size {dp} (mesh data={sizes['data']} x fsdp={sizes['fsdp']})")
  _int(config.scoring, "prefill_chunk", "config.scoring", 1)
  _int(config.icl, "subsample", "config.icl", 1)
  if "multihost" in config:
    validate_multihost(config.multihost)
  validate_dry_run(config)
  if require_inputs:
    if not _RUN_NAME.match(str(_get(config, "run", ""))):
      raise ValueError(f"config.run must name the run (letters, digits, _.=+-), got {config.run!r}")
    if not evaluate.parse_list(config.datasets):
      raise ValueError("config.datasets is required: dataset directories written by icl-ft-data")
    if not _get(config.model, "tokenizer", ""):
      raise ValueError("config.model.tokenizer is required (a SentencePiece .model file)")
    evaluate.check_condition(condition, _get(config.model, "checkpoint", ""))


def validate_data(config: Any, require_inputs: bool = False) -> None:
  """A configs/data.py config (icl-ft-data): known dataset, scale, Params fields."""
  del require_inputs  # everything has a default
  from icl_ft.datasets import registry  # pylint: disable=g-import-not-at-top

  overrides = {k: v for k, v in config.params.items() if v is not None}
  registry.params(config.name, config.scale, **overrides)
  _int(config, "seed", "config", 0)


def validate_study(config: Any, require_inputs: bool = False) -> None:
  """A configs/study.py config (icl-ft-study): the study's own checks, then its blocks."""
  del require_inputs  # every input has a default (the study writes its own data)
  from icl_ft import study  # pylint: disable=g-import-not-at-top

  study.check_config(config)
  validate_model(config.model)
  sizes = mesh_sizes(config.mesh)
  dp = data_parallel(sizes)
  for block in ("train", "augment", "eval"):
    batch = _int(config[block], "batch_size", f"config.{block}", 1)
    if dp and batch % dp:
      raise ValueError(f"config.{block}.batch_size={batch} is not a multiple of the "
                       f"data-parallel size {dp} (mesh data={sizes['data']} x fsdp={sizes['fsdp']})")


def validate_sampling(sampling: Any, where: str = "config.sampling") -> None:
  """max_new_tokens >= 1, temperature >= 0 (0 = greedy), 0 < top_p <= 1."""
  _int(sampling, "max_new_tokens", where, 1)
  _number(sampling, "temperature", where)
  top_p = _number(sampling, "top_p", where)
  if not 0 < top_p <= 1:
    raise ValueError(f"{where}.top_p must be in (0, 1], got {top_p:g}")


def validate_augment(config: Any, require_inputs: bool = False) -> None:
  """A configs/augment.py config (icl-ft-augment)."""
  from icl_ft.augment import augment  # pylint: disable=g-import-not-at-top

  _one_of(config.strategy, augment.STRATEGIES, "config.strategy")
  validate_model(config.model, require_inputs=require_inputs)
  sizes = mesh_sizes(config.mesh)
  validate_sampling(config.sampling)
  _int(config, "seed", "config", 0)
  _int(config, "max_context_tokens", "config", 0)
  _int(config, "prefill_chunk", "config", 1)
  batch = _int(config, "batch_size", "config", 1)
  dp = data_parallel(sizes)
  if dp and batch % dp:
    raise ValueError(f"config.batch_size={batch} is not a multiple of the data-parallel size {dp} "
                     f"(mesh data={sizes['data']} x fsdp={sizes['fsdp']})")
  if require_inputs:
    for field in ("dataset_dir", "output_dir"):
      if not _get(config, field, ""):
        raise ValueError(f"config.{field} is required")
    if not _get(config.model, "tokenizer", ""):
      raise ValueError("config.model.tokenizer is required (a SentencePiece .model file)")


def validate_pretrain(config: Any, require_inputs: bool = False) -> None:
  """A configs/pretrain_tiny.py config (icl-ft-pretrain); `train` is a full train config."""
  for block, fields in (("corpus", ("num_episodes", "max_chars", "episodes_per_dataset")),
                        ("tokenizer", ("vocab_size", "max_texts")),
                        ("eval", ("episodes", "batch_size"))):
    for field in fields:
      _int(config[block], field, f"config.{block}", 1)
  _int(config, "workers", "config", 1)
  _int(config, "seed", "config", 0)
  try:
    validate_train(config.train)  # workdir, dataset and tokenizer are filled in by the stages
  except ValueError as e:
    raise ValueError(f"config.train (a configs/train.py config): {e}") from None
  if require_inputs and not _get(config, "workdir", ""):
    raise ValueError("config.workdir is required (corpus, tokenizer, checkpoints, eval.json)")


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
  """The config's kind (a VALIDATORS key) by its fields, else None."""
  keys = set(config.keys())
  kinds = [k for k, fields in KIND_FIELDS.items() if fields <= keys]
  return kinds[0] if kinds else None


def validate(config: Any, require_inputs: bool = False) -> str | None:
  """Validates `config` as its kind (and every nested block); returns the kind."""
  kind = kind_of(config)
  if kind is not None:
    VALIDATORS[kind](config, require_inputs=require_inputs)
  validate_blocks(config)
  return kind


def mesh_devices(sizes: dict[str, int]) -> int | None:
  """Devices a fixed mesh needs (None with a -1 axis)."""
  return None if -1 in sizes.values() else math.prod(sizes.values())
