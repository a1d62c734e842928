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

from icl_ft import config_blocks


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Augmentation config for strategy `arg` ("" = "global")."""
  config = ml_collections.ConfigDict()
  config.strategy = arg or "global"
  config.dataset_dir = ""  # required: a directory written by icl-ft-data
  config.output_dir = ""  # required: where the augmented dataset goes
  config.overwrite = False
  config.seed = 0  # sampling seed and the seed of the corpus subsample (global)

  config.model = config_blocks.model_config("tiny")
  config.mesh = config_blocks.mesh_config()

  # Global augmentation: at most this many context tokens (0 = whatever fits the model's
  # max_seq_len after room for the document and the generation); documents beyond it are
  # subsampled (seeded) and the card says how many were in context.
  config.max_context_tokens = 0

  config.sampling = ml_collections.ConfigDict()
  config.sampling.max_new_tokens = 128
  config.sampling.temperature = 0.7  # 0 = greedy
  config.sampling.top_p = 0.95

  config.batch_size = 32  # prompts per compiled decode call (multiple of data x fsdp)
  config.prefill_chunk = 1024  # context tokens per prefill call
  config.progress = True  # tqdm bar (prompts/s)
  return config
