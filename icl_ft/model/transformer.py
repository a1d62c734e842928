"""Gemma-style decoder (Gemma 1, 2, 3) in Flax NNX.

  model = Transformer(cfg, rngs=nnx.Rngs(params=0))
  logits, _ = model(tokens, positions, segment_ids)                # training / scoring
  cache = model.init_cache(batch_size, max_len)
  logits, cache = model(prompt, positions, segment_ids, cache=cache)  # prefill
  logits, cache = model(next_token, next_pos, next_seg, cache=cache)  # decode one step

tokens, positions, segment_ids: int32 [B, L]; segment id 0 marks padding; a query attends to
keys of its own (nonzero) segment at positions <= its own, within the window on local layers
(see icl_ft.model.attention). logits: float32 [B, L, V].

Parameter tree (nnx state paths; float32; logical axis names in each Param's `out_sharding`):

  embedder/input_embedding             [V, D]     ("vocab", "embed")
  final_norm/scale                     [D]        ("norm",)
  layers/{i}/pre_attention_norm/scale  [D]        ("norm",)
  layers/{i}/post_attention_norm/scale [D]        ("norm",)          Gemma 2, 3
  layers/{i}/pre_ffw_norm/scale        [D]        ("norm",)
  layers/{i}/post_ffw_norm/scale       [D]        ("norm",)          Gemma 2, 3
  layers/{i}/q                         [D, N, H]  ("embed", "heads", "head_dim")
  layers/{i}/k                         [D, K, H]  ("embed", "kv_heads", "head_dim")
  layers/{i}/v                         [D, K, H]  ("embed", "kv_heads", "head_dim")
  layers/{i}/o                         [N, H, D]  ("heads", "head_dim", "embed")
  layers/{i}/query_norm/scale          [H]        ("norm",)          Gemma 3
  layers/{i}/key_norm/scale            [H]        ("norm",)          Gemma 3
  layers/{i}/gate                      [D, F]     ("embed", "mlp")   GELU(x @ gate) * (x @ up)
  layers/{i}/up                        [D, F]     ("embed", "mlp")
  layers/{i}/down                      [F, D]     ("mlp", "embed")

Block: x += post_attn_norm(attn(pre_attn_norm(x))); x += post_ffw_norm(mlp(pre_ffw_norm(x)))
(post norms only where the family has them). Attention: q, k, v projections -> QK-norm
(Gemma 3) -> RoPE (per-layer base and scale) -> q * query_scale -> soft-capped scores
(Gemma 2) -> masked softmax -> o projection. Output: final norm, tied embedding, final-logit
soft cap (Gemma 2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from icl_ft import sharding
from icl_ft.model import attention
from icl_ft.model import layers
from icl_ft.model.attention import KVCache
from icl_ft.model.config import ModelConfig


def _constrain(x: jax.Array, names: tuple[str, ...]) -> jax.Array:
  """Logical sharding constraint on an activation (no-op without an active mesh)."""
  return sharding.constrain(x, names)


class Block(nnx.Module):
  """One decoder layer (parameters as in the module docstring)."""

  def __init__(self, cfg: ModelConfig, layer: int, *, rngs: nnx.Rngs):
    d, f, n, k, h = cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    pdt = jnp.dtype(cfg.param_dtype)

    def norm(dim):
      return layers.RMSNorm(dim, eps=cfg.rms_norm_eps, param_dtype=pdt, rngs=rngs)

    self.attention_type = cfg.attention_types[layer]
    self.window = cfg.window(layer)
    self.rope_base = float(cfg.rope_base(layer))
    self.rope_scale = float(cfg.rope_scale(layer))
    self.query_scale = cfg.query_scale
    self.attn_logit_softcap = cfg.attn_logit_softcap
    self.eps = cfg.rms_norm_eps

    self.pre_attention_norm = norm(d)
    self.q = layers.param(rngs, layers.fan_in_init(d), (d, n, h), pdt,
                          ("embed", "heads", "head_dim"))
    self.k = layers.param(rngs, layers.fan_in_init(d), (d, k, h), pdt,
                          ("embed", "kv_heads", "head_dim"))
    self.v = layers.param(rngs, layers.fan_in_init(d), (d, k, h), pdt,
                          ("embed", "kv_heads", "head_dim"))
    self.o = layers.param(rngs, layers.fan_in_init(n * h), (n, h, d), pdt,
                          ("heads", "head_dim", "embed"))
    if cfg.use_qk_norm:
      self.query_norm = norm(h)
      self.key_norm = norm(h)
    else:
      self.query_norm = self.key_norm = None
    self.post_attention_norm = norm(d) if cfg.use_post_attn_norm else None
    self.pre_ffw_norm = norm(d)
    self.gate = layers.param(rngs, layers.fan_in_init(d), (d, f), pdt, ("embed", "mlp"))
    self.up = layers.param(rngs, layers.fan_in_init(d), (d, f), pdt, ("embed", "mlp"))
    self.down = layers.param(rngs, layers.fan_in_init(f), (f, d), pdt, ("mlp", "embed"))
    self.post_ffw_norm = norm(d) if cfg.use_post_ffw_norm else None

  def attend(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array,
             k_positions: jax.Array, k_segment_ids: jax.Array,
             kv: tuple[jax.Array, jax.Array] | None, end_index: jax.Array | None,
             prefix: tuple[jax.Array, ...] | None = None,
             recent: tuple[int, jax.Array, jax.Array] | None = None, *,
             rope: dict[tuple[float, float], tuple[jax.Array, jax.Array]]
             ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Self-attention of x [B, L, D]; with kv (cached k [B, K, H, S], v [B, K, S, H]) the new
    keys are written at end_index and attended together with the cached ones; with `prefix`
    (this layer's k [1, K, H, S], v [1, K, S, H] and the prefix positions, segment ids [1, S])
    every row also attends that shared prefix (before its own keys, cached or not).
    `recent` = (size, their positions, segment ids [B, size]), with kv: a local layer attends
    only the newest `size` slots, through the ones written now, and not the prefix
    (`Transformer.__call__`'s `local_recent`). `rope`: `layers.rope_tables` of the queries'
    positions per (base, scale) (`Transformer.rope_tables`)."""
    dt = x.dtype
    b, l, d = x.shape
    n, kh, h = self.q.shape[1], self.k.shape[1], self.k.shape[2]
    # Projections as 2D [B*L, D] @ [D, N*H] matmuls (a view of the [D, N, H] params): XLA:CPU
    # runs the 3D einsum's backward (contracting over b and l) far slower than one gemm.
    x2 = x.reshape(b * l, d)
    q = layers.einsum("md,df->mf", x2, self.q[...].reshape(d, n * h)).reshape(b, l, n, h)
    k = layers.einsum("md,df->mf", x2, self.k[...].reshape(d, kh * h)).reshape(b, l, kh, h)
    v = layers.einsum("md,df->mf", x2, self.v[...].reshape(d, kh * h)).reshape(b, l, kh, h)
    if self.query_norm is not None:
      q = self.query_norm(q)
      k = self.key_norm(k)
    tables = rope[(self.rope_base, self.rope_scale)]
    q = layers.apply_rope(q, tables)
    k = layers.apply_rope(k, tables)
    q = q * jnp.asarray(self.query_scale, dt)
    v = v.transpose(0, 2, 1, 3)  # [B, K, L, H], the cache layout
    new_kv = None
    if kv is not None:
      k = k.transpose(0, 2, 3, 1)  # [B, K, H, L]
      new_kv = (attention.write(kv[0], k, end_index, axis=3),
                attention.write(kv[1], v, end_index, axis=2))
      if recent is not None and self.window is not None:
        size, k_positions, k_segment_ids = recent
        if size < self.window:
          raise ValueError(f"local_recent={size} is shorter than the window {self.window}: "
                           "it would drop keys the window reaches")
        k = attention.newest_slots(new_kv[0], end_index + l, size, axis=3)
        v = attention.newest_slots(new_kv[1], end_index + l, size, axis=2)
        prefix = None
      else:
        k, v = new_kv
      k, v = k.astype(dt), v.astype(dt)
    else:
      k = k.transpose(0, 2, 1, 3)  # [B, K, L, H]: the uncached paths' layout
    if prefix is not None:
      out = attention.shared_prefix_attention(q, k, v, positions, segment_ids, prefix,
                                              k_positions=k_positions,
                                              k_segment_ids=k_segment_ids, window=self.window,
                                              logit_softcap=self.attn_logit_softcap,
                                              keys_transposed=kv is not None)
    elif kv is None:
      out = attention.self_attention(q, k, v, positions, segment_ids, window=self.window,
                                     logit_softcap=self.attn_logit_softcap)
    else:
      mask = attention.make_mask(positions, segment_ids, k_positions, k_segment_ids, self.window)
      out = attention.dot_product_attention(q, k, v, mask, logit_softcap=self.attn_logit_softcap,
                                            keys_transposed=True)
    out = layers.einsum("mf,fd->md", out.reshape(b * l, n * h), self.o[...].reshape(n * h, d))
    out = out.reshape(b, l, d)
    return out, new_kv

  def mlp(self, x: jax.Array) -> jax.Array:
    b, l, d = x.shape
    x2 = x.reshape(b * l, d)  # 2D gemms (see attend)
    gate = layers.einsum("md,df->mf", x2, self.gate[...])
    up = layers.einsum("md,df->mf", x2, self.up[...])
    hidden = layers.geglu(gate, up).reshape(b, l, -1)
    hidden = _constrain(hidden, ("batch", "length", "mlp")).reshape(b * l, -1)
    return layers.einsum("mf,fd->md", hidden, self.down[...]).reshape(b, l, d)

  def __call__(self, x, positions, segment_ids, k_positions, k_segment_ids, kv=None,
               end_index=None, prefix=None, recent=None, *, rope):
    h = self.pre_attention_norm(x)
    a, new_kv = self.attend(h, positions, segment_ids, k_positions, k_segment_ids, kv,
                            end_index, prefix, recent, rope=rope)
    if self.post_attention_norm is not None:
      a = self.post_attention_norm(a)
    x = x + a
    h = self.pre_ffw_norm(x)
    m = self.mlp(h)
    if self.post_ffw_norm is not None:
      m = self.post_ffw_norm(m)
    x = _constrain(x + m, ("batch", "length", "embed"))
    return x, new_kv


