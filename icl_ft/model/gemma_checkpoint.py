"""Import and export of the official Gemma checkpoint layout (Gemma 1, 2 and 3).

The official releases (Kaggle / the google-deepmind/gemma library) are orbax PyTree
checkpoints whose top-level keys are flat '/'-joined module paths, each mapping to a dict
with one array:

  transformer/embedder                       {"input_embedding": [V, D]}
  transformer/final_norm                     {"scale": [D]}
  transformer/layer_N/pre_attention_norm     {"scale": [D]}
  transformer/layer_N/post_attention_norm    {"scale": [D]}          (Gemma 2, 3)
  transformer/layer_N/pre_ffw_norm           {"scale": [D]}
  transformer/layer_N/post_ffw_norm          {"scale": [D]}          (Gemma 2, 3)
  transformer/layer_N/attn/q_einsum          {"w": [N, D, H]}        (num_kv_heads != num_heads)
  transformer/layer_N/attn/kv_einsum         {"w": [2, K, D, H]}     (num_kv_heads != num_heads)
  transformer/layer_N/attn/qkv_einsum        {"w": [3, N, D, H]}     (num_kv_heads == num_heads)
  transformer/layer_N/attn/attn_vec_einsum   {"w": [N, H, D]}
  transformer/layer_N/attn/_query_norm       {"scale": [H]}          (Gemma 3)
  transformer/layer_N/attn/_key_norm         {"scale": [H]}          (Gemma 3)
  transformer/layer_N/mlp/gating_einsum      {"w": [2, D, F]} (Gemma 1, 2) or [2, F, D] (Gemma 3)
  transformer/layer_N/mlp/linear             {"w": [F, D]}

Keys of other components (the Gemma 3 vision encoder `SigLiPFromPatches_0/...`, the
`transformer/embedder/mm_*` projections) are ignored on import. The gating orientation is
detected from the shape (when D == F it follows the family: transposed for Gemma 3). Gemma 1
and 2 embed 256128 rows for the 256000-piece tokenizer; rows are cut or zero-padded to the
preset's vocab_size when the pair is a known padding (or `resize_vocab=True`).

The layout itself (keys and shapes per preset, the metadata check, how each array maps onto
our parameters) is `icl_ft.model.gemma_layout`; this module reads and writes the checkpoints.

Import streams: the embedder, then one layer at a time, is restored (orbax partial restore)
straight into shardings on the mesh derived from the logical names of each official array,
converted to the model's layout under jit with the model parameter's sharding as output, and
written into the model. Nothing is gathered on one device; the peak is the model plus one layer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from icl_ft import sharding
from icl_ft.model import checkpoints
from icl_ft.model import gemma_layout

# ---------------------------------------------------------------------------
# Reading checkpoint metadata and checking it against the preset
# ---------------------------------------------------------------------------


def _checkpointer():
  return ocp.PyTreeCheckpointer()


def resolve_path(path: str | os.PathLike[str]) -> str:
  """The orbax item directory: `path`, or `path/default` for Kauldron-style checkpoints."""
  p = epath.Path(path)
  if not p.exists():
    raise FileNotFoundError(f"checkpoint directory not found: {path}")
  if not (p / "_METADATA").exists() and (p / "default" / "_METADATA").exists():
    p = p / "default"
  return os.fspath(p)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, dict[str, jax.ShapeDtypeStruct]]:
  """{flat key: {leaf: ShapeDtypeStruct}} of an official-layout checkpoint (reads no arrays)."""
  path = resolve_path(path)
  try:
    meta = _checkpointer().metadata(path)
  except Exception as e:  # orbax raises several types for non-checkpoints
    raise checkpoints.CheckpointError(
        f"not an orbax checkpoint: {path} ({type(e).__name__}: {e})") from None
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  if not isinstance(tree, Mapping):
    raise checkpoints.CheckpointError(f"checkpoint {path} has no tree metadata")
  out: dict[str, dict[str, jax.ShapeDtypeStruct]] = {}
  for key, sub in tree.items():
    if isinstance(sub, Mapping):
      out[key] = {leaf: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype) for leaf, m in sub.items()
                  if hasattr(m, "shape")}
  if any(k.startswith("transformer/stacked_layers") for k in out):
    raise checkpoints.CheckpointError(
        f"checkpoint {path} uses the stacked layer layout, which is not supported")
  if not any(k.startswith("transformer/") for k in out):
    some = ", ".join(sorted(tree)[:5])
    raise checkpoints.CheckpointError(f"checkpoint {path} is not in the official Gemma flat "
                                      f"layout (no 'transformer/...' keys; found {some})")
  return out


# ---------------------------------------------------------------------------
# Restoring official arrays onto the mesh
# ---------------------------------------------------------------------------


def _restore(path: str, targets: dict[str, dict[str, jax.ShapeDtypeStruct]]) -> dict:
  """Partial restore of `targets` (ShapeDtypeStructs with sharding; dtype casts on read)."""
  restore_args = jax.tree.map(
      lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding, global_shape=s.shape, dtype=s.dtype),
      targets)
  return _checkpointer().restore(
      path, args=ocp.args.PyTreeRestore(item=targets, restore_args=restore_args,
                                        partial_restore=True))


def official_targets(layout: gemma_layout.Layout, keys, meta, mesh: Mesh, rules=None, dtype=None):
  """ShapeDtypeStructs with mesh shardings for the given flat keys of `layout`."""
  resolved = sharding.resolve_rules(rules)
  out = {}
  for key in keys:
    out[key] = {}
    for leaf, shape in layout.shapes[key].items():
      spec = sharding.logical_to_spec(gemma_layout.logical_axes(key, leaf, layout), resolved)
      s = NamedSharding(mesh, sharding.fit_spec(spec, shape, mesh))
      dt = meta[key][leaf].dtype if dtype is None else dtype
      out[key][leaf] = jax.ShapeDtypeStruct(shape, dt, sharding=s)
  return out


def layer_keys(layout: gemma_layout.Layout, i: int | None) -> list[str]:
  """Flat keys of layer `i` (None = the non-layer keys: embedder, final norm)."""
  if i is None:
    return [k for k in layout.shapes if not k.startswith("transformer/layer_")]
  prefix = f"transformer/layer_{i}/"
  return [k for k in layout.shapes if k.startswith(prefix)]


def load_official(path: str | os.PathLike[str], cfg: Any, mesh: Mesh, rules=None, *,
                  dtype=None, resize_vocab: bool | None = None):
  """Yields (layer index or None, {flat key: {leaf: sharded array}}) one group at a time."""
  path = resolve_path(path)
  meta = read_metadata(path)
  layout = gemma_layout.check_checkpoint(meta, cfg, resize_vocab=resize_vocab, path=path)
  for i in [None, *range(layout.num_layers)]:
    keys = layer_keys(layout, i)
    yield i, layout, _restore(path, official_targets(layout, keys, meta, mesh, rules, dtype))


def save_official(path: str | os.PathLike[str], flat: Mapping[str, Mapping[str, Any]],
                  force: bool = False) -> None:
  """Writes a flat-layout tree as an orbax PyTree checkpoint (like the official releases)."""
  ckpt = ocp.PyTreeCheckpointer()
  ckpt.save(os.fspath(path), dict(flat), force=force)
  wait = getattr(ckpt, "wait_until_finished", None)
  if wait:
    wait()


def _path_str(path) -> str:
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def _is_var(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def model_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
  """{'/'-joined path: Variable} of the model's nnx.Params."""
  state = nnx.state(model, nnx.Param)
  leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_var)[0]
  return {_path_str(p): v for p, v in leaves if _is_var(v)}


