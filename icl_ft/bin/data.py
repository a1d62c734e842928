"""icl-ft-data: generate one dataset and write DIR/<name>/{train.jsonl,test_<split>.jsonl,card.json}.

  icl-ft-data --config=configs/data.py:<name> --config.output_dir=DIR [--config.scale=small]
      [--config.seed=N] [--config.overwrite=true] [--config.params.<field>=VALUE]

Bad input (unknown dataset, scale or parameter, impossible sizes, an output
directory that cannot be written) exits non-zero with one line `error: ...` on
stderr and leaves no partial dataset behind (the write is atomic).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from absl import app
from absl import flags
from ml_collections import config_flags

from icl_ft.datasets import records
from icl_ft.datasets import registry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Dataset config: configs/data.py:<name>.",
                                          lock_config=True)


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
    message = " ".join(str(e).split())
    print(f"error: {message}", file=sys.stderr)
    return 1
  card = records.read_dataset(directory).card_with_counts()
  counts = ", ".join(f"{k}={v}" for k, v in card["counts"].items())
  print(f"wrote {directory}: {counts}")
  return 0


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
    sys.exit(2)
  if _CONFIG.value is None:
    print("error: --config is required: --config=configs/data.py:<name>", file=sys.stderr)
    sys.exit(2)
  sys.exit(execute(_CONFIG.value))


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag or config override is one `error:` line, exit status 2."""
  try:
    return flags.FLAGS(argv)
  except (KeyError, AttributeError) as e:  # config_flags: override of a field the config lacks
    inner: Any = e
    while inner.args and isinstance(inner.args[0], BaseException):
      inner = inner.args[0]
    detail = " ".join(str(inner.args[0] if inner.args else inner).split()).replace("'", "")
    given = [a.split("=", 1)[0] for a in argv[1:]
             if a.startswith("--config.") and a.split("=", 1)[0].rsplit(".", 1)[-1] in detail]
    flag = given[0] if given else detail
    print(f"error: unknown config field {flag} ({detail}); see configs/data.py and the dataset's Params",
          file=sys.stderr)
    sys.exit(2)
  except (flags.Error, ValueError, TypeError, OSError) as e:
    message = " ".join(str(e).split())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """Console-script entry point (`icl-ft-data`)."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
