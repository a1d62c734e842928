"""icl-ft-pretrain: the tiny default model, corpus to committed assets, in one command.

  icl-ft-pretrain --config=configs/pretrain_tiny.py --config.workdir=/tmp/pretrain \\
      [--config.export_dir=icl_ft/assets/tiny] [--config.train.steps=N]

Stages (corpus, tokenizer, training, held-out in-context eval, export) are described in
`icl_ft.pretrain.recipe`; a rerun with the same workdir resumes (training from its last checkpoint).
Exit status: 0 done; 1 bad input or a NaN/inf loss (one `error: ...` line); 2 bad flags.
"""

from __future__ import annotations

import json
from typing import Any

from icl_ft.bin import cli
from icl_ft.config import schema
from icl_ft.pretrain import recipe
from icl_ft.train import loop


def execute(config: Any) -> int:
  """Runs `icl_ft.pretrain.recipe.pretrain` on the typed config and prints the held-out accuracies."""
  try:
    card = recipe.pretrain(schema.typed("pretrain", config))
  except (loop.NonFiniteLossError, ValueError, OSError) as e:
    return cli.fail(e)
  print(json.dumps({"steps": card["steps"], "tokens_seen": card["tokens_seen"],
                    "final_loss": card["final_loss"],
                    "heldout_in_context": {k: v["accuracy"]
                                           for k, v in card["heldout_in_context"].items()}}))
  return 0

def run() -> None:
  """Console-script entry point (`icl-ft-pretrain`)."""
  cli.run(execute, config_help="Pretraining config: configs/pretrain_tiny.py[:test].",
          config_file="configs/pretrain_tiny.py")


if __name__ == "__main__":
  run()
