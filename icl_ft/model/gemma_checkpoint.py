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

Import streams: the embedder, then one layer at a time, is restored (orbax partial restore)
straight into shardings on the mesh derived from the logical names of each official array,
converted to the model's layout under jit with the model parameter's sharding as output, and
written into the model. Nothing is gathered on one device; the peak is the model plus one layer.
"""

from __future__ import annotations

import dataclasses
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
from icl_ft.model.tokenizer import KNOWN_PADDED_VOCABS

Shape = tuple[int, ...]

# Logical axis names of each official array (for its restore sharding on the mesh).
OFFICIAL_LOGICAL: dict[str, tuple[str | None, ...]] = {
    "embedder/input_embedding": ("vocab", "embed"),
    "norm/scale": (None,),
    "attn/q_einsum/w": ("heads", "embed", "head_dim"),
    "attn/kv_einsum/w": (None, "kv_heads", "embed", "head_dim"),
    "attn/qkv_einsum/w": (None, "heads", "embed", "head_dim"),
    "attn/attn_vec_einsum/w": ("heads", "head_dim", "embed"),
    "mlp/gating_einsum/w": (None, "embed", "mlp"),
    "mlp/gating_einsum/w:transposed": (None, "mlp", "embed"),
    "mlp/linear/w": ("mlp", "embed"),
}


def family_of(cfg: Any) -> int:
  """1, 2 or 3 from cfg.family ("gemma1", "gemma2", "gemma3", or an int)."""
  fam = getattr(cfg, "family", None)
  m = re.search(r"([123])", str(fam))
  if not m:
    raise ValueError(f"model config family {fam!r} is not Gemma 1, 2 or 3")
  return int(m.group(1))


def _flag(cfg: Any, name: str, default: bool) -> bool:
  """A ModelConfig feature flag (use_post_attn_norm, ...), else the family's default."""
  value = getattr(cfg, name, None)
  return default if value is None else bool(value)


@dataclasses.dataclass(frozen=True)
class Layout:
  """What the official checkpoint of a preset contains."""

  family: int
  num_layers: int
  fused_qkv: bool
  gating_transposed: bool
  vocab_rows: int
  # flat key -> {leaf name: shape}
  shapes: dict[str, dict[str, Shape]]


def official_layout(cfg: Any, *, gating_transposed: bool | None = None,
                    vocab_rows: int | None = None) -> Layout:
  """The flat keys and shapes of an official checkpoint for `cfg`."""
  fam = family_of(cfg)
  d, f = cfg.embed_dim, cfg.hidden_dim
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  if gating_transposed is None:
    gating_transposed = fam >= 3
  v = cfg.vocab_size if vocab_rows is None else vocab_rows
  fused = n == k
  shapes: dict[str, dict[str, Shape]] = {
      "transformer/embedder": {"input_embedding": (v, d)},
      "transformer/final_norm": {"scale": (d,)},
  }
  for i in range(cfg.num_layers):
    p = f"transformer/layer_{i}"
    shapes[f"{p}/pre_attention_norm"] = {"scale": (d,)}
    shapes[f"{p}/pre_ffw_norm"] = {"scale": (d,)}
    if _flag(cfg, "use_post_attn_norm", fam >= 2):
      shapes[f"{p}/post_attention_norm"] = {"scale": (d,)}
    if _flag(cfg, "use_post_ffw_norm", fam >= 2):
      shapes[f"{p}/post_ffw_norm"] = {"scale": (d,)}
    if fused:
      shapes[f"{p}/attn/qkv_einsum"] = {"w": (3, n, d, h)}
    else:
      shapes[f"{p}/attn/q_einsum"] = {"w": (n, d, h)}
      shapes[f"{p}/attn/kv_einsum"] = {"w": (2, k, d, h)}
    shapes[f"{p}/attn/attn_vec_einsum"] = {"w": (n, h, d)}
    if _flag(cfg, "use_qk_norm", fam >= 3):
      shapes[f"{p}/attn/_query_norm"] = {"scale": (h,)}
      shapes[f"{p}/attn/_key_norm"] = {"scale": (h,)}
    shapes[f"{p}/mlp/gating_einsum"] = {"w": (2, f, d) if gating_transposed else (2, d, f)}
    shapes[f"{p}/mlp/linear"] = {"w": (f, d)}
  return Layout(fam, cfg.num_layers, fused, gating_transposed, v, shapes)


