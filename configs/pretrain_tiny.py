"""Config for `icl-ft-pretrain`: the tiny default model, from corpus to committed assets.

Usage:
  icl-ft-pretrain --config=configs/pretrain_tiny.py --config.workdir=/tmp/pretrain
  icl-ft-pretrain --config=configs/pretrain_tiny.py:test --config.workdir=/tmp/pt  # seconds
  icl-ft-pretrain --config=configs/pretrain_tiny.py:long --config.workdir=/tmp/long \
      --config.train.model.checkpoint=STAGE1/params --config.export_dir=/tmp/long/model

Variants (`arg`):
  "" (stage 1)  the short-episode run from scratch: 3000 steps of 8 x 512-token rows (12.3M
                tokens); its export was the default model until the long stage replaced it.
  long          stage 2: stage 1's model (its exported params/, and so its tokenizer)
                continued on episodes as long as the study's ICL contexts (`dataset_scale` 4,
                up to 6000 characters, 2048-token rows, lr 1e-3), held-out contexts of ~4000
                characters; the default model until the curriculum's j3200 stage replaced it.
  j600 ... j4500  the length curriculum J of docs/pretraining.md: the long stage's model
                continued on episodes that grow stage by stage (`CURRICULUM`: at most 600, 900,
                1300, 1900, 2400, 3200, 4500 characters), each stage from the previous one's
                export; the committed default is the j3200 stage's export, e.g.
                  icl-ft-pretrain --config=configs/pretrain_tiny.py:j600 --config.workdir=J600 \
                      --config.train.model.checkpoint=LONG/params --config.export_dir=J600/model
                  icl-ft-pretrain --config=configs/pretrain_tiny.py:j900 --config.workdir=J900 \
                      --config.train.model.checkpoint=J600/model/params --config.export_dir=J900/model
                  ... through :j3200 with --config.export_dir=icl_ft/assets/tiny
  test          a few steps on a tiny corpus (seconds; the tests).

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

# Stage 2's length: the step of the long run's checkpoint that the curriculum continued.
LONG_STEPS = 8000

# The length curriculum J: variant -> (max_chars, dataset_scale, num_episodes, steps). Short
# episodes hold a few documents; `dataset_scale` grows the generated datasets once the cap
# passes what a scale-1 dataset holds (~1400 characters on average).
CURRICULUM = {
    "j600": (600, 1.0, 30_000, 2000),
    "j900": (900, 1.0, 20_000, 1500),
    "j1300": (1300, 1.0, 15_000, 1500),
    "j1900": (1900, 1.0, 12_000, 1500),
    "j2400": (2400, 1.0, 8_000, 1500),
    "j3200": (3200, 2.0, 6_000, 1500),
    "j4500": (4500, 3.0, 5_000, 1500),
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Pretraining config; `arg` "" (stage 1), "long" (stage 2), a `CURRICULUM` stage
  (j3200: the default model) or "test".

  Every field and its default: icl_ft.config.schema.PretrainConfig (its `train` block is
  stage 1's training run).
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
  elif arg == "long" or arg in CURRICULUM:
    config.workers = 1
    config.corpus.num_episodes = 12000
    config.corpus.max_chars = 6000
    config.corpus.dataset_scale = 4.0
    # The same tokens per step as stage 1 in rows that hold a whole long episode.
    config.train.data.seq_len = 2048
    config.train.data.batch_size = 2
    config.train.optimizer.learning_rate = 1e-3
    config.train.steps = LONG_STEPS
    config.train.checkpoint.every = 250
    config.train.checkpoint.keep = 3
    config.train.log.every = 50
    config.eval.context_chars = 4000
    if arg in CURRICULUM:
      max_chars, scale, episodes, steps = CURRICULUM[arg]
      config.corpus.max_chars = max_chars
      config.corpus.dataset_scale = scale
      config.corpus.num_episodes = episodes
      config.corpus.episodes_per_dataset = 6
      config.train.steps = steps
  elif arg:
    raise ValueError(f"unknown pretrain config {arg!r}; valid: '', 'long', 'test', "
                     f"{', '.join(CURRICULUM)}")
  return config
