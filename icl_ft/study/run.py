"""`run_study(config) -> StudyResult`: the study's stages in order (see icl_ft.study)."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from icl_ft import fileio
from icl_ft import sharding
from icl_ft.augment import augment as augment_lib
from icl_ft.config import checks
from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.datasets import registry
from icl_ft.evaluation import evaluate
from icl_ft.inference import sampling
from icl_ft.model import loader
from icl_ft.study import configs
from icl_ft.study import finetuning as ft_lib
from icl_ft.study import outputs
from icl_ft.study import plan
from icl_ft.study import stages as stages_lib
from icl_ft.train import loop


@dataclasses.dataclass
class StudyResult:
  """What `run_study` did.

  rows: summary rows per seed (summary.json); table_rows: seeds pooled (table.md, figure.png);
  finetuning: one dict per finetuned (dataset, condition, seed); stages: every stage in order.
  """

  run_dir: Path
  rows: list[dict[str, Any]]
  table_rows: list[dict[str, Any]]
  finetuning: list[dict[str, Any]]
  stages: list[stages_lib.StageRecord]
  seconds: float
  table: str


def run_study(config: schema.StudyConfig) -> StudyResult:
  """Runs the study described by `config` (configs/study.py); see icl_ft.study.

  Validates the config, then holds the run directory's lock (`fileio.run_dir_lock`): a second
  study into the same run directory is refused at once, before it reads or writes anything there.
  """
  checks.validate_study(config)
  run_dir = Path(config.results_dir) / str(config.run)
  with fileio.run_dir_lock(run_dir, "study"):
    return _run_study(config, run_dir)


def _run_study(config: schema.StudyConfig, run_dir: Path) -> StudyResult:
  """`run_study` under the run directory's lock."""
  start = time.perf_counter()
  names, conditions, seeds = checks.study_plan(config)
  progress = bool(config.progress)
  settings = plan.settings_of(config)
  if config.overwrite and run_dir.exists():
    stages_lib.clear_run_dir(run_dir)
  fileio.check_run_dir(run_dir, outputs.SETTINGS_FILE, settings, "a study")
  fileio.atomic_write(run_dir / outputs.SETTINGS_FILE,
                      stages_lib.to_json(fileio.portable_paths(settings, run_dir)))
  cache = str(config.compilation_cache_dir or "")
  if cache:
    stages_lib.enable_compilation_cache(Path(config.results_dir) / "xla_cache"
                                        if cache == "auto" else cache)

  model_cfg = config.model
  preset_cfg = loader.model_config_from(model_cfg)
  max_len = int(preset_cfg.max_seq_len)
  fresh_tokenizer = not model_cfg.tokenizer
  if fresh_tokenizer and model_cfg.checkpoint:
    raise ValueError("config.model.tokenizer is required with a model checkpoint "
                     f"({model_cfg.checkpoint})")

  # Multi-sentence datasets are known only after generation; count ft_split for all first.
  stages = stages_lib.Stages(run_dir, plan.plan_size(names, conditions, seeds, {},
                                                     fresh_tokenizer), progress)

  # 1. Datasets: generated once; every condition trains / tests on these files.
  data_dirs: dict[str, Path] = {}
  datasets: dict[str, records.Dataset] = {}
  for name in names:
    directory = run_dir / "data" / name

    def make(name=name, directory=directory) -> dict[str, Any]:
      overrides = dict(config.dataset_params.get(name) or {})
      ds = registry.generate(name, config.scale, int(config.data_seed), **overrides)
      records.write_dataset(ds, directory, overwrite=True)
      return {"dir": str(directory), "documents": len(ds.train),
              "questions": {s: len(q) for s, q in ds.tests.items()}}

    stages.run(f"data/{name}", "data", make)
    data_dirs[name] = directory
    datasets[name] = records.read_dataset(directory)
  multi = {n: any(len(d.sentences) > 1 for d in ds.train) for n, ds in datasets.items()}
  stages.total = plan.plan_size(names, conditions, seeds, multi, fresh_tokenizer)

  # 2. Tokenizer (only a fresh model without one: trained on the study's own text).
  if fresh_tokenizer:
    tok_path = run_dir / outputs.TOKENIZER_FILE
    vocab = int(config.tokenizer_vocab_size or 0) or int(preset_cfg.vocab_size)
    stages.run("tokenizer", "tokenizer",
               lambda: (ft_lib.train_tokenizer(list(datasets.values()), vocab, tok_path),
                        {"path": str(tok_path), "vocab_size": vocab})[1])
    model_cfg = dataclasses.replace(model_cfg, tokenizer=str(tok_path))
  tokenizer = loader.load_tokenizer(model_cfg, preset_cfg)

  base: dict[str, Any] = {}  # the base model for augmentation, loaded on first use

  def base_model():
    if not base:
      mesh, rules = sharding.mesh_from_config(config.mesh)
      model, _ = loader.load_model(model_cfg, mesh, rules)
      base.update(model=model, mesh=mesh, rules=rules)
    return base

  def evaluate_stage(name: str, condition: str, run: str, checkpoint: str | None,
                     subsample: int, seed: int) -> dict[str, Any]:
    ec = configs.eval_config(config, model_cfg, condition=condition, run=run,
                             results_dir=run_dir / "eval" / name, data_dir=data_dirs[name],
                             checkpoint=checkpoint, subsample=subsample, seed=seed,
                             progress=progress)
    result = evaluate.evaluate(ec)
    return {"dir": str(result.run_dir), "questions": result.scored + result.skipped,
            "context_tokens": result.stats.get("context_tokens", {}).get(name),
            "context_shards": result.stats.get("context_shards", {}).get(name, 0)}

  def train_stage(name: str, condition: str, seed: int, data_dir: Path, fmt: str
                  ) -> dict[str, Any]:
    workdir = run_dir / "train" / name / f"{condition}_s{seed}"
    stats = ft_lib.example_stats(records.read_dataset(data_dir), fmt, tokenizer)
    seq_len = max(int(config.train.seq_len), ft_lib.next_pow2(stats["longest_example"]))
    steps = steps_for[name]
    tc = configs.train_config(config, model_cfg, workdir=workdir, data_dir=data_dir, fmt=fmt,
                              seq_len=seq_len, steps=steps, seed=seed, progress=progress)
    t0 = time.perf_counter()
    result = loop.train(tc)
    seconds = time.perf_counter() - t0
    totals = ft_lib.metrics_totals(workdir, steps)
    del result
    epochs = (totals["loss_tokens_seen"] / stats["target_tokens_per_epoch"]
              if stats["target_tokens_per_epoch"] else float("nan"))
    return {**stats, **totals, "dataset": name, "condition": condition, "seed": seed,
            "steps": steps, "batch_size": int(config.train.batch_size), "seq_len": seq_len,
            "epochs": epochs, "train_seconds": seconds,
            "checkpoint_dir": str(workdir / "checkpoints")}

  def augment_stage(name: str, strategy: str, seed: int, out_dir: Path) -> dict[str, Any]:
    params = sampling.SamplingParams(
        max_new_tokens=int(config.augment.max_new_tokens),
        temperature=float(config.augment.temperature), top_p=float(config.augment.top_p),
        seed=int(seed))
    original = datasets[name]
    if strategy == "all":  # exactly local + global (same seed; each dedups on its own)
      augmented = ft_lib.merge_augmented(original, [records.read_dataset(aug_dir(name, s, seed))
                                                    for s in ("local", "global")])
    else:
      b = base_model()
      augmented = augment_lib.augment_dataset(b["model"], tokenizer, original, strategy,
                                              sampling=params, seed=int(seed), mesh=b["mesh"],
                                              rules=b["rules"], progress=progress,
                                              batch_size=int(config.augment.batch_size))
    records.write_dataset(augmented, out_dir, overwrite=True)
    card = augmented.card.get("augmentation", {})
    return {"dir": str(out_dir), "documents": len(augmented.train),
            "generated": len(augmented.train) - len(original.train),
            "audit": card.get("audit"), "strategies": card.get("strategies")}

  def aug_dir(name: str, strategy: str, seed: int) -> Path:
    return run_dir / "data" / f"{name}_aug_{strategy}_s{seed}"

  def augment(name: str, strategy: str, seed: int) -> dict[str, Any]:
    return stages.run(f"augment/{name}/{strategy}_s{seed}", "augment",
                      lambda: augment_stage(name, strategy, seed, aug_dir(name, strategy, seed)))

  # Finetuning steps per dataset: `train.steps`, or (0) enough for `train.epochs` passes over
  # the plain `ft` examples; every finetuned condition of the dataset runs the same steps.
  steps_for = {name: ft_lib.finetuning_steps(config.train,
                                             ft_lib.example_stats(ds, str(config.train.format),
                                                                  tokenizer))
               for name, ds in datasets.items()}

  # 3. Conditions, dataset by dataset.
  evals: list[tuple[str, str, int, Path]] = []  # (dataset, condition, seed, eval run dir)
  finetuning: list[dict[str, Any]] = []
  subsamples: dict[str, dict[int, int]] = {}
  context_shards: dict[str, int] = {}  # ICL datasets scored in context shards: how many
  for name in names:
    for condition in plan.applicable(conditions, datasets[name]):
      if condition in plan.NO_CONTEXT_BASE:
        info = stages.run(f"eval/{name}/{condition}", "eval",
                          lambda name=name, condition=condition:
                          evaluate_stage(name, condition, condition, None, 1, seeds[0]))
        evals.append((name, condition, seeds[0], Path(info["dir"])))
        continue
      if condition == "icl":
        for i, seed in enumerate(seeds):
          k = plan.icl_subsample(name, datasets[name], tokenizer, max_len,
                                 int(config.eval.icl_subsample), bool(config.eval.chat), seed,
                                 bool(config.eval.icl_shards))
          subsamples.setdefault(name, {})[seed] = k
          if k == 1 and i > 0:
            break  # the whole training set in context: the same for every seed
          run = f"icl_s{seed}"
          info = stages.run(f"eval/{name}/{run}", "eval",
                            lambda name=name, run=run, k=k, seed=seed:
                            evaluate_stage(name, "icl", run, None, k, seed))
          evals.append((name, condition, seed, Path(info["dir"])))
          if info.get("context_shards"):
            context_shards[name] = int(info["context_shards"])
        continue
      for seed in seeds:
        data_dir = data_dirs[name]
        fmt = str(config.train.format)
        if condition == "ft_split":
          fmt = str(config.train.split_format)
        elif condition in plan.AUGMENT_STRATEGIES:
          strategy = plan.AUGMENT_STRATEGIES[condition]
          if strategy == "all":  # merges local and global: generate them first if needed
            for part in ("local", "global"):
              augment(name, part, seed)
          aug = augment(name, strategy, seed)
          data_dir = aug_dir(name, strategy, seed)
          fmt = str(config.train.aug_format)
        run = f"{condition}_s{seed}"
        ft = stages.run(f"train/{name}/{run}", "train",
                        lambda name=name, condition=condition, seed=seed, d=data_dir, fmt=fmt:
                        train_stage(name, condition, seed, d, fmt))
        if condition in plan.AUGMENT_STRATEGIES:
          ft = {**ft, "generated_documents": aug["generated"]}
        finetuning.append(ft)
        info = stages.run(f"eval/{name}/{run}", "eval",
                          lambda name=name, condition=condition, run=run, seed=seed,
                          ckpt=ft["checkpoint_dir"]:
                          evaluate_stage(name, condition, run, ckpt, 1, seed))
        evals.append((name, condition, seed, Path(info["dir"])))
        if not config.train.keep_checkpoints:  # scored: the weights are done
          shutil.rmtree(ft["checkpoint_dir"], ignore_errors=True)
  base.clear()

  # 4. Report (always rewritten: cheap): per-seed summary rows, the seeds-pooled table, figure.
  t0 = time.perf_counter()
  rows, table_rows, table = outputs.write_report(
      run_dir, names, datasets, evals, finetuning, subsamples, figure=bool(config.figure),
      context_shards=context_shards, model_cfg=model_cfg)
  report_seconds = time.perf_counter() - t0
  stages.records.append(stages_lib.StageRecord("report", "report", report_seconds, False,
                                               {"rows": len(rows)}))
  seconds = time.perf_counter() - start
  outputs.write_study_json(run_dir, config, model_cfg, stages.records, finetuning, subsamples,
                           seconds)
  if progress:
    print(f"[study] report: {report_seconds:.1f} s; total {seconds:.1f} s; results in {run_dir}",
          flush=True)
  return StudyResult(run_dir=run_dir, rows=rows, table_rows=table_rows, finetuning=finetuning,
                     stages=stages.records, seconds=seconds, table=table)