def _logical_for(key: str, leaf: str, layout: Layout) -> tuple[str | None, ...]:
  if leaf == "scale":
    return (None,)
  if key.endswith("embedder"):
    return OFFICIAL_LOGICAL["embedder/input_embedding"]
  tail = "/".join(key.split("/")[-2:]) + "/" + leaf
  if tail == "mlp/gating_einsum/w" and layout.gating_transposed:
    tail += ":transposed"
  return OFFICIAL_LOGICAL[tail]


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
    raise checkpoints.CheckpointError(f"not an orbax checkpoint: {path} ({type(e).__name__}: {e})") from None
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
    raise checkpoints.CheckpointError(f"checkpoint {path} uses the stacked layer layout, which is not supported")
  if not any(k.startswith("transformer/") for k in out):
    some = ", ".join(sorted(tree)[:5])
    raise checkpoints.CheckpointError(f"checkpoint {path} is not in the official Gemma flat layout "
                          f"(no 'transformer/...' keys; found {some})")
  return out


def detect_family(meta: Mapping[str, Any]) -> int:
  """Gemma family of a checkpoint from its keys: qk-norm -> 3, post norms -> 2, else 1."""
  keys = set(meta)
  if any(k.endswith("/attn/_query_norm") for k in keys):
    return 3
  if any(k.endswith("/post_attention_norm") for k in keys):
    return 2
  return 1


def num_layers_of(meta: Mapping[str, Any]) -> int:
  idx = [int(m.group(1)) for k in meta if (m := re.match(r"transformer/layer_(\d+)/", k))]
  return max(idx) + 1 if idx else 0


def check_checkpoint(meta: Mapping[str, Mapping[str, jax.ShapeDtypeStruct]], cfg: Any, *,
                     resize_vocab: bool | None = None, path: str = "") -> Layout:
  """The layout of `meta` for `cfg`; raises CheckpointError naming the first mismatch."""
  where = f"checkpoint {path}: " if path else "checkpoint: "
  fam = 3 if _flag(cfg, "use_qk_norm", family_of(cfg) >= 3) else (
      2 if _flag(cfg, "use_post_attn_norm", family_of(cfg) >= 2) else 1)
  ck_fam = detect_family(meta)
  if fam != ck_fam:
    raise checkpoints.CheckpointError(f"{where}looks like Gemma {ck_fam} (keys "
                          f"{'with' if ck_fam == 3 else 'without'} attn/_query_norm, "
                          f"{'with' if ck_fam >= 2 else 'without'} post_attention_norm) "
                          f"but the preset is Gemma {fam}")
  n_ck = num_layers_of(meta)
  if n_ck != cfg.num_layers:
    raise checkpoints.CheckpointError(f"{where}has {n_ck} layers but the preset has {cfg.num_layers}")
  # Gating orientation from the first layer's shape.
  gating = meta.get("transformer/layer_0/mlp/gating_einsum", {}).get("w")
  transposed = None
  if gating is not None and cfg.embed_dim != cfg.hidden_dim:
    if tuple(gating.shape) == (2, cfg.hidden_dim, cfg.embed_dim):
      transposed = True
    elif tuple(gating.shape) == (2, cfg.embed_dim, cfg.hidden_dim):
      transposed = False
  emb = meta.get("transformer/embedder", {}).get("input_embedding")
  rows = cfg.vocab_size
  if emb is not None and emb.shape[0] != cfg.vocab_size:
    pair = tuple(sorted((int(emb.shape[0]), int(cfg.vocab_size))))
    ok = resize_vocab if resize_vocab is not None else pair in KNOWN_PADDED_VOCABS
    if ok:
      rows = int(emb.shape[0])
  layout = official_layout(cfg, gating_transposed=transposed, vocab_rows=rows)
  for key, leaves in layout.shapes.items():
    if key not in meta:
      raise checkpoints.CheckpointError(f"{where}missing key {key!r} (needed by the Gemma {fam} preset)")
    for leaf, shape in leaves.items():
      if leaf not in meta[key]:
        raise checkpoints.CheckpointError(f"{where}missing key {key + '/' + leaf!r}")
      got = tuple(meta[key][leaf].shape)
      if got != shape:
        raise checkpoints.CheckpointError(f"{where}{key}/{leaf} has shape {got}, expected {shape} for the preset"
                              + (" (vocab rows differ: pass resize_vocab=True to cut/pad)"
                                 if leaf == "input_embedding" and got[1:] == shape[1:] else ""))
  return layout


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