class Transformer(nnx.Module):
  """Gemma-style decoder-only transformer; `config` is its ModelConfig."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    pdt = jnp.dtype(config.param_dtype)
    self.embedder = layers.Embedder(config.vocab_size, config.embed_dim, param_dtype=pdt,
                                    rngs=rngs)
    self.layers = nnx.List([Block(config, i, rngs=rngs) for i in range(config.num_layers)])
    self.final_norm = layers.RMSNorm(config.embed_dim, eps=config.rms_norm_eps,
                                     param_dtype=pdt, rngs=rngs)

  @property
  def compute_dtype(self):
    return jnp.dtype(self.config.dtype)

  def init_cache(self, batch_size: int, max_len: int, dtype=None) -> KVCache:
    """An empty KV cache for `max_len` tokens (dtype: the compute dtype by default)."""
    cfg = self.config
    return attention.init_cache(cfg.num_layers, batch_size, max_len, cfg.num_kv_heads,
                                cfg.head_dim, self.compute_dtype if dtype is None else dtype)

  def __call__(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array,
               cache: KVCache | None = None, prefix: KVCache | None = None,
               logits_at: jax.Array | None = None, local_recent: int | None = None
               ) -> tuple[jax.Array, KVCache | None]:
    """Logits float32 [B, L, V] and the updated cache (None when cache is None).

    `prefix`: a batch-1 cache that every row continues (read only, never repeated): each row
    attends its slots [0, end_index) and then its own tokens (and, with `cache`, its own cached
    ones), as if the prefix were cached in every row. `cache` then holds only the rows' own
    tokens, and positions continue the prefix's.
    `logits_at` [B]: the logits of that one position per row only, [B, 1, V]. A prefill needs
    no more, and with a large vocabulary the output projection of every position is most of
    its FLOPs (Gemma 3 270M: 335 of 540 MFLOP per token).
    `local_recent` (static, with `cache`): local layers read only the newest `local_recent`
    slots of the rows' own cache, through the tokens just written, and not the prefix. Only
    for a caller that knows every key their window reaches is there: the sampler's decode
    steps once `window` tokens have been generated, where the window holds nothing else.
    """
    x, new_cache = self.hidden(tokens, positions, segment_ids, cache, prefix, local_recent)
    if logits_at is not None:
      x = jnp.take_along_axis(x, jnp.asarray(logits_at, jnp.int32)[:, None, None], axis=1)
    logits = layers.softcap(self.embedder.decode(x), self.config.final_logit_softcap)
    return _constrain(logits, ("batch", "length", "vocab")), new_cache

  def target_logprobs(self, x: jax.Array, targets: jax.Array, vocab_chunk: int = 0
                      ) -> jax.Array:
    """log p(targets) [B, L] float32 from `hidden`'s states [B, L, D], the logits never held
    whole when `vocab_chunk` > 0 (`layers.Embedder.target_logprobs`)."""
    return self.embedder.target_logprobs(x, targets, self.config.final_logit_softcap,
                                         vocab_chunk)

  def rope_tables(self, positions: jax.Array
                  ) -> dict[tuple[float, float], tuple[jax.Array, jax.Array]]:
    """`layers.rope_tables` of `positions` [B, L] for each (base, scale) the layers use: computed
    once per forward and shared by those layers."""
    keys = dict.fromkeys((block.rope_base, block.rope_scale) for block in self.layers)
    return {key: layers.rope_tables(positions, self.config.head_dim, base=key[0], scale=key[1])
            for key in keys}

  def hidden(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array,
             cache: KVCache | None = None, prefix: KVCache | None = None,
             local_recent: int | None = None) -> tuple[jax.Array, KVCache | None]:
    """The final-normed hidden states [B, L, D] the output projection reads, and the cache
    (`__call__` without the projection)."""
    if prefix is not None and prefix.batch_size != 1:
      raise ValueError(f"a shared prefix has batch size 1, got {prefix.batch_size}")
    if tokens.ndim != 2 or positions.shape != tokens.shape or segment_ids.shape != tokens.shape:
      raise ValueError(f"tokens {tokens.shape}, positions {positions.shape} and segment_ids "
                       f"{segment_ids.shape} must all be [B, L]")
    if cache is not None:
      attention.check_fits(cache, tokens.shape[0], tokens.shape[1])
    positions = jnp.asarray(positions, jnp.int32)
    segment_ids = jnp.asarray(segment_ids, jnp.int32)
    x = self.embedder.encode(jnp.asarray(tokens), self.compute_dtype)
    x = _constrain(x, ("batch", "length", "embed"))

    if cache is None:
      k_positions, k_segment_ids, end = positions, segment_ids, None
    else:
      end = cache.end_index
      k_positions = attention.write(cache.positions, positions, end)
      k_segment_ids = attention.write(cache.segment_ids, segment_ids, end)
    recent = None
    if cache is not None and local_recent is not None and local_recent < cache.max_len:
      written = end + tokens.shape[1]
      recent = (local_recent, attention.newest_slots(k_positions, written, local_recent, axis=1),
                attention.newest_slots(k_segment_ids, written, local_recent, axis=1))

    rope = self.rope_tables(positions)
    new_k, new_v = [], []
    for i, block in enumerate(self.layers):
      kv = None if cache is None else (cache.k[i], cache.v[i])
      shared = None if prefix is None else (prefix.k[i], prefix.v[i], prefix.positions,
                                            prefix.segment_ids)
      x, layer_kv = block(x, positions, segment_ids, k_positions, k_segment_ids, kv, end, shared,
                          recent, rope=rope)
      if layer_kv is not None:
        new_k.append(layer_kv[0])
        new_v.append(layer_kv[1])

    x = self.final_norm(x)
    if cache is None:
      return x, None
    new_cache = KVCache(k=tuple(new_k), v=tuple(new_v), positions=k_positions,
                        segment_ids=k_segment_ids,
                        end_index=(end + tokens.shape[1]).astype(jnp.int32))
    return x, new_cache
