"""icl-ft-eval: score a model on datasets' test questions under one condition.

  icl-ft-eval --config=configs/eval.py:<condition> --config.run=NAME \\
      --config.datasets=DATA_DIR[,DATA_DIR...] --config.model.tokenizer=TOK.model \\
      [--config.model.preset=tiny] [--config.model.checkpoint=CKPT] [--config.splits=a,b] \\
      [--config.icl.subsample=8] [--config.results_dir=results] [--config.<field>=VALUE]

Conditions: `pretrained` (no context), `icl` (the training documents in context), `ft` /
`ft_<name>` (no context, `model.checkpoint` = the finetuned weights). Writes
`<results_dir>/<run>/{questions.jsonl,summary.json,table.md,run.json}`; re-running the same
command resumes (skips questions already scored).

Multi-host: ICL_FT_MULTIHOST=1 (as launch_tpu.sh sets it) or `--config.multihost.initialize=true`
on every process. Dry run: `--config.dry_run=true [--config.device_memory_gib=16]` compiles the
prefill and scoring steps abstractly (no weights), prints memory per device and FLOPs, and exits
1 if they would not fit.

Exit status: 0 done; 1 bad input (one `error: ...` line on stderr, no summary written: unknown
condition or split, missing checkpoint or dataset, malformed dataset line, tokenizer/model
vocabulary mismatch, a context longer than the model's maximum length); 2 bad flags.
"""

from __future__ import annotations

from typing import Any

import jax

from icl_ft import sharding
from icl_ft.bin import cli
from icl_ft.config import checks
from icl_ft.config import schema
from icl_ft.evaluation import evaluate
from icl_ft.evaluation import report
from icl_ft.scale import dry_run
from icl_ft.train import loop


def execute(config: Any) -> int:
  """Runs `evaluate.evaluate` on the typed config; failures are one `error:` line on stderr and
  status 1."""
  try:
    config = schema.typed("eval", config)
    # Before anything touches the devices (ICL_FT_MULTIHOST=1 or multihost.initialize).
    sharding.initialize_distributed(config.multihost)
    checks.validate_eval(config, require_inputs=not config.dry_run)
    if config.dry_run:  # compile only: memory and FLOPs per device, exit 1 if it does not fit
      dry_run.run(config, "eval")
      return 0
    result = evaluate.evaluate(config)
  except (ValueError, OSError, ImportError, TypeError, KeyError) as e:
    return cli.fail(e)
  if jax.process_index() == 0:
    print(report.markdown_table(result.rows), end="")
    print(f"scored {result.scored} questions ({result.skipped} already done) in "
          f"{result.seconds:.1f} s; results in {result.run_dir}")
  return 0

def run() -> None:
  """Console-script entry point (`icl-ft-eval`)."""
  cli.run(execute, config_help="Evaluation config: configs/eval.py:<condition>.",
          config_file="configs/eval.py:<condition>")


if __name__ == "__main__":
  run()