def official_targets(layout: Layout, keys, meta, mesh: Mesh, rules=None, dtype=None):
  """ShapeDtypeStructs with mesh shardings for the given flat keys of `layout`."""
  resolved = sharding.resolve_rules(rules)
  out = {}
  for key in keys:
    out[key] = {}
    for leaf, shape in layout.shapes[key].items():
      spec = sharding.logical_to_spec(_logical_for(key, leaf, layout), resolved)
      s = NamedSharding(mesh, sharding.fit_spec(spec, shape, mesh))
      dt = meta[key][leaf].dtype if dtype is None else dtype
      out[key][leaf] = jax.ShapeDtypeStruct(shape, dt, sharding=s)
  return out


def layer_keys(layout: Layout, i: int | None) -> list[str]:
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
  layout = check_checkpoint(meta, cfg, resize_vocab=resize_vocab, path=path)
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


# ---------------------------------------------------------------------------
# Model side (filled in against icl_ft.model.transformer's parameter tree)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
  """One model parameter <-> (a slice of) one official array.

  `official_axes` / `model_axes` name the dimensions with letters (V vocab, D embed, N heads,
  K kv heads, H head_dim, F mlp hidden, C/S the stacked leading dim); a parenthesized group
  in `model_axes` is a merged dimension, e.g. "D(NH)". `index` selects one slice of the
  official array's leading stacked dim (e.g. k = kv_einsum[0], v = kv_einsum[1]).
  """

  key: str            # official flat key, "{i}" for the layer index
  leaf: str           # "w", "scale" or "input_embedding"
  official_axes: str
  model_path: str     # '/'-joined nnx state path, "{i}" for the layer index
  model_axes: str
  index: int | None = None


def _parse_axes(axes: str) -> list[str]:
  out, i = [], 0
  while i < len(axes):
    if axes[i] == "(":
      j = axes.index(")", i)
      out.append(axes[i + 1:j])
      i = j + 1
    else:
      out.append(axes[i])
      i += 1
  return out


def official_to_model(x: jax.Array, e: Entry) -> jax.Array:
  """Slice / transpose / reshape an official array into the model parameter's layout."""
  src = e.official_axes
  if e.index is not None:
    x = x[e.index]
    src = src[1:]
  groups = _parse_axes(e.model_axes)
  flat = "".join(groups)
  if sorted(flat) != sorted(src):
    raise ValueError(f"axes {e.official_axes!r} -> {e.model_axes!r} do not match")
  x = jnp.transpose(x, [src.index(a) for a in flat])
  sizes = dict(zip(flat, x.shape))
  return x.reshape([int(np.prod([sizes[a] for a in g])) for g in groups])


def model_to_official(x: jax.Array, e: Entry, sizes: Mapping[str, int]) -> jax.Array:
  """Inverse of `official_to_model` (without the stacking of `index`); `sizes` gives the
  size of each letter of a merged dimension."""
  groups = _parse_axes(e.model_axes)
  flat = "".join(groups)
  sizes = {**sizes, **{g: n for g, n in zip(groups, x.shape) if len(g) == 1}}
  x = x.reshape([sizes[a] for a in flat])
  dst = e.official_axes[1:] if e.index is not None else e.official_axes
  return jnp.transpose(x, [flat.index(a) for a in dst])


def _path_str(path) -> str:
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def _is_var(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def model_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
  """{'/'-joined path: Variable} of the model's nnx.Params."""
  state = nnx.state(model, nnx.Param)
  leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_var)[0]
  return {_path_str(p): v for p, v in leaves if _is_var(v)}


