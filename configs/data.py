"""Config for `icl-ft-data`: generate one dataset and write it as JSONL + card.json.

Usage:
  icl-ft-data --config=configs/data.py:celebrities --config.output_dir=data [--config.scale=small]
      [--config.seed=1] [--config.overwrite=true] [--config.params.num_p2d_people=30]
  icl-ft-data --config=configs/data.py:celebrities --config.original_dir=reversal_curse/name_description_dataset
      [--config.icl_context_subsample=8]

`params` holds one entry per field of the dataset's `Params`, unset (None) by
default; a set entry overrides that field of the chosen scale.

celebrities only:
  original_dir: a directory of the original reversal-curse release (Berglund et al.'s
    name_description_dataset/ JSONL files) to convert instead of generating; seed draws the
    distractors, params.num_choices the number of choices (no other params apply).
  icl_context_subsample: 0 writes every training document. K >= 1 writes, for the ICL
    context, only the documents of the people the questions ask about (those of
    icl_context_splits, comma-separated; empty: every split), ceil(n / K) of each person's n
    documents per direction: a dataset directory for the ICL condition in which every
    asked-about person is in context (the paper subsamples 8x); finetune on the full one.
"""

import dataclasses
import importlib

import ml_collections
from ml_collections import config_dict

from icl_ft.config import schema


def _param_fields(name: str) -> ml_collections.ConfigDict:
  """One typed, unset placeholder per `Params` field of dataset `name` (empty if unknown)."""
  params = ml_collections.ConfigDict()
  try:
    registry = importlib.import_module("icl_ft.datasets.registry")
    defaults = registry.module(name).Params()
  except (ValueError, ImportError):
    return params  # the binary reports the unknown / broken dataset by name
  for field in dataclasses.fields(defaults):
    default = getattr(defaults, field.name)
    if default is not None:  # a None default has no type to parse a command-line value into
      params[field.name] = config_dict.placeholder(type(default))
  return params


def get_config(name: str = "") -> ml_collections.ConfigDict:
  """Config for dataset `name` (one of icl_ft.datasets.registry.NAMES); defaults: schema.DataConfig."""
  config = schema.as_config_dict(schema.DataConfig(name=name))
  config.params = _param_fields(name)
  return config
