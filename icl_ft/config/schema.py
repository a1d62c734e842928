"""The binaries' configs, typed: one frozen dataclass per kind and per shared block, with defaults.

Kinds: `DataConfig` (icl-ft-data), `TrainConfig` (icl-ft-train), `EvalConfig` (icl-ft-eval),
`AugmentConfig` (icl-ft-augment), `StudyConfig` (icl-ft-study), `PretrainConfig`
(icl-ft-pretrain). Blocks shared by several kinds: `ModelConfig`, `MeshConfig`,
`MultihostConfig`. Field names are those of the configs/*.py files and the `--config.<field>`
flags; the defaults here are the only ones (the config files start from them).

`as_config_dict(config)` gives the ml-collections form the config files return (and absl's
config_flags overrides); `typed(kind, config_dict)` turns it back into the typed config at the
binary's edge (an unknown field is a ValueError naming it). Values are not checked here:
`icl_ft.config.checks` does that.

Longer than 450 lines: every binary's fields with their defaults and comments in one file,
the one place a reader (and `--help`) learns them from.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import ml_collections

# The study's conditions in table order (docs: the shared vocabulary).
STUDY_CONDITIONS = ("pretrained", "no_knowledge", "icl", "ft", "ft_split", "ft_aug_local",
                    "ft_aug_global", "ft_aug_all")
STUDY_DATASETS = ("simple_reversals", "syllogisms", "celebrities", "semantic_structure")


def _frozen(cls):
  return dataclasses.dataclass(frozen=True)(cls)


# ---------------------------------------------------------------------------
# Shared blocks
# ---------------------------------------------------------------------------


@_frozen
class ModelConfig:
  """Which model to build and which weights / tokenizer to load into it.

  preset: a name from icl_ft.model.config (e.g. "tiny", "gemma2_2b", "gemma3_1b").
  checkpoint: directory of the weights; "" = fresh random init (seed).
  checkpoint_format: "icl_ft" (our params-only orbax checkpoint, icl_ft.model.checkpoints) or
    "gemma" (an official Gemma release: flat `transformer/layer_N/...` orbax tree).
  tokenizer: path of a SentencePiece `.model` file; "" = none (load_model returns None for it).
  seed: parameter-init seed for a fresh model.
  dtype: compute dtype override ("" = the preset's), e.g. "bfloat16" or "float32".
  param_dtype: parameter dtype override ("" = the preset's).
  """

  preset: str = "tiny"
  checkpoint: str = ""
  checkpoint_format: str = "icl_ft"
  tokenizer: str = ""
  seed: int = 0
  dtype: str = ""
  param_dtype: str = ""


@_frozen
class MeshConfig:
  """Mesh axis sizes (-1 = all remaining devices) and overrides of the sharding rules.

  data, fsdp, tensor: axis sizes; their product must equal the device count.
  rules: logical axis name -> mesh axis name, tuple of names, or None; entries update
    icl_ft.sharding.DEFAULT_RULES (e.g. config.mesh.rules.embed = None to stop FSDP of the
    embedding dimension).
  """

  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  rules: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@_frozen
class MultihostConfig:
  """Multi-host initialization (`icl_ft.sharding.initialize_distributed`).

  initialize: call jax.distributed.initialize before anything touches the devices. Also turned
    on by the environment variable ICL_FT_MULTIHOST=1 (launch_tpu.sh's `run` sets it).
  coordinator_address, num_processes (0 = unset), process_id (-1 = unset): unset fields come
    from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, then from JAX's cluster
    auto-detection (TPU pods, SLURM, ...).
  cpu_collectives: jax_cpu_collectives_implementation on CPU ("gloo").
  """

  initialize: bool = False
  coordinator_address: str = ""
  num_processes: int = 0
  process_id: int = -1
  cpu_collectives: str = "gloo"


# ---------------------------------------------------------------------------
# icl-ft-train
# ---------------------------------------------------------------------------


@_frozen
class TrainData:
  """A dataset directory written by icl-ft-data (train.jsonl + card.json) and its batches."""

  dataset_dir: str = ""
  format: str = "split_cumulative"  # document | split_independent | split_cumulative
  seq_len: int = 256
  batch_size: int = 16  # global batch (rows of seq_len packed tokens)
  seed: int = 0
  num_packing_bins: int = 0  # 0 = the pipeline's default


@_frozen
class OptimizerConfig:
  """AdamW with warmup and a schedule (icl_ft.train.optimizer)."""

  name: str = "adamw"
  learning_rate: float = 3e-4
  schedule: str = "cosine"  # constant | cosine | linear (after warmup)
  warmup_steps: int = 20
  final_lr_fraction: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 0.0
  clip_norm: float = 1.0  # 0 = no clipping


@_frozen
class CheckpointConfig:
  """Orbax checkpoints of a training run."""

  dir: str = ""  # "" = <workdir>/checkpoints
  every: int = 100
  keep: int = 2
  async_save: bool = True
  resume: bool = True  # resume from the latest complete checkpoint if any


@_frozen
class TrainEval:
  """Held-out loss (optional): every `every` steps, up to `num_batches` batches of one pass."""

  dataset_dir: str = ""  # "" = no eval
  format: str = ""  # "" = data.format
  every: int = 100
  num_batches: int = 8


@_frozen
class LogConfig:
  """Metrics records and the progress bar."""

  every: int = 1  # JSONL / TensorBoard record every N steps
  tensorboard: bool = True
  progress: bool = True  # tqdm bar (process 0)
  batch_ids: bool = False  # log the example ids of each batch (resume tests, debugging)


@_frozen
class TrainConfig:
  """icl-ft-train: finetune a model on one dataset's training documents.

  dry_run: compile the step with abstract inputs, print per-device memory and FLOPs, and exit 1
    if it does not fit; no weights are loaded, nothing is written (icl_ft.scale.dry_run).
  device_memory_gib: memory per device the dry run checks against; 0 = what the device reports.
  """

  workdir: str = ""  # required: checkpoints/, metrics.jsonl, tensorboard/ go here
  model: ModelConfig = ModelConfig()
  mesh: MeshConfig = MeshConfig()
  data: TrainData = TrainData()
  optimizer: OptimizerConfig = OptimizerConfig()
  steps: int = 500
  checkpoint: CheckpointConfig = CheckpointConfig()
  eval: TrainEval = TrainEval()
  log: LogConfig = LogConfig()
  multihost: MultihostConfig = MultihostConfig()
  dry_run: bool = False
  device_memory_gib: float = 0.0


# ---------------------------------------------------------------------------
# icl-ft-eval
# ---------------------------------------------------------------------------


@_frozen
class PromptConfig:
  """Prompt text (icl_ft/evaluation/prompts.py): chat = Gemma's turn template."""

  chat: bool = False


@_frozen
class IclConfig:
  """ICL condition: a seeded 1/subsample of the training documents; shards when too long."""

  subsample: int = 1
  seed: int = 0
  shards: bool = True


@_frozen
class NoKnowledgeConfig:
  """no_knowledge: the nonsense word -> fresh word mappings (datasets.relabel)."""

  seed: int = 0  # of the first mapping; mapping k has seed + k
  # Fresh-word draws scored: their spread is how far word choice alone moves the accuracy,
  # the yardstick of the contamination check (study table.md).
  relabellings: int = 8


@_frozen
class ScoringConfig:
  """Multiple-choice scoring (icl_ft.inference.scoring)."""

  metric: str = "sum"  # sum | mean: log-prob that picks the answer
  batch_size: int = 32  # (question, choice) rows per forward pass
  prefill_chunk: int = 1024  # context tokens per prefill call


@_frozen
class EvalConfig:
  """icl-ft-eval: score a model on datasets' test questions under one condition."""

  condition: str = "pretrained"
  run: str = ""  # required: results go to <results_dir>/<run>/
  results_dir: str = "results"
  overwrite: bool = False  # true: discard an existing results/<run>/ instead of resuming
  datasets: str = ""  # dataset directories written by icl-ft-data (comma-separated)
  splits: str = ""  # "" = every split of each dataset
  model: ModelConfig = ModelConfig()
  mesh: MeshConfig = MeshConfig()
  prompt: PromptConfig = PromptConfig()
  icl: IclConfig = IclConfig()
  no_knowledge: NoKnowledgeConfig = NoKnowledgeConfig()
  scoring: ScoringConfig = ScoringConfig()
  progress: bool = True  # tqdm bar (questions/s)
  multihost: MultihostConfig = MultihostConfig()
  dry_run: bool = False
  device_memory_gib: float = 0.0
  # Dry run without datasets or tokenizer: the context and suffix lengths (tokens).
  dry_run_context_tokens: int = 4096
  dry_run_suffix_tokens: int = 64


# ---------------------------------------------------------------------------
# icl-ft-data, icl-ft-augment
# ---------------------------------------------------------------------------


@_frozen
class DataConfig:
  """icl-ft-data: one dataset, generated (or the original release converted) and written."""

  name: str = ""
  seed: int = 0
  scale: str = "paper"
  output_dir: str = "data"
  overwrite: bool = False
  original_dir: str = ""
  icl_context_subsample: int = 0
  icl_context_splits: str = ""
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # Params overrides


@_frozen
class SamplingConfig:
  """Generation settings (icl_ft.inference.sampling.SamplingParams)."""

  max_new_tokens: int = 128
  temperature: float = 0.7  # 0 = greedy
  top_p: float = 0.95


@_frozen
class AugmentConfig:
  """icl-ft-augment: an augmented copy of a dataset by in-context augmentation."""

  strategy: str = "global"
  dataset_dir: str = ""  # required: a directory written by icl-ft-data
  output_dir: str = ""  # required: where the augmented dataset goes
  overwrite: bool = False
  seed: int = 0  # sampling seed and the seed of the corpus subsample (global)
  model: ModelConfig = ModelConfig()
  mesh: MeshConfig = MeshConfig()
  # Global augmentation: at most this many context tokens (0 = whatever fits).
  max_context_tokens: int = 0
  sampling: SamplingConfig = SamplingConfig()
  batch_size: int = 32  # prompts per compiled decode call (multiple of data x fsdp)
  prefill_chunk: int = 1024  # context tokens per prefill call
  progress: bool = True  # tqdm bar (prompts/s)


# ---------------------------------------------------------------------------
# icl-ft-study
# ---------------------------------------------------------------------------


@_frozen
class StudyTrain:
  """The study's finetuning: every finetuned condition of a dataset runs the same steps."""

  # > 0 = that many for every dataset; 0 = per dataset, enough for `epochs` passes over its
  # plain `ft` examples.
  steps: int = 0
  epochs: float = 20.0
  batch_size: int = 8
  # Rows of 128 tokens hold ~2-5 short documents each: more (smaller) steps for the same
  # tokens. Raised per dataset to the next power of two >= its longest example.
  seq_len: int = 128
  learning_rate: float = 1e-3
  warmup_steps: int = 3
  schedule: str = "cosine"
  checkpoint_every: int = 0  # 0 = only at the last step
  # False: delete a finetuned run's checkpoints once its evaluation is done (large models).
  keep_checkpoints: bool = True
  format: str = "document"  # ft
  split_format: str = "split_independent"  # ft_split (the paper's default splitting)
  aug_format: str = "document"  # ft_aug_*: original documents + generated traces


@_frozen
class StudyAugment:
  """The study's augmentation sampling (icl_ft.augment.augment_dataset)."""

  max_new_tokens: int = 64
  temperature: float = 0.0
  top_p: float = 1.0
  batch_size: int = 16


@_frozen
class StudyEval:
  """The study's evaluation (icl_ft.evaluation.evaluate.evaluate)."""

  batch_size: int = 32
  metric: str = "sum"
  prefill_chunk: int = 1024
  # ICL documents subsample factor: 0 = auto (1 if the whole training set fits the model's
  # context, else context shards, or with icl_shards false the smallest factor that fits);
  # k > 0 = k for every dataset.
  icl_subsample: int = 0
  # Training sets longer than the context: split into shards that each fit, every question
  # scored against one stating every fact it depends on (icl_ft.evaluation.contexts).
  icl_shards: bool = True
  chat: bool = False


@_frozen
class StudyConfig:
  """icl-ft-study: the controlled study end to end (the main job).

  `model` defaults to a fresh `tiny`; the study's default config
  (`icl_ft.study.settings.default_config`) puts the committed default model there when installed.
  """

  run: str = "default"  # results go to <results_dir>/<run>/
  results_dir: str = "results"
  overwrite: bool = False  # true: delete <results_dir>/<run>/ and start again
  datasets: str = ",".join(STUDY_DATASETS)  # comma-separated registry names
  scale: str = "small"
  data_seed: int = 0  # dataset generation seed (the same documents for every condition)
  # Per-dataset Params overrides, e.g. config.dataset_params.simple_reversals.num_facts = 4.
  dataset_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  conditions: str = ",".join(STUDY_CONDITIONS)
  seeds: str = "0"  # comma-separated run seeds
  model: ModelConfig = ModelConfig()
  mesh: MeshConfig = MeshConfig()
  # Only for a fresh model without a tokenizer: SentencePiece pieces (0 = the preset's rows).
  tokenizer_vocab_size: int = 0
  train: StudyTrain = StudyTrain()
  augment: StudyAugment = StudyAugment()
  eval: StudyEval = StudyEval()
  progress: bool = True  # per-stage lines; tqdm bars inside training and evaluation
  # Persistent XLA compilation cache: "auto" = <results_dir>/xla_cache; "" = JAX's setting.
  compilation_cache_dir: str = "auto"
  figure: bool = True


# ---------------------------------------------------------------------------
# icl-ft-pretrain
# ---------------------------------------------------------------------------


@_frozen
class CorpusConfig:
  """The synthetic pretraining corpus (icl_ft.pretrain.corpus)."""

  num_episodes: int = 20_000
  max_chars: int = 1300
  episodes_per_dataset: int = 3
  dataset_scale: float = 1.0  # > 1 with a larger max_chars: longer episodes
  # "name:weight,..." over corpus.FAMILIES / corpus.KINDS; "" = the generator's own mix.
  family_weights: str = ""
  kind_weights: str = ""


@_frozen
class TokenizerTraining:
  """The SentencePiece tokenizer trained on the corpus."""

  vocab_size: int = 1024
  max_texts: int = 200_000  # lines of the corpus used to train it


@_frozen
class PretrainEval:
  """Held-out in-context evaluation: new-seed episodes per family, every split scored."""

  episodes: int = 8  # per family
  batch_size: int = 8
  # > 0: each held-out context padded with distractor documents to about this many characters;
  # 0: the episode's own documents.
  context_chars: int = 0


def _pretrain_train() -> TrainConfig:
  """The default model's training run (model `tiny_default`, document rows)."""
  return TrainConfig(
      model=ModelConfig(preset="tiny_default"),
      # One CPU device; more devices would only add communication.
      mesh=MeshConfig(data=1),
      # Short rows: with dense attention, whose [B, N, L, L] float32 scores dominated a step of
      # this tiny model on CPU, 8 x 512 ran ~2x the tokens/s of 4 x 1024 for the same tokens.
      data=TrainData(format="document", seq_len=512, batch_size=8),
      # Constant after warmup: the run can be stopped at any checkpoint (2 shared CPU cores).
      optimizer=OptimizerConfig(learning_rate=2e-3, warmup_steps=50, schedule="constant",
                                weight_decay=0.0),
      steps=3000,
      checkpoint=CheckpointConfig(every=50, keep=4),
      log=LogConfig(every=10, tensorboard=False))


@_frozen
class PretrainConfig:
  """icl-ft-pretrain: the tiny default model, from corpus to committed assets."""

  workdir: str = ""  # required
  export_dir: str = ""  # "" = do not export; the package assets: icl_ft/assets/tiny
  seed: int = 0
  workers: int = 2  # corpus generation processes
  corpus: CorpusConfig = CorpusConfig()
  tokenizer: TokenizerTraining = TokenizerTraining()
  train: TrainConfig = dataclasses.field(default_factory=_pretrain_train)
  eval: PretrainEval = PretrainEval()
  note: str = ""  # written into the card as is (e.g. where and how the run was trained)


KINDS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "eval": EvalConfig,
                          "augment": AugmentConfig, "study": StudyConfig,
                          "pretrain": PretrainConfig}


# ---------------------------------------------------------------------------
# ConfigDict <-> typed
# ---------------------------------------------------------------------------


def plain(value: Any) -> Any:
  """A typed config, ConfigDict or mapping as nested plain dicts (JSON-ready); others unchanged."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if hasattr(value, "to_dict"):
    return value.to_dict()
  if isinstance(value, Mapping):
    return {k: plain(v) for k, v in value.items()}
  return value


def as_config_dict(config: Any) -> ml_collections.ConfigDict:
  """The ml-collections form of a typed config (what configs/*.py return), in field order."""
  out = ml_collections.ConfigDict()
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      out[field.name] = as_config_dict(value)
    elif isinstance(value, Mapping):
      out[field.name] = ml_collections.ConfigDict(plain(value))
    else:
      out[field.name] = value
  return out


def build(cls: type, values: Any, where: str = "config") -> Any:
  """`cls` with the fields `values` (a ConfigDict, mapping or typed config) sets; defaults else.

  Raises ValueError naming a field `cls` does not have.
  """
  if isinstance(values, cls):
    return values
  if dataclasses.is_dataclass(values):
    values = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
  hints = typing.get_type_hints(cls)
  names = {f.name for f in dataclasses.fields(cls)}
  kwargs = {}
  for key in values.keys():
    if key not in names:
      raise ValueError(f"unknown config field {where}.{key}")
    value, hint = values[key], hints[key]
    if dataclasses.is_dataclass(hint):
      kwargs[key] = build(hint, value, f"{where}.{key}")
    elif typing.get_origin(hint) is Mapping:
      kwargs[key] = plain(value) or {}
    else:
      kwargs[key] = value
  return cls(**kwargs)


def typed(kind: str, values: Any) -> Any:
  """The typed config of binary kind `kind` (a KINDS key) from a ConfigDict or mapping."""
  return build(KINDS[kind], values)
