"""The official Gemma checkpoint layout (Gemma 1, 2, 3) and how it maps onto our Transformer.

`official_layout(cfg)` lists the flat keys and shapes an official checkpoint of a preset
holds (the table is in `icl_ft.model.gemma_checkpoint`'s docstring); `check_checkpoint` checks
a checkpoint's metadata against it (family, layer count, gating orientation, vocab rows) and
raises a one-line `CheckpointError` naming the first mismatch. `model_entries` says how each
official array becomes one of our parameters (`Entry`: axis letters, slicing of stacked
arrays), `official_to_model` / `model_to_official` convert one array either way. No I/O here:
reading and writing the checkpoints is `icl_ft.model.gemma_checkpoint`'s.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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


def logical_axes(key: str, leaf: str, layout: Layout) -> tuple[str | None, ...]:
  """The logical axis names of the official array `key`/`leaf` (for its restore sharding)."""
  if leaf == "scale":
    return (None,)
  if key.endswith("embedder"):
    return OFFICIAL_LOGICAL["embedder/input_embedding"]
  tail = "/".join(key.split("/")[-2:]) + "/" + leaf
  if tail == "mlp/gating_einsum/w" and layout.gating_transposed:
    tail += ":transposed"
  return OFFICIAL_LOGICAL[tail]


def detect_family(meta: Mapping[str, Any]) -> int:
  """Gemma family of a checkpoint from its keys: qk-norm -> 3, post norms -> 2, else 1."""
  keys = set(meta)
  if any(k.endswith("/attn/_query_norm") for k in keys):
    return 3
  if any(k.endswith("/post_attention_norm") for k in keys):
    return 2
  return 1


def num_layers_of(meta: Mapping[str, Any]) -> int:
  """How many `transformer/layer_N` blocks a checkpoint's metadata has."""
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
    raise checkpoints.CheckpointError(
        f"{where}looks like Gemma {ck_fam} (keys "
        f"{'with' if ck_fam == 3 else 'without'} attn/_query_norm, "
        f"{'with' if ck_fam >= 2 else 'without'} post_attention_norm) "
        f"but the preset is Gemma {fam}")
  n_ck = num_layers_of(meta)
  if n_ck != cfg.num_layers:
    raise checkpoints.CheckpointError(
        f"{where}has {n_ck} layers but the preset has {cfg.num_layers}")
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
      raise checkpoints.CheckpointError(
          f"{where}missing key {key!r} (needed by the Gemma {fam} preset)")
    for leaf, shape in leaves.items():
      if leaf not in meta[key]:
        raise checkpoints.CheckpointError(f"{where}missing key {key + '/' + leaf!r}")
      got = tuple(meta[key][leaf].shape)
      if got != shape:
        raise checkpoints.CheckpointError(
            f"{where}{key}/{leaf} has shape {got}, expected {shape} for the preset"
            + (" (vocab rows differ: pass resize_vocab=True to cut/pad)"
               if leaf == "input_embedding" and got[1:] == shape[1:] else ""))
  return layout


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


def axis_sizes(cfg: Any) -> dict[str, int]:
  """The size of each axis letter of `Entry` for `cfg`."""
  return {"V": cfg.vocab_size, "D": cfg.embed_dim, "N": cfg.num_heads, "K": cfg.num_kv_heads,
          "H": cfg.head_dim, "F": cfg.hidden_dim, "C": 2, "S": 3}


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
