"""icl-ft-study: the controlled study end to end (the main job); resumes when re-run.

  icl-ft-study                                    # configs/study.py: every dataset, small scale
  icl-ft-study --config=configs/study.py:full     # 3 seeds, longer finetuning
  icl-ft-study --config=configs/study.py:micro    # a smoke run in about a minute
  icl-ft-study [--config=configs/study.py] --config.run=NAME [--config.<field>=VALUE]

Writes `<results_dir>/<run>/` (data/, train/, eval/, summary.json, table.md, figure.png,
study.json; see icl_ft/study.py), prints a line per stage and, at the end, the table.

Exit status: 0 done; 1 bad input (one `error: ...` line on stderr: unknown dataset, condition
or parameter, a run directory holding other settings, a context that cannot fit) or a failed
run; 2 bad flags.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from icl_ft.bin import cli

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "study.py"


def execute(config: Any) -> int:
  """Runs `study.run_study(config)`; failures are one `error:` line on stderr and status 1."""
  from icl_ft import study  # pylint: disable=g-import-not-at-top
  from icl_ft.train import loop  # pylint: disable=g-import-not-at-top

  try:
    result = study.run_study(config)
  except (loop.NonFiniteLossError, ValueError, OSError, ImportError, TypeError, KeyError) as e:
    return cli.fail(e)
  print(result.table, end="")
  print(f"study done in {result.seconds:.1f} s; results in {result.run_dir}")
  return 0


def run() -> None:
  """Console-script entry point (`icl-ft-study`); no --config means configs/study.py."""
  if not any(a == "--config" or a.startswith("--config=") for a in sys.argv[1:]):
    sys.argv.insert(1, f"--config={DEFAULT_CONFIG}")
  cli.run(execute, config_help="Study config: configs/study.py[:full|micro].",
          config_file="configs/study.py[:variant]")


if __name__ == "__main__":
  run()
