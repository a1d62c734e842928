"""icl-ft-data: generate one dataset and write DIR/<name>/{train.jsonl,test_<split>.jsonl,card.json}.

  icl-ft-data --config=configs/data.py:<name> --config.output_dir=DIR [--config.scale=small]
      [--config.seed=N] [--config.overwrite=true] [--config.params.<field>=VALUE]
  icl-ft-data --config=configs/data.py:celebrities --config.original_dir=RELEASE_DIR
      [--config.icl_context_subsample=K] [--config.icl_context_splits=reversal]

The second form converts the original reversal-curse release (a directory of its JSONL
files, every file handled: `icl_ft.datasets.celebrities_original.load_original`) instead of
generating; `icl_context_subsample` keeps only the documents of the people the questions ask
about, ceil(n / K) of each person's (`celebrities.context_dataset`), for the ICL condition.

Bad input (unknown dataset, scale or parameter, impossible sizes, an output
directory that cannot be written) exits non-zero with one line `error: ...` on
stderr and leaves no partial dataset behind (the write is atomic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icl_ft.bin import cli
from icl_ft.config import schema
from icl_ft.datasets import celebrities
from icl_ft.datasets import celebrities_original
from icl_ft.datasets import records
from icl_ft.datasets import registry


def overrides(config: schema.DataConfig) -> dict[str, Any]:
  """The `params` entries that are set (not None), as Params field overrides."""
  return {k: v for k, v in config.params.items() if v is not None}


def write(config: schema.DataConfig) -> Path:
  """Generates the dataset described by `config` and writes it atomically; returns its directory.

  Raises ValueError / OSError / FileExistsError naming the problem; nothing is
  written unless generation succeeded.
  """
  name = config.name
  if not name:
    raise ValueError(f"no dataset name: use --config=configs/data.py:<name> with one of {list(registry.NAMES)}")
  try:
    registry.module(name)  # unknown name -> ValueError listing the valid ones
  except ImportError as e:
    raise ImportError(f"dataset {name!r} cannot be imported: {e}") from e
  target = Path(config.output_dir) / name
  if target.exists() and not config.overwrite:
    raise FileExistsError(f"output already exists: {target} (pass --config.overwrite=true to replace it)")
  dataset = build(config)
  try:
    return records.write_dataset(dataset, target, overwrite=config.overwrite)
  except OSError as e:
    raise OSError(f"cannot write {target}: {e.strerror or e}") from e


def build(config: schema.DataConfig) -> records.Dataset:
  """The dataset `config` describes: generated, or (celebrities) the original release converted."""
  name = config.name
  original = str(config.original_dir)
  context = int(config.icl_context_subsample)
  if name != celebrities.NAME:
    for field, value in (("original_dir", original), ("icl_context_subsample", context)):
      if value:
        raise ValueError(f"config.{field}={value!r} applies to the celebrities dataset only, not {name!r}")
  if original:
    extra = sorted(set(overrides(config)) - {"num_choices"})
    if extra:
      raise ValueError(f"config.params {extra} do not apply to the original release "
                       f"(config.original_dir={original!r}); only num_choices does")
    dataset = celebrities_original.load_original(original, seed=config.seed,
                                                 num_choices=overrides(config).get("num_choices", 4))
  else:
    dataset = registry.generate(name, scale=config.scale, seed=config.seed, **overrides(config))
  if context < 0:
    raise ValueError(f"config.icl_context_subsample must be >= 0 (0: every document), got {context}")
  if context:
    splits = [s.strip() for s in str(config.icl_context_splits).split(",") if s.strip()]
    dataset = celebrities.context_dataset(dataset, context, seed=config.seed, splits=splits)
  return dataset


def execute(config: Any) -> int:
  """`write` of the typed config, reporting success on stdout and failure as one `error:` line
  on stderr."""
  try:
    directory = write(schema.typed("data", config))
  except (ValueError, OSError, ImportError) as e:
    return cli.fail(e)
  card = records.read_dataset(directory).card_with_counts()
  counts = ", ".join(f"{k}={v}" for k, v in card["counts"].items())
  print(f"wrote {directory}: {counts}")
  return 0


def run() -> None:
  """Console-script entry point (`icl-ft-data`)."""
  cli.run(execute, config_help="Dataset config: configs/data.py:<name>.",
          config_file="configs/data.py:<name>")


if __name__ == "__main__":
  run()
