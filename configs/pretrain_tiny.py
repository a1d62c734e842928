"""Config for `icl-ft-pretrain`: the tiny default model, from corpus to committed assets.

Usage:
  icl-ft-pretrain --config=configs/pretrain_tiny.py --config.workdir=/tmp/pretrain
  icl-ft-pretrain --config=configs/pretrain_tiny.py:test --config.workdir=/tmp/pt  # seconds

Stages (each skipped when its output exists in `workdir`, so a rerun resumes):
  corpus/      icl_ft.pretrain.corpus.generate(corpus params) as a Dataset (train.jsonl)
  tokenizer.model   SentencePiece (BPE, `tokenizer.vocab_size` pieces) trained on the corpus
  train/       icl_ft.train.loop.train(config.train): the same library as `icl-ft-train`
  eval.json    held-out in-context accuracy (new-seed episodes, multiple-choice scoring)
  then, with `export_dir` set, the assets: tokenizer.model, params/ (orbax), config.json, card.json

`config.train` is a full `configs/train.py` config (its model is `tiny_default`); every field
can be overridden, e.g. `--config.train.steps=3000`.
"""

import ml_collections

from icl_ft.config import schema


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Pretraining config; `arg` "" (the default model) or "test" (a few steps, tiny corpus).

  Every field and its default: icl_ft.config.schema.PretrainConfig (its `train` block is the
  default model's training run).
  """
  config = schema.as_config_dict(schema.PretrainConfig())
  if arg == "test":
    config.workers = 1
    config.corpus.num_episodes = 60
    config.corpus.max_chars = 900
    config.train.data.seq_len = 512
    config.train.data.batch_size = 4
    config.train.steps = 12
    config.train.optimizer.warmup_steps = 2
    config.train.checkpoint.every = 0
    config.train.log.every = 1
    config.train.log.progress = False
    config.eval.episodes = 2
  elif arg:
    raise ValueError(f"unknown pretrain config {arg!r}; valid: '' or 'test'")
  return config
