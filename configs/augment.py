"""Config for `icl-ft-augment`: write an augmented copy of a dataset by in-context augmentation.

Usage:
  icl-ft-augment --config=configs/augment.py:<strategy> --config.dataset_dir=data/syllogisms \
      --config.output_dir=data/syllogisms_aug_global --config.model.checkpoint=CKPT \
      --config.model.tokenizer=tok.model [--config.sampling.temperature=0.7] \
      [--config.max_context_tokens=8192] [--config.batch_size=64]

`<strategy>` (default "global"): `local` (restate each training sentence), `global` (the
training corpus in context, inferences per document) or `all` (both). The output directory
holds train.jsonl (original documents + generated ones, each with its provenance and audit
label in `metadata`), the unchanged test files, and card.json with an `augmentation` block.
"""

import ml_collections

from icl_ft.config import schema


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Augmentation config for strategy `arg` ("" = "global"); defaults: schema.AugmentConfig."""
  return schema.as_config_dict(schema.AugmentConfig(strategy=arg or "global"))
