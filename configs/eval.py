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

from icl_ft.config import schema


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Evaluation config for condition `arg` ("" = "pretrained"); defaults: schema.EvalConfig."""
  return schema.as_config_dict(schema.EvalConfig(condition=arg or "pretrained"))