def _sizes(cfg: Any) -> dict[str, int]:
  return {"V": cfg.vocab_size, "D": cfg.embed_dim, "N": cfg.num_heads, "K": cfg.num_kv_heads,
          "H": cfg.head_dim, "F": cfg.hidden_dim, "C": 2, "S": 3}


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
  entries_by_key: dict[tuple[str, str], list[Entry]] = {}
  converters: dict[tuple, Callable] = {}  # one compiled converter per entry kind, not per layer

  def converter(e: Entry, shape, dtype, target_sharding):
    rows = shape[0] if "V" in e.official_axes else None
    cache_key = (e, rows, jnp.dtype(dtype), target_sharding)
    if cache_key not in converters:

      def convert(x):
        y = official_to_model(x, e)
        if rows is not None:
          y = _resize_rows(y, rows)
        return y.astype(dtype)

      converters[cache_key] = jax.jit(convert, out_shardings=target_sharding)
    return converters[cache_key]

  for i, layout, group in load_official(path, cfg, mesh, rules, resize_vocab=resize_vocab):
    if not entries_by_key:
      for e in model_entries(cfg, layout):
        entries_by_key.setdefault((e.key, e.leaf), []).append(e)
    for key, leaves in group.items():
      tmpl = re.sub(r"layer_\d+", "layer_{i}", key)
      for leaf, x in leaves.items():
        for e in entries_by_key.get((tmpl, leaf), []):
          mpath = e.model_path.format(i=i)
          if mpath not in variables:
            raise checkpoints.CheckpointError(f"model has no parameter {mpath!r} for {key}/{leaf}")
          var = variables[mpath]
          target = var.get_value()
          out = converter(e, tuple(target.shape), target.dtype,
                          getattr(target, "sharding", None))(x)
          if tuple(out.shape) != tuple(target.shape):
            raise checkpoints.CheckpointError(f"{key}/{leaf} converts to shape {tuple(out.shape)} but model "
                                  f"parameter {mpath} has {tuple(target.shape)}")
          var.set_value(out)
          done.add(mpath)
        x.delete()
  missing = sorted(set(variables) - done)
  if missing:
    raise checkpoints.CheckpointError(f"model parameter {missing[0]!r} was not filled from the checkpoint "
                          f"({len(missing)} missing)")
  return model


def export_flat(model: nnx.Module, cfg: Any | None = None, *, vocab_rows: int | None = None,
                gating_transposed: bool | None = None, dtype=None) -> dict:
  """The model's params as an official flat-layout tree of (sharded) arrays (cfg None =
  model.config; vocab_rows pads the embedding with zero rows, e.g. 256128)."""
  cfg = model.config if cfg is None else cfg
  layout = official_layout(cfg, gating_transposed=gating_transposed,
                           vocab_rows=vocab_rows or cfg.vocab_size)
  variables = model_variables(model)
  sizes = _sizes(cfg)
  grouped: dict[tuple[str, str], list[Entry]] = {}
  for e in model_entries(cfg, layout):
    grouped.setdefault((e.key, e.leaf), []).append(e)
  flat: dict[str, dict[str, jax.Array]] = {}
  layers = range(cfg.num_layers)
  for (tmpl, leaf), entries in grouped.items():
    for i in (layers if "{i}" in tmpl else [None]):
      key = tmpl.format(i=i)
      parts = []
      for e in sorted(entries, key=lambda e: -1 if e.index is None else e.index):
        v = variables[e.model_path.format(i=i)].get_value()
        parts.append(model_to_official(v, e, sizes))
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


def model_entries(cfg: Any, layout: Layout) -> list[Entry]:
  """How each official array maps onto the Transformer's parameters."""
  L = "transformer/layer_{i}"
  M = "layers/{i}"
  e = [Entry("transformer/embedder", "input_embedding", "VD", "embedder/input_embedding", "VD"),
       Entry("transformer/final_norm", "scale", "D", "final_norm/scale", "D")]
  norms = ["pre_attention_norm", "pre_ffw_norm", "post_attention_norm", "post_ffw_norm"]
  for n in [n for n in norms if f"transformer/layer_0/{n}" in layout.shapes]:
    e.append(Entry(f"{L}/{n}", "scale", "D", f"{M}/{n}/scale", "D"))
  if layout.fused_qkv:
    e += [Entry(f"{L}/attn/qkv_einsum", "w", "SNDH", f"{M}/{p}", "DNH", index=j)
          for j, p in enumerate(("q", "k", "v"))]
  else:
    e.append(Entry(f"{L}/attn/q_einsum", "w", "NDH", f"{M}/q", "DNH"))
    e += [Entry(f"{L}/attn/kv_einsum", "w", "CKDH", f"{M}/{p}", "DKH", index=j)
          for j, p in enumerate(("k", "v"))]
  e.append(Entry(f"{L}/attn/attn_vec_einsum", "w", "NHD", f"{M}/o", "NHD"))
  if "transformer/layer_0/attn/_query_norm" in layout.shapes:
    e.append(Entry(f"{L}/attn/_query_norm", "scale", "H", f"{M}/query_norm/scale", "H"))
    e.append(Entry(f"{L}/attn/_key_norm", "scale", "H", f"{M}/key_norm/scale", "H"))
  g = "CFD" if layout.gating_transposed else "CDF"
  e += [Entry(f"{L}/mlp/gating_einsum", "w", g, f"{M}/{p}", "DF", index=j)
        for j, p in enumerate(("gate", "up"))]
  e.append(Entry(f"{L}/mlp/linear", "w", "FD", f"{M}/down", "FD"))
  return e
