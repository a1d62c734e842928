"""icl-ft-study: the controlled study end to end (the main job); resumes when re-run.

  icl-ft-study                                    # the default config (= configs/study.py): every
                                                  # dataset, small scale; no file needed
  icl-ft-study --config=configs/study.py:full     # 3 seeds, longer finetuning
  icl-ft-study --config=configs/study.py:micro    # a smoke run in about a minute
  icl-ft-study [--config=configs/study.py] --config.run=NAME [--config.<field>=VALUE]

Writes `<results_dir>/<run>/` (data/, train/, eval/, summary.json, table.md, figure.png,
study.json; see icl_ft/study/), prints a line per stage and, at the end, the table.

Exit status: 0 done; 1 bad input (one `error: ...` line on stderr: unknown dataset, condition
or parameter, a run directory holding other settings, a context that cannot fit) or a failed
run; 2 bad flags.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from icl_ft.bin import cli
from icl_ft.config import schema
from icl_ft.study import plan
from icl_ft.study import run as study_run
from icl_ft.train import loop


def default_config() -> ml_collections.ConfigDict:
  """The study's default config (what configs/study.py builds without a variant)."""
  return schema.as_config_dict(plan.default_config())


def execute(config: Any) -> int:
  """Runs `run_study` on the typed `config`; failures are one `error:` line on stderr and status 1."""
  try:
    result = study_run.run_study(schema.typed("study", config))
  except (loop.NonFiniteLossError, ValueError, OSError, ImportError, TypeError, KeyError) as e:
    return cli.fail(e)
  print(result.table, end="")
  print(f"study done in {result.seconds:.1f} s; results in {result.run_dir}")
  return 0


def run() -> None:
  """Console-script entry point (`icl-ft-study`); no --config means the package's default config."""
  cli.run(execute, config_help="Study config: configs/study.py[:full|micro|gemma3_270m].",
          config_file="configs/study.py[:variant]", default_config=default_config)


if __name__ == "__main__":
  run()