def _resize_rows(x: jax.Array, rows: int) -> jax.Array:
  if x.shape[0] == rows:
    return x
  if x.shape[0] > rows:
    return x[:rows]
  return jnp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def import_gemma(path: str | os.PathLike[str], model: nnx.Module, cfg: Any | None, mesh: Mesh,
                 rules: Mapping[str, Any] | None = None, *,
                 resize_vocab: bool | None = None) -> nnx.Module:
  """Loads an official Gemma checkpoint into `model` (real or abstract params), in place.

  Each array is restored onto the mesh, converted under jit straight into the sharding of the
  model parameter it feeds (the parameter's current sharding; for an abstract model, the
  ShapeDtypeStruct's), cast to its dtype, and set. `cfg` None = `model.config`. Raises
  CheckpointError for a missing key, a wrong shape or another family (checked on metadata,
  before reading anything).
  """
  cfg = model.config if cfg is None else cfg
  variables = model_variables(model)
  done: set[str] = set()
  entries_by_key: dict[tuple[str, str], list[gemma_layout.Entry]] = {}
  converters: dict[tuple, Callable] = {}  # one compiled converter per entry kind, not per layer

  def converter(e: gemma_layout.Entry, shape, dtype, target_sharding):
    rows = shape[0] if "V" in e.official_axes else None
    cache_key = (e, rows, jnp.dtype(dtype), target_sharding)
    if cache_key not in converters:

      def convert(x):
        y = gemma_layout.official_to_model(x, e)
        if rows is not None:
          y = _resize_rows(y, rows)
        return y.astype(dtype)

      converters[cache_key] = jax.jit(convert, out_shardings=target_sharding)
    return converters[cache_key]

  for i, layout, group in load_official(path, cfg, mesh, rules, resize_vocab=resize_vocab):
    if not entries_by_key:
      for e in gemma_layout.model_entries(cfg, layout):
        entries_by_key.setdefault((e.key, e.leaf), []).append(e)
    for key, leaves in group.items():
      tmpl = re.sub(r"layer_\d+", "layer_{i}", key)
      for leaf, x in leaves.items():
        for e in entries_by_key.get((tmpl, leaf), []):
          mpath = e.model_path.format(i=i)
          if mpath not in variables:
            raise checkpoints.CheckpointError(
                f"model has no parameter {mpath!r} for {key}/{leaf}")
          var = variables[mpath]
          target = var.get_value()
          out = converter(e, tuple(target.shape), target.dtype,
                          getattr(target, "sharding", None))(x)
          if tuple(out.shape) != tuple(target.shape):
            raise checkpoints.CheckpointError(
                f"{key}/{leaf} converts to shape {tuple(out.shape)} but model "
                f"parameter {mpath} has {tuple(target.shape)}")
          var.set_value(out)
          done.add(mpath)
        x.delete()
  missing = sorted(set(variables) - done)
  if missing:
    raise checkpoints.CheckpointError(
        f"model parameter {missing[0]!r} was not filled from the checkpoint "
        f"({len(missing)} missing)")
  return model


