"""icl-ft-data: generate one dataset and write DIR/<name>/{train.jsonl,test_<split>.jsonl,card.json}.

  icl-ft-data --config=configs/data.py:<name> --config.output_dir=DIR [--config.scale=small]
      [--config.seed=N] [--config.overwrite=true] [--config.params.<field>=VALUE]

Bad input (unknown dataset, scale or parameter, impossible sizes, an output
directory that cannot be written) exits non-zero with one line `error: ...` on
stderr and leaves no partial dataset behind (the write is atomic).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from icl_ft.bin import cli
from icl_ft.datasets import records
from icl_ft.datasets import registry


def overrides(config: Any) -> dict[str, Any]:
  """The `params` entries that are set (not None), as Params field overrides."""
  params = config.get("params") or {}
  items = params.items() if isinstance(params, Mapping) else params.to_dict().items()
  return {k: v for k, v in items if v is not None}


def write(config: Any) -> Path:
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
  dataset = registry.generate(name, scale=config.scale, seed=config.seed, **overrides(config))
  try:
    return records.write_dataset(dataset, target, overwrite=config.overwrite)
  except OSError as e:
    raise OSError(f"cannot write {target}: {e.strerror or e}") from e


def execute(config: Any) -> int:
  """`write(config)`, reporting success on stdout and failure as one `error:` line on stderr."""
  try:
    directory = write(config)
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
