"""icl-ft-augment: write an augmented dataset (local / global in-context augmentation).

  icl-ft-augment --config=configs/augment.py:<local|global|all> --config.dataset_dir=D \\
      --config.output_dir=O --config.model.checkpoint=CKPT --config.model.tokenizer=TOK.model

Loads the dataset, the model and tokenizer, generates (`icl_ft.augment.augment_dataset`) and
writes O atomically. Exit status: 0 done; 1 bad input (one `error: ...` line on stderr and no
output directory: unknown strategy, missing dataset or tokenizer, existing output without
overwrite, a context that cannot fit); 2 bad flags.
"""

from __future__ import annotations

from typing import Any

from icl_ft.augment import augment
from icl_ft.bin import cli
from icl_ft.config import schema


def execute(config: Any) -> int:
  """Runs `augment.run` on the typed config; failures are one `error:` line on stderr and status 1."""
  try:
    directory, dataset = augment.run(schema.typed("augment", config))
  except (ValueError, OSError, ImportError, TypeError, KeyError) as e:
    return cli.fail(e)
  info = dataset.card["augmentation"]
  audit = info["audit"]
  print(f"wrote {directory}: {info['counts']['original_documents']} original + "
        f"{info['counts']['generated_documents']} generated documents; audit {audit['counts']} "
        f"(precision {audit['precision']})")
  return 0

def run() -> None:
  """Console-script entry point (`icl-ft-augment`)."""
  cli.run(execute, config_help="Augmentation config: configs/augment.py:<strategy>.",
          config_file="configs/augment.py:<strategy>")


if __name__ == "__main__":
  run()
