"""The study's outputs: summary.json, table.md, figure.png and study.json of a run directory."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax

from icl_ft import fileio
from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.evaluation import evaluate
from icl_ft.evaluation import plots
from icl_ft.evaluation import report
from icl_ft.model import loader
from icl_ft.study import stages as stages_lib

SUMMARY_FILE = "summary.json"
TABLE_FILE = "table.md"
FIGURE_FILE = "figure.png"
STUDY_FILE = "study.json"
SETTINGS_FILE = "settings.json"
TOKENIZER_FILE = "tokenizer.model"


def collect_records(evals: Sequence[tuple[str, str, int, Path]]) -> list[dict[str, Any]]:
  """Every per-question record of the study's evaluations, with its run seed added."""
  out = []
  for name, condition, seed, directory in evals:
    for r in evaluate.read_records(directory / evaluate.QUESTIONS_FILE):
      if r["dataset"] == name and r["condition"] == condition:
        out.append({**r, "seed": seed})
  return out


def _ordered(rows: list[dict[str, Any]], names: Sequence[str],
             datasets: Mapping[str, records.Dataset]) -> list[dict[str, Any]]:
  return report.order_rows(rows, names, {n: list(datasets[n].tests) for n in names})


def _weights_line(model_cfg: schema.ModelConfig | None) -> str:
  """"Weights: ..." (named GGUF weights: source and quantization) for table.md, else ""."""
  return report.weights_line(loader.weights_info(model_cfg) if model_cfg else None)


def write_report(run_dir: Path, names: Sequence[str], datasets: Mapping[str, records.Dataset],
                 evals: Sequence[tuple[str, str, int, Path]],
                 finetuning: Sequence[Mapping[str, Any]], subsamples: Mapping[str, Any], *,
                 figure: bool = True, context_shards: Mapping[str, int] | None = None,
                 model_cfg: schema.ModelConfig | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
  """Writes summary.json, table.md and figure.png; returns (rows, pooled rows, table text).

  Conditions (those the records hold) are ordered by report.CONDITION_ORDER; the
  augmentation usability comes from the augment stages' markers (stages/augment__*.json).
  """
  recs = collect_records(evals)
  rows = []
  for seed in sorted({r["seed"] for r in recs}):
    rows += [{**row, "seed": seed} for row in report.summarize(r for r in recs if r["seed"] == seed)]
  rows = _ordered(rows, names, datasets)
  table_rows = _ordered(report.summarize(recs), names, datasets)
  seeds = sorted({r["seed"] for r in recs})
  fileio.atomic_write(run_dir / SUMMARY_FILE, json.dumps(rows, indent=2) + "\n")
  markers = [json.loads(p.read_text(encoding="utf-8"))
             for p in sorted((run_dir / "stages").glob("augment__*.json"))]
  note = (report.context_shards_text(context_shards or {})
          + report.knowledge_text(report.knowledge_check(table_rows))).strip()
  table = report.study_table(run_dir.name, table_rows, seeds, subsamples, finetuning,
                             report.audits_from_stages(markers), note=note,
                             weights=_weights_line(model_cfg))
  fileio.atomic_write(run_dir / TABLE_FILE, table)
  if figure:
    plots.accuracy_figure(table_rows, run_dir / FIGURE_FILE, title=plots.study_title(run_dir.name))
  return rows, table_rows, table


def write_study_json(run_dir: Path, config: schema.StudyConfig, model_cfg: schema.ModelConfig,
                     stage_records: Sequence[stages_lib.StageRecord],
                     finetuning: Sequence[Mapping[str, Any]], subsamples: Mapping[str, Any],
                     seconds: float) -> None:
  """study.json: settings, model, devices, per-stage timings, finetuning data (`fileio.portable_paths`)."""
  weights = loader.weights_info(model_cfg)
  by_kind: dict[str, float] = {}
  cpu_by_kind: dict[str, float] = {}
  for s in stage_records:
    by_kind[s.kind] = by_kind.get(s.kind, 0.0) + s.seconds
    cpu_by_kind[s.kind] = cpu_by_kind.get(s.kind, 0.0) + s.cpu_seconds
  devices = jax.devices()
  study = {
      "run": str(config.run),
      "config": schema.plain(config),
      "model": schema.plain(model_cfg),
      **({"weights": weights} if weights else {}),  # named GGUF weights: quantization
      "devices": {"platform": devices[0].platform, "count": len(devices),
                  "kind": getattr(devices[0], "device_kind", ""), "cpu_count": os.cpu_count()},
      "python": sys.version.split()[0],
      "seconds": seconds,
      "seconds_by_kind": by_kind,
      "cpu_seconds_by_kind": cpu_by_kind,
      "stages": [dataclasses.asdict(s) for s in stage_records],
      "finetuning": list(finetuning),
      "icl_subsample": {n: {str(k): v for k, v in s.items()} for n, s in subsamples.items()},
  }
  fileio.atomic_write(run_dir / STUDY_FILE,
                      stages_lib.to_json(_finite(fileio.portable_paths(study, run_dir))))


def _finite(obj: Any) -> Any:
  """NaN/inf -> None, so study.json is strict JSON."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj
