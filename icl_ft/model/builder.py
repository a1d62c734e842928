"""The one builder of the Transformer on a mesh: abstract, fresh, or restored.

  abstract(cfg, mesh, rules)     (graphdef, abstract state with target shardings, shardings):
                                 shapes only, nothing allocated (dry runs, shape checks)
  fresh(cfg, mesh, rules, seed)  parameters initialized under jit straight onto the mesh
  for_restore(cfg, mesh, rules)  parameters abstract (ShapeDtypeStruct with the target sharding),
                                 to be filled by a checkpoint restore (a training resume)
  restored(cfg, path, fmt, ...)  `for_restore` filled from our orbax checkpoint ("icl_ft") or an
                                 official Gemma one ("gemma"; named GGUF weights are converted
                                 to that layout first by `icl_ft.model.loader`)

Parameters are never materialized on one device. `icl_ft.model.loader.load_model` turns a model
config (preset, named checkpoint, tokenizer) into one of these; the generic mechanics
(`abstract_model`, `create_sharded`, `create_for_restore`) are `icl_ft.sharding`'s, given the
Transformer's constructor here, so sharding imports no model code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx
from jax.sharding import Mesh

from icl_ft import sharding
from icl_ft.model import checkpoints
from icl_ft.model import gemma_checkpoint
from icl_ft.model.config import ModelConfig
from icl_ft.model.transformer import Transformer

FORMATS = ("icl_ft", "gemma")


def check_format(fmt: str) -> None:
  """ValueError unless `fmt` is a checkpoint format `restored` reads."""
  if fmt not in FORMATS:
    raise ValueError(f"checkpoint_format {fmt!r} is not one of {FORMATS}")


def transformer_init(cfg: ModelConfig, seed: int = 0) -> Callable[[], Transformer]:
  """The Transformer's constructor for `cfg`, parameters drawn from `seed`."""
  return lambda: Transformer(cfg, rngs=nnx.Rngs(params=seed))


def abstract(cfg: ModelConfig, mesh: Mesh, rules: Mapping[str, Any] | None = None
             ) -> tuple[Any, Any, Any]:
  """(graphdef, abstract state with target shardings, shardings); nothing allocated."""
  return sharding.abstract_model(transformer_init(cfg), mesh, rules)


def fresh(cfg: ModelConfig, mesh: Mesh, rules: Mapping[str, Any] | None = None,
          seed: int = 0) -> Transformer:
  """A Transformer with parameters initialized (seed) directly onto `mesh`."""
  return sharding.create_sharded(transformer_init(cfg, seed), mesh, rules)


def for_restore(cfg: ModelConfig, mesh: Mesh, rules: Mapping[str, Any] | None = None
                ) -> Transformer:
  """A Transformer whose parameters are abstract with their target sharding (none allocated)."""
  return sharding.create_for_restore(transformer_init(cfg), mesh, rules)


def restored(cfg: ModelConfig, path: str, fmt: str, mesh: Mesh,
             rules: Mapping[str, Any] | None = None, preset: str | None = None) -> Transformer:
  """A Transformer restored from the checkpoint at `path` (format "icl_ft" or "gemma").

  For "icl_ft" the checkpoint's recorded preset is checked against `preset` (same shapes, other
  attention pattern: a silent mismatch otherwise), and so is every value's finiteness.
  """
  check_format(fmt)
  model = for_restore(cfg, mesh, rules)
  if fmt == "gemma":
    gemma_checkpoint.import_gemma(path, model, cfg, mesh, rules)
  else:
    checkpoints.restore_params(path, model, mesh, rules=rules, preset=preset)
  return model
