"""The typed train and eval configs of the study's stages, from the package's schema.

A stage's config is the binary's default (`schema.TrainConfig()` / `schema.EvalConfig()`, what
configs/train.py and configs/eval.py start from) with the study's settings applied; no config
file is read, so an installed package runs the study.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from icl_ft.config import schema


def train_config(study: schema.StudyConfig, model: schema.ModelConfig, *, workdir: Path,
                 data_dir: Path, fmt: str, seq_len: int, steps: int, seed: int,
                 progress: bool) -> schema.TrainConfig:
  """The finetuning run of one (dataset, condition, seed): `steps` at the study's batch size."""
  t = study.train
  return schema.TrainConfig(
      workdir=str(workdir),
      model=model,
      mesh=study.mesh,
      data=schema.TrainData(dataset_dir=str(data_dir), format=fmt, seq_len=seq_len,
                            batch_size=int(t.batch_size), seed=int(seed)),
      optimizer=schema.OptimizerConfig(learning_rate=float(t.learning_rate),
                                       warmup_steps=min(int(t.warmup_steps), steps),
                                       schedule=str(t.schedule)),
      steps=steps,
      checkpoint=schema.CheckpointConfig(every=int(t.checkpoint_every) or steps, keep=1),
      log=schema.LogConfig(tensorboard=False, progress=progress))


def eval_config(study: schema.StudyConfig, model: schema.ModelConfig, *, condition: str,
                run: str, results_dir: Path, data_dir: Path, checkpoint: str | None,
                subsample: int, seed: int, progress: bool) -> schema.EvalConfig:
  """The evaluation of one dataset under `condition` (a finetuned one: `checkpoint`, icl_ft)."""
  if checkpoint is not None:
    model = dataclasses.replace(model, checkpoint=checkpoint, checkpoint_format="icl_ft")
  e = study.eval
  return schema.EvalConfig(
      condition=condition, run=run, results_dir=str(results_dir), datasets=str(data_dir),
      model=model, mesh=study.mesh,
      prompt=schema.PromptConfig(chat=bool(e.chat)),
      icl=schema.IclConfig(subsample=int(subsample), seed=int(seed), shards=bool(e.icl_shards)),
      scoring=schema.ScoringConfig(metric=str(e.metric), batch_size=int(e.batch_size),
                                   prefill_chunk=int(e.prefill_chunk)),
      progress=progress)
