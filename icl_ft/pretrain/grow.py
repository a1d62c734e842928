"""A deeper model from a trained one: its layers kept, copies of them added as identities.

    python -m icl_ft.pretrain.grow SOURCE_MODEL_DIR DEST_MODEL_DIR [--preset tiny_deep]

SOURCE_MODEL_DIR is an exported model directory (params/, tokenizer.model, card.json, as
`icl-ft-pretrain` writes it). The preset's depth must be a multiple k of the source's. Each
group of source layers that repeats its attention pattern (local, global for the default) is
followed by k - 1 copies of itself whose post-attention and post-feed-forward norm scales are
-1: a Gemma norm multiplies by (1 + scale), so a copy adds nothing to the residual stream and
the grown model computes exactly what the source did. Training turns the copies on (the
scales get gradients from the first step) while the rest starts where the source ended.

DEST_MODEL_DIR gets params/ (the preset in its metadata), the source's tokenizer.model, and a
card.json: the source's card with `grown_from`. Point `train.model.checkpoint` at
DEST_MODEL_DIR/params (and `train.model.preset` at the preset) to continue pretraining.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from icl_ft.model import checkpoints
from icl_ft.model import config as model_config
from icl_ft.pretrain import recipe

POST_NORMS = ("post_attention_norm", "post_ffw_norm")
GROWN_FIELDS = ("name", "num_layers", "attention_types")  # the ModelConfig fields that may differ


def _pattern_period(types: tuple[str, ...]) -> int:
  """The shortest period of an attention pattern (1 for all-global)."""
  return next(p for p in range(1, len(types) + 1)
              if len(types) % p == 0 and types == types[:p] * (len(types) // p))


def layer_sources(source: model_config.ModelConfig,
                  target: model_config.ModelConfig) -> list[tuple[int, bool]]:
  """For each target layer: (source layer it copies, True if it starts as an identity)."""
  n, m = source.num_layers, target.num_layers
  if m % n:
    raise ValueError(f"preset {target.name!r} has {m} layers, not a multiple of the source's {n}")
  period = _pattern_period(tuple(source.attention_types))
  out = []
  for start in range(0, n, period):
    group = range(start, start + period)
    out += [(i, copy > 0) for copy in range(m // n) for i in group]
  types = tuple(source.attention_types[i] for i, _ in out)
  if types != tuple(target.attention_types):
    raise ValueError(f"preset {target.name!r}: attention pattern {target.attention_types} is "
                     f"not the source's {source.attention_types} repeated per group ({types})")
  for field in dataclasses.fields(source):  # all else equal, or the copies compute otherwise
    if field.name in GROWN_FIELDS:
      continue
    if getattr(source, field.name) != getattr(target, field.name):
      raise ValueError(f"preset {target.name!r}: {field.name} {getattr(target, field.name)} "
                       f"differs from the source's {getattr(source, field.name)}")
  return out


def grow_params(params: dict[str, Any], sources: list[tuple[int, bool]]) -> dict[str, Any]:
  """The grown params tree: layers copied per `sources`, identity copies' post norms at -1."""
  layers = params["layers"]
  grown = {}
  for i, (j, identity) in enumerate(sources):
    layer = _copy_tree(layers[str(j)])
    if identity:
      for norm in POST_NORMS:
        if norm not in layer:
          raise ValueError(f"layer {j} has no {norm}: an added layer could not start as an "
                           "identity (a preset without post norms cannot be grown)")
        layer[norm] = {"scale": -np.ones_like(layer[norm]["scale"])}
    grown[str(i)] = layer
  return {**{k: v for k, v in params.items() if k != "layers"}, "layers": grown}


def _copy_tree(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _copy_tree(v) for k, v in tree.items()}
  return np.array(tree, copy=True)


def grow(source_dir: Path, dest_dir: Path, preset: str = "tiny_deep") -> Path:
  """Writes the grown model directory (module docstring); returns it."""
  source_dir, dest_dir = Path(source_dir).absolute(), Path(dest_dir).absolute()
  if dest_dir.exists():
    raise FileExistsError(f"{dest_dir} already exists")
  if not (source_dir / "tokenizer.model").exists():
    raise FileNotFoundError(f"{source_dir} has no tokenizer.model: SOURCE is an exported model "
                            "directory (params/, tokenizer.model, card.json)")
  source_preset = checkpoints.checkpoint_preset(source_dir / "params")
  if not source_preset:
    raise ValueError(f"{source_dir / 'params'} does not name its model preset")
  source_cfg = model_config.get_preset(source_preset)
  target_cfg = model_config.get_preset(preset)
  sources = layer_sources(source_cfg, target_cfg)
  params = grow_params(checkpoints.read_params(source_dir / "params"), sources)
  tmp = dest_dir.with_name(dest_dir.name + ".partial")  # renamed when complete
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  checkpoints.save_params(tmp / "params", nnx.State(params), meta={"preset": target_cfg.name})
  shutil.copy(source_dir / "tokenizer.model", tmp / "tokenizer.model")
  card = recipe.model_card(source_dir) or {}
  card["grown_from"] = {"model": str(source_dir), "preset": source_preset,
                        "preset_grown": target_cfg.name,
                        "layers": [{"copies": j, "identity": ident} for j, ident in sources]}
  (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
  tmp.rename(dest_dir)
  return dest_dir


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("source", type=Path)
  parser.add_argument("dest", type=Path)
  parser.add_argument("--preset", default="tiny_deep")
  args = parser.parse_args()
  print(grow(args.source, args.dest, args.preset))


if __name__ == "__main__":
  main()
