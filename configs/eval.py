"""Config for `icl-ft-eval`: score a model on datasets' test questions under one condition.

Usage:
  icl-ft-eval --config=configs/eval.py:<condition> --config.run=NAME \
      --config.datasets=data/simple_reversals,data/syllogisms \
      --config.model.preset=tiny --config.model.tokenizer=tok.model \
      [--config.model.checkpoint=runs/ft/checkpoints] [--config.splits=reversal] \
      [--config.icl.subsample=8] [--config.prompt.chat=true] [--config.scoring.batch_size=64]

`<condition>` (default "pretrained") is the label written into the results and selects the
prompt: `pretrained` (no context), `no_knowledge` (no context; every nonsense word and celebrity
name replaced by fresh words: the contamination control), `icl` (each dataset's training
documents in context; split into context shards when they do not fit), or a
finetuned condition, `ft` or `ft_<name>` (no context; `model.checkpoint` must name the
finetuned weights, e.g. a training run's checkpoint directory).

Outputs in `<results_dir>/<run>/`: questions.jsonl (one record per question, appended and
flushed per batch; a re-run skips the questions already there), summary.json and table.md
(written at the end from questions.jsonl), run.json (the settings that determine the scores;
a re-run must match them unless `overwrite`).
"""

import ml_collections

from icl_ft import config_blocks


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Evaluation config for condition `arg` ("" = "pretrained")."""
  config = ml_collections.ConfigDict()
  config.condition = arg or "pretrained"
  config.run = ""  # required: results go to <results_dir>/<run>/
  config.results_dir = "results"
  config.overwrite = False  # true: discard an existing results/<run>/ instead of resuming

  # Dataset directories written by icl-ft-data (comma-separated), and the test splits to
  # score ("" = every split of each dataset; a named split must exist in at least one).
  config.datasets = ""
  config.splits = ""

  config.model = config_blocks.model_config("tiny")
  config.mesh = config_blocks.mesh_config()

  # Prompt text (icl_ft/evaluation/prompts.py): chat = Gemma's turn template for instruction-tuned models.
  config.prompt = ml_collections.ConfigDict()
  config.prompt.chat = False

  # ICL condition: keep a seeded 1/subsample of the training documents (1 = all of them).
  config.icl = ml_collections.ConfigDict()
  config.icl.subsample = 1
  config.icl.seed = 0
  # With subsample 1 and documents too long for the context: split them into context shards,
  # each question scored against one that states every fact it depends on (false: an error).
  config.icl.shards = True

  # no_knowledge: the seed of the nonsense word -> fresh word mapping (icl_ft.datasets.relabel).
  config.no_knowledge = ml_collections.ConfigDict()
  config.no_knowledge.seed = 0

  config.scoring = ml_collections.ConfigDict()
  config.scoring.metric = "sum"  # sum | mean: log-prob that picks the answer
  config.scoring.batch_size = 32  # (question, choice) rows per forward pass
  config.scoring.prefill_chunk = 1024  # context tokens per prefill call

  config.progress = True  # tqdm bar (questions/s)

  # Multi-host (every process scores; process 0 writes): see config_blocks.multihost_config.
  config.multihost = config_blocks.multihost_config()
  # --config.dry_run=true: compile the prefill and scoring steps abstractly, print memory /
  # FLOPs per device. The context length is measured from `datasets` when they and the
  # tokenizer are set, else these sizes (tokens) are used.
  config_blocks.add_dry_run_fields(config)
  config.dry_run_context_tokens = 4096
  config.dry_run_suffix_tokens = 64
  return config
