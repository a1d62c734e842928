"""`load_model(model_cfg, mesh) -> (model, tokenizer)`: a model config to a model on a mesh.

The one entry point the binaries and the training loop use to get a model from its config
(the Transformer itself is built by `icl_ft.model.builder`; the mesh and rules come from
`icl_ft.sharding.mesh_from_config`).

`model_cfg` is a model block, `icl_ft.config.schema.ModelConfig`:

  preset              name in icl_ft.model.config (e.g. "tiny", "gemma2_2b")
  checkpoint          "" = fresh init from `seed`; "default" = the committed tiny default
                      model (icl_ft/assets/tiny/params, preset "tiny_default"); a named GGUF
                      checkpoint (icl_ft.model.gguf_checkpoint, e.g. "gemma3_270m": converted
                      once into the user cache, then imported as format "gemma"); else a
                      directory
  checkpoint_format   "icl_ft" (icl_ft.model.checkpoints.save_params / a training checkpoint's
                      latest step) or "gemma" (official flat layout, icl_ft.model.gemma_checkpoint)
  tokenizer           SentencePiece .model path; "" = none (returned as None); "default" = the
                      committed tiny default model's (icl_ft/assets/tiny/tokenizer.model); a
                      named GGUF checkpoint = the tokenizer built from its metadata
  seed, dtype, param_dtype (the last two: "" = the preset's)

Parameters are never materialized on one device: a fresh model is initialized under jit with
sharded outputs; a checkpoint is restored into an abstract model straight onto the mesh.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flax import nnx
from jax.sharding import Mesh

from icl_ft.model import builder
from icl_ft.model import config as config_lib
from icl_ft.model import gguf_checkpoint
from icl_ft.model.tokenizer import Tokenizer

# The committed default model (`icl-ft-pretrain`): `checkpoint="default"`, `tokenizer="default"`.
DEFAULT = "default"
DEFAULT_PRESET = "tiny_default"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny"


def default_asset(name: str) -> str:
  """Path of the committed default model's `name` ("params" or "tokenizer.model")."""
  path = ASSETS_DIR / name
  if not path.exists():
    raise FileNotFoundError(f"the default model's {name} is not installed at {path} "
                            "(run icl-ft-pretrain --config=configs/pretrain_tiny.py "
                            "--config.export_dir=icl_ft/assets/tiny)")
  return os.fspath(path)


def is_named(checkpoint: str) -> bool:
  """True for a checkpoint given by name ("default" or a named GGUF one), not by path."""
  return checkpoint == DEFAULT or gguf_checkpoint.is_named(checkpoint)


def weights_info(model_cfg: Any) -> dict[str, str] | None:
  """What results record about named GGUF weights (their quantization); None otherwise."""
  name = model_cfg.checkpoint or ""
  return gguf_checkpoint.get(name).info() if gguf_checkpoint.is_named(name) else None


def check_named_preset(model_cfg: Any) -> None:
  """Raises ValueError if a named checkpoint is configured with another preset than its own
  (one with the same shapes, e.g. tiny for default, would load it silently)."""
  path = model_cfg.checkpoint or ""
  if not is_named(path):
    return
  preset = model_cfg.preset
  need = DEFAULT_PRESET if path == DEFAULT else gguf_checkpoint.get(path).preset
  if preset != need:
    raise ValueError(f"checkpoint {path!r} needs model preset {need!r}, not {preset!r} "
                     f"(--config.model.preset={need})")


def resolve_checkpoint(model_cfg: Any) -> tuple[str, str]:
  """(path, format) of the configured checkpoint, named ones ("default", GGUF) resolved."""
  path = model_cfg.checkpoint or ""
  fmt = model_cfg.checkpoint_format or "icl_ft"
  if not is_named(path):
    return path, fmt
  check_named_preset(model_cfg)
  if path == DEFAULT:
    return default_asset("params"), fmt
  return gguf_checkpoint.prepare(path).params, "gemma"


def model_config_from(model_cfg: Any) -> config_lib.ModelConfig:
  """The ModelConfig of the preset, with the dtype / param_dtype overrides applied."""
  cfg = config_lib.get_preset(model_cfg.preset)
  overrides = {k: getattr(model_cfg, k) for k in ("dtype", "param_dtype") if getattr(model_cfg, k)}
  for k in overrides:
    if not hasattr(cfg, k):
      raise ValueError(f"model config has no field {k!r} to override")
  return dataclasses.replace(cfg, **overrides) if overrides else cfg


def load_tokenizer(model_cfg: Any, cfg: Any | None = None) -> Tokenizer | None:
  """The configured tokenizer (None if unset), checked against the model config if given."""
  path = model_cfg.tokenizer
  if not path:
    return None
  if path == DEFAULT:
    path = default_asset("tokenizer.model")
  elif gguf_checkpoint.is_named(path):
    path = gguf_checkpoint.prepare(path).tokenizer
  tok = Tokenizer(path)
  if cfg is not None:
    tok.check_model(cfg)
  return tok


def load_model(model_cfg: Any, mesh: Mesh,
               rules: Mapping[str, Any] | None = None) -> tuple[nnx.Module, Tokenizer | None]:
  """Builds the preset's Transformer on `mesh` and loads its weights and tokenizer."""
  cfg = model_config_from(model_cfg)
  tokenizer = load_tokenizer(model_cfg, cfg)
  path, fmt = resolve_checkpoint(model_cfg)
  builder.check_format(fmt)
  if not path:
    seed = int(model_cfg.seed or 0)
    return builder.fresh(cfg, mesh, rules, seed=seed), tokenizer
  model = builder.restored(cfg, path, fmt, mesh, rules, preset=model_cfg.preset)
  return model, tokenizer
