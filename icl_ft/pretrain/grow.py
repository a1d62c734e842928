"""A deeper or wider model from a trained one, computing at first exactly what it did.

    python -m icl_ft.pretrain.grow SOURCE_MODEL_DIR DEST_MODEL_DIR [--preset tiny_deep|tiny_wide]

SOURCE_MODEL_DIR is an exported model directory (params/, tokenizer.model, card.json, as
`icl-ft-pretrain` writes it).

Deeper: the preset's depth must be a multiple k of the source's. Each group of source layers
that repeats its attention pattern (local, global for the default) is followed by k - 1 copies
of itself whose post-attention and post-feed-forward norm scales are -1: a Gemma norm
multiplies by (1 + scale), so a copy adds nothing to the residual stream. Training turns the
copies on (the scales get gradients from the first step).

Wider: the preset may have more query and key-value heads (the same number of query heads per
key-value head, so every source head keeps its key-value head) and more feed-forward units. The
added heads' and units' input weights are drawn like the source's (normal, each tensor's own
standard deviation; seed 0) and their output weights are zero, so they add nothing until
training moves those.

Everything else starts where the source ended. DEST_MODEL_DIR gets params/ (the preset in its
metadata), the source's tokenizer.model, and a card.json: the source's card with `grown_from`.
Point `train.model.checkpoint` at DEST_MODEL_DIR/params (and `train.model.preset` at the
preset) to continue pretraining.
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
# The ModelConfig fields that may differ between the source and the grown preset.
GROWN_FIELDS = ("name", "num_layers", "attention_types", "num_heads", "num_kv_heads", "hidden_dim")
# Per layer: (param, axis that grows, ModelConfig field giving its size, added slices zero?).
WIDENED = (("q", 1, "num_heads", False),  # [D, N, H]
           ("k", 1, "num_kv_heads", False),  # [D, K, H]
           ("v", 1, "num_kv_heads", False),
           ("o", 0, "num_heads", True),  # [N, H, D]
           ("gate", 1, "hidden_dim", False),  # [D, F]
           ("up", 1, "hidden_dim", False),
           ("down", 0, "hidden_dim", True))  # [F, D]


def _pattern_period(types: tuple[str, ...]) -> int:
  """The shortest period of an attention pattern (1 for all-global)."""
  return next(p for p in range(1, len(types) + 1)
              if len(types) % p == 0 and types == types[:p] * (len(types) // p))


def layer_sources(source: model_config.ModelConfig,
                  target: model_config.ModelConfig) -> list[tuple[int, bool]]:
  """For each target layer: (source layer it copies, True if it starts as an identity);
  raises if `target` cannot start computing what `source` does (depth, pattern or widths)."""
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
  for field in ("num_heads", "num_kv_heads", "hidden_dim"):
    if getattr(target, field) < getattr(source, field):
      raise ValueError(f"preset {target.name!r}: {field} {getattr(target, field)} is below the "
                       f"source's {getattr(source, field)}")
  if target.num_groups != source.num_groups:
    raise ValueError(f"preset {target.name!r}: {target.num_groups} query heads per key-value "
                     f"head, the source has {source.num_groups} (its heads would change partners)")
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


def widen_params(params: dict[str, Any], target: model_config.ModelConfig,
                 seed: int = 0) -> dict[str, Any]:
  """Every layer given the target's heads and feed-forward units (module docstring)."""
  rng = np.random.default_rng(seed)
  layers = {}
  for i, layer in params["layers"].items():
    layer = dict(layer)
    for name, axis, field, zero in WIDENED:
      x = np.asarray(layer[name])
      shape = list(x.shape)
      shape[axis] = getattr(target, field) - x.shape[axis]
      added = (np.zeros(shape, x.dtype) if zero
               else rng.normal(0.0, float(x.std()), shape).astype(x.dtype))
      layer[name] = np.concatenate([x, added], axis=axis)
    layers[i] = layer
  return {**params, "layers": layers}


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
  params = widen_params(grow_params(checkpoints.read_params(source_dir / "params"), sources),
                        target_cfg)
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
  parser.add_argument("--preset", default="tiny_deep", help="tiny_deep (deeper), tiny_wide (wider)")
  args = parser.parse_args()
  print(grow(args.source, args.dest, args.preset))


if __name__ == "__main__":
  main()
