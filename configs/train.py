"""Config for `icl-ft-train`: finetune a model on one dataset's training documents.

Usage:
  icl-ft-train --config=configs/train.py:<preset> --config.workdir=runs/x \
      --config.data.dataset_dir=data/simple_reversals --config.data.format=split_cumulative \
      [--config.model.checkpoint=ckpt/pretrained --config.model.tokenizer=tok.model] \
      [--config.steps=500 --config.data.batch_size=16 --config.optimizer.learning_rate=3e-4]

`<preset>` is a model preset of icl_ft.model.config (default "tiny"). Paper defaults: batch 8
or 16, learning rate 3e-4, 200-1000 steps (here 500 with batch 16).

Outputs under `workdir`: checkpoints/<step>/ (orbax: params, opt_state, step, data_iter,
meta), metrics.jsonl, tensorboard/events.out.tfevents.*. A run whose checkpoint directory
already holds steps resumes from the latest complete one.
"""

import ml_collections

from icl_ft.config import schema


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Training config for model preset `arg` ("" = "tiny"); every field's default: schema.TrainConfig."""
  return schema.as_config_dict(schema.TrainConfig(model=schema.ModelConfig(preset=arg or "tiny")))
