"""icl-ft-train: finetune a model on a dataset's training documents (resumes automatically).

  icl-ft-train --config=configs/train.py:<preset> --config.workdir=DIR \\
      --config.data.dataset_dir=DATA --config.model.tokenizer=TOK.model [--config.<field>=VALUE]

Multi-host: `--config.multihost.initialize=true` or ICL_FT_MULTIHOST=1 in the environment (plus
coordinator_address, num_processes, process_id, or the JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables, or nothing on TPU VMs) on every process.

Dry run: `--config.dry_run=true [--config.device_memory_gib=16]` builds the model abstract (no
weights, no data), compiles the train step for the configured mesh, batch and sequence length,
prints memory per device and FLOPs per step, and exits 1 if it would not fit.

Exit status: 0 done; 1 bad input (one `error: ...` line on stderr; nothing is overwritten) or a
NaN/inf loss (the last good checkpoint stays the latest); 2 bad flags.
"""

from __future__ import annotations

from typing import Any

import jax

from icl_ft import sharding
from icl_ft.bin import cli
from icl_ft.config import checks
from icl_ft.config import schema
from icl_ft.scale import dry_run
from icl_ft.train import loop


def execute(config: Any, **train_kwargs: Any) -> int:
  """Runs `loop.train(config, **train_kwargs)` on the typed config; failures: one `error:` line
  on stderr, status 1."""
  try:
    config = schema.typed("train", config)
    # Multi-host initialization must come before anything touches the devices, so it runs
    # first, here as well as inside train().
    sharding.initialize_distributed(config.multihost)
    checks.validate_train(config, require_inputs=not config.dry_run,
                          check_paths=not config.dry_run)
    if config.dry_run:  # compile only: memory and FLOPs per device, exit 1 if it does not fit
      dry_run.run(config, "train")
      return 0
    result = loop.train(config, **train_kwargs)
  except (loop.NonFiniteLossError, ValueError, OSError, ImportError, TypeError) as e:
    return cli.fail(e)
  if jax.process_index() == 0:
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    where = result.checkpoint_dir or "(no checkpoints)"
    resumed = f" (resumed from step {result.start_step})" if result.start_step else ""
    print(f"trained to step {result.step}{resumed}: final loss {loss}; checkpoints in {where}")
  return 0

def run() -> None:
  """Console-script entry point (`icl-ft-train`)."""
  cli.run(execute, config_help="Training config: configs/train.py:<model preset>.",
          config_file="configs/train.py:<preset>")


if __name__ == "__main__":
  run()
