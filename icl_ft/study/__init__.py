"""The controlled study end to end: `run.run_study(config) -> StudyResult` (configs/study.py).

For each dataset (generated once, at one seed: every condition sees the same documents):

  pretrained      evaluate the base model, no context
  no_knowledge    the contamination control: `pretrained` on the same questions with every
                  nonsense word and celebrity name replaced by fresh words no document holds
                  (`icl_ft.datasets.relabel`); table.md says, per split, whether `pretrained`
                  is within 2 SE of it (`report.knowledge_check`)
  icl             evaluate the base model with the training documents in context; when they
                  do not fit the model's context, in context shards (`icl_ft.evaluation.contexts`:
                  each question against a shard stating every fact it depends on), recorded
                  in table.md
  ft              finetune on the documents (`train.format`, default `document`), evaluate
  ft_split        finetune on the documents split into sentences (`train.split_format`);
                  only datasets with multi-sentence documents (syllogisms, semantic_structure)
  ft_aug_<s>      augment the documents with the base model's own in-context inferences
                  (`icl_ft.augment.augment_dataset`, strategy s = local | global | all), then
                  finetune on original + generated documents, evaluate; `all` merges the
                  local and the global generations of the same seed (`merge_augmented`:
                  what `augment_dataset(..., "all")` samples, without sampling it twice)

Everything runs in this process through the library functions the binaries use:
`datasets.registry.generate` + `records.write_dataset` -> `train.loop.train` (a typed train
config, `configs.train_config`) -> orbax checkpoints -> `evaluate.evaluate` (a typed eval config,
`configs.eval_config`); both are built from the package's schema, never from files in configs/.
Every finetuned condition of a dataset runs the same steps at the same batch size; the
examples, tokens and epochs each one trained on are reported (study.json, table.md).

Outputs in `<results_dir>/<run>/`:

  data/<dataset>/                  the dataset (icl-ft-data layout); data/<dataset>_aug_<s>_s<seed>/
  tokenizer.model                  only for a fresh model without a tokenizer (smoke setups)
  train/<dataset>/<condition>_s<seed>/   icl-ft-train workdir (checkpoints/, metrics.jsonl)
  eval/<dataset>/<condition>[_s<seed>]/  icl-ft-eval run (questions.jsonl, summary.json, table.md)
  stages/<stage>.json              completion markers (seconds and what the stage produced)
  summary.json                     rows {dataset, split, condition, seed, accuracy, se, n, chance,
                                   subset_se, subsets} (icl_ft.evaluation.report: se is binomial)
  table.md                         accuracy ± binomial SE per dataset x split x condition (seeds
                                   pooled), the paper's subset SE labelled, augmentation
                                   usability, then the finetuning data of every finetuned condition
  figure.png                       a panel per (dataset, split): a bar per condition, SE bars,
                                   the chance level as a dashed line (icl_ft.evaluation.plots)
  study.json                       settings, model, devices, per-stage timings, finetuning data

Resuming: a stage whose marker exists is skipped; an interrupted training resumes from its
last checkpoint and an interrupted evaluation from its questions.jsonl. `settings.json` holds
the settings that determine the results; re-running with different ones is an error unless
`overwrite` (which deletes the run directory first).

Seeds: `seeds` lists run seeds. A seed sets the finetuning data order, the ICL subsample and
the augmentation sampling; the dataset (`data_seed`) and the base model are the same for all.
Conditions that do not depend on the seed (`pretrained`, `no_knowledge`; `icl` with the whole
training set in context or in shards) are evaluated once, with the first seed.

Modules: `plan` (conditions, the default config, settings, the stage count, ICL subsample),
`configs` (the train / eval configs of a stage), `finetuning` (examples, steps, tokens,
augmented data, the smoke tokenizer), `stages` (completion markers, timings), `outputs`
(summary.json, table.md, figure.png, study.json), `run` (`run_study`).
"""
