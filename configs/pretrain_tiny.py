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

import os

import ml_collections

from icl_ft import config_blocks


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Pretraining config; `arg` "" (the default model) or "test" (a few steps, tiny corpus)."""
  config = ml_collections.ConfigDict()
  config.workdir = ""  # required
  config.export_dir = ""  # "" = do not export; the package assets: icl_ft/assets/tiny
  config.seed = 0
  config.workers = 2  # corpus generation processes

  config.corpus = ml_collections.ConfigDict()
  config.corpus.num_episodes = 20_000
  config.corpus.max_chars = 1300
  config.corpus.episodes_per_dataset = 3
  config.corpus.dataset_scale = 1.0  # > 1 with a larger max_chars: longer episodes

  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.vocab_size = 1024
  config.tokenizer.max_texts = 200_000  # lines of the corpus used to train it

  config.train = config_blocks.config_module(
      "train", os.path.dirname(os.path.abspath(__file__))).get_config("tiny_default")
  config.train.data.format = "document"
  # Short rows: with dense attention, whose [B, N, L, L] float32 scores dominated a step of this
  # tiny model on CPU, 8 x 512 ran ~2x the tokens/s of 4 x 1024 for the same tokens per step.
  config.train.data.seq_len = 512
  config.train.data.batch_size = 8
  # Constant after warmup: the run can be stopped at any checkpoint (2 shared CPU cores).
  config.train.optimizer.learning_rate = 2e-3
  config.train.optimizer.warmup_steps = 50
  config.train.optimizer.schedule = "constant"
  config.train.optimizer.weight_decay = 0.0
  config.train.steps = 3000
  config.train.checkpoint.every = 50
  config.train.checkpoint.keep = 4
  config.train.log.every = 10
  config.train.log.tensorboard = False
  config.train.mesh.data = 1  # one CPU device; more devices would only add communication

  # Held-out in-context evaluation: new-seed episodes per family, every split scored.
  config.eval = ml_collections.ConfigDict()
  config.eval.episodes = 8  # per family
  config.eval.batch_size = 8
  # > 0: each held-out context padded with distractor documents to about this many characters
  # (~4000: as long as the study's simple-reversals context); 0: the episode's own documents.
  config.eval.context_chars = 0

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