def export_flat(model: nnx.Module, cfg: Any | None = None, *, vocab_rows: int | None = None,
                gating_transposed: bool | None = None, dtype=None) -> dict:
  """The model's params as an official flat-layout tree of (sharded) arrays (cfg None =
  model.config; vocab_rows pads the embedding with zero rows, e.g. 256128)."""
  cfg = model.config if cfg is None else cfg
  layout = gemma_layout.official_layout(cfg, gating_transposed=gating_transposed,
                           vocab_rows=vocab_rows or cfg.vocab_size)
  variables = model_variables(model)
  sizes = gemma_layout.axis_sizes(cfg)
  grouped: dict[tuple[str, str], list[gemma_layout.Entry]] = {}
  for e in gemma_layout.model_entries(cfg, layout):
    grouped.setdefault((e.key, e.leaf), []).append(e)
  flat: dict[str, dict[str, jax.Array]] = {}
  layers = range(cfg.num_layers)
  for (tmpl, leaf), entries in grouped.items():
    for i in (layers if "{i}" in tmpl else [None]):
      key = tmpl.format(i=i)
      parts = []
      for e in sorted(entries, key=lambda e: -1 if e.index is None else e.index):
        v = variables[e.model_path.format(i=i)].get_value()
        parts.append(gemma_layout.model_to_official(v, e, sizes))
      x = jnp.stack(parts) if entries[0].index is not None else parts[0]
      if "V" in entries[0].official_axes:
        x = _resize_rows(x, layout.vocab_rows)
      if dtype is not None:
        x = x.astype(dtype)
      want = layout.shapes[key][leaf]
      if tuple(x.shape) != tuple(want):
        raise ValueError(f"export: {key}/{leaf} has shape {tuple(x.shape)}, layout wants {want}")
      flat.setdefault(key, {})[leaf] = x
  missing = set(layout.shapes) - set(flat)
  if missing:
    raise ValueError(f"export: no model parameter maps to {sorted(missing)[0]!r}")
  return flat


def export_gemma(model: nnx.Module, cfg: Any | None, path: str | os.PathLike[str], *,
                 vocab_rows: int | None = None, gating_transposed: bool | None = None,
                 dtype=None, force: bool = False) -> None:
  """Writes `model` as an official-layout orbax checkpoint (see `export_flat`)."""
  save_official(path, export_flat(model, cfg, vocab_rows=vocab_rows,
                                  gating_transposed=gating_transposed, dtype=dtype), force=force)


