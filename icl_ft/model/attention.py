"""Attention: segment/position masks, grouped-query dot-product attention, the KV cache.

Masking rule (one rule for training, packing, padding and cached decoding): a query with
segment id s_q and position p_q attends a key with segment id s_k and position p_k iff

  s_q == s_k != 0   and   p_k <= p_q   and (local layers)   p_q - window < p_k

Segment 0 is padding (left or right) and empty cache slots: never attended. Positions must
increase within a segment (they restart per packed segment). A padding query attends nothing;
its scores are all replaced by a large negative *finite* number, so its softmax is uniform
rather than NaN (its output is meaningless but finite).

KV cache (`KVCache`, a pytree usable under jax.jit): per layer k [B, K, H, S] (keys
transposed) and v [B, K, S, H], plus the positions and segment ids of the cached keys [B, S]
(shared by all layers) and one scalar `end_index`. A call with L new tokens writes them at
[end_index, end_index + L) with
`dynamic_update_slice` and advances end_index by L; every layer caches the full length (local
layers mask by window instead of using a ring buffer; a decoder that knows their window
reaches only the newest slots reads just those, `newest_slots`).

Without a cache (training, whole-row scoring) the keys are the queries' own tokens, and on CPU
`self_attention` computes the same result per block of queries over only the keys that block
can reach: later tokens (causal) and, in local layers, tokens a whole window back are skipped.
That relies on the rule above plus contiguity: each segment is one run of tokens whose
positions increase by at least one per token (packing, padding and prompts all are).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from icl_ft.model import layers

# Logical axis names of the cache arrays (for sharding a cache, e.g. with
# icl_ft.sharding.logical_to_sharding): k, v, and positions / segment_ids; end_index is a scalar.
# k / v are kv-head major, k [B, K, H, S] and v [B, K, S, H]: the layouts the score and value
# matmuls read directly (queries x keys and probabilities x values, both plain [M, C] x [C, N]
# gemms), so decoding does not transpose the whole cache at every step. A decode step's score
# matmul has only G*L rows per kv head; over keys stored [S, H] (contracting both operands on
# their last axis) XLA:CPU ran it 2.5-4x slower than the value matmul over the same bytes.
K_AXES = ("batch", "kv_heads", "head_dim", "kv_length")
KV_AXES = ("batch", "kv_heads", "kv_length", "head_dim")  # v
INDEX_AXES = ("batch", "kv_length")

# Query block of `self_attention`: at least MIN_BLOCK tokens, at most MAX_BLOCKS blocks a row
# (each block is its own ops in the compiled program, so compile time grows with the count).
MIN_BLOCK = 32
MAX_BLOCKS = 16
# Backends where `self_attention` blocks (XLA:CPU runs the causal blocks 1.3-2.2x faster than
# one [L, L] block, forward + backward: bench/attention.py; accelerators have fused kernels).
BLOCKED_BACKENDS = ("cpu",)

# Replaces masked scores (finite, so fully-masked rows give no NaN; representable in bf16).
MASK_VALUE = -2.3819763e38


@dataclasses.dataclass(frozen=True)
class KVCache:
  """Keys / values of every layer and the positions / segment ids of the cached tokens."""

  k: tuple[jax.Array, ...]     # per layer [B, K, H, S] (transposed: K_AXES)
  v: tuple[jax.Array, ...]     # per layer [B, K, S, H]
  positions: jax.Array         # [B, S] int32
  segment_ids: jax.Array       # [B, S] int32; 0 = empty slot / padding
  end_index: jax.Array         # [] int32: slots [0, end_index) are written

  @property
  def batch_size(self) -> int:
    return int(self.positions.shape[0])

  @property
  def max_len(self) -> int:
    return int(self.positions.shape[1])

  @property
  def num_layers(self) -> int:
    return len(self.k)


# Fields spelled out: older JAX requires them.
jax.tree_util.register_dataclass(
    KVCache, data_fields=["k", "v", "positions", "segment_ids", "end_index"], meta_fields=[])


def init_cache(num_layers: int, batch_size: int, max_len: int, num_kv_heads: int,
               head_dim: int, dtype=jnp.float32) -> KVCache:
  """An empty cache: zeros, segment ids 0 (nothing attendable), end_index 0."""
  k_shape = (batch_size, num_kv_heads, head_dim, max_len)
  v_shape = (batch_size, num_kv_heads, max_len, head_dim)
  return KVCache(
      k=tuple(jnp.zeros(k_shape, dtype) for _ in range(num_layers)),
      v=tuple(jnp.zeros(v_shape, dtype) for _ in range(num_layers)),
      positions=jnp.zeros((batch_size, max_len), jnp.int32),
      segment_ids=jnp.zeros((batch_size, max_len), jnp.int32),
      end_index=jnp.zeros((), jnp.int32),
  )


def repeat_cache(cache: KVCache, n: int) -> KVCache:
  """Each batch row repeated n times (row b -> rows b*n .. b*n+n-1); batch 1 -> batch n.

  Use it to prefill a shared prefix once and continue it with n different suffixes.
  """
  rep = lambda x: jnp.repeat(x, n, axis=0)  # noqa: E731
  return KVCache(k=tuple(rep(x) for x in cache.k), v=tuple(rep(x) for x in cache.v),
                 positions=rep(cache.positions), segment_ids=rep(cache.segment_ids),
                 end_index=cache.end_index)


def check_fits(cache: KVCache, batch_size: int, length: int) -> None:
  """Raises ValueError if L new tokens do not fit (checked when end_index is concrete)."""
  if batch_size != cache.batch_size:
    raise ValueError(f"inputs have batch size {batch_size} but the cache has "
                     f"{cache.batch_size} (rows continuing a batch-1 cache: pass it as prefix=)")
  try:
    end = int(cache.end_index)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
    return  # traced (under jit): cannot be checked; JAX would clamp the write
  if end + length > cache.max_len:
    raise ValueError(f"cache overflow: {end} cached + {length} new tokens > max_len "
                     f"{cache.max_len}")


def write(buffer: jax.Array, new: jax.Array, end_index: jax.Array, axis: int = 1) -> jax.Array:
  """`new` written into `buffer` at slot end_index of `axis` (the length axis: 1 for
  positions / segment ids [B, S], 2 for values [B, K, S, H], 3 for keys [B, K, H, S])."""
  zero = jnp.zeros((), jnp.int32)
  start = [zero] * buffer.ndim
  start[axis] = jnp.asarray(end_index, jnp.int32)
  return jax.lax.dynamic_update_slice(buffer, new.astype(buffer.dtype), tuple(start))


def newest_slots(x: jax.Array, end: jax.Array, size: int, axis: int) -> jax.Array:
  """x's `size` slots before slot `end` along `axis`, or its first `size` when `end` < `size`
  (so the cut holds every slot before `end` either way); size <= x's slots.

  A gather rather than a dynamic slice: XLA:CPU fuses a slice of a cache just updated in a
  loop with the update, which then is no longer done in place (the whole cache copied per step).
  """
  start = jnp.maximum(jnp.asarray(end, jnp.int32) - size, 0)
  return jnp.take(x, start + jnp.arange(size, dtype=jnp.int32), axis=axis, mode="clip")


def make_mask(q_positions: jax.Array, q_segment_ids: jax.Array, k_positions: jax.Array,
              k_segment_ids: jax.Array, window: int | None = None) -> jax.Array:
  """Boolean [B, L, S]: which keys each query attends (rule in the module docstring)."""
  qp, qs = q_positions[:, :, None], q_segment_ids[:, :, None]
  kp, ks = k_positions[:, None, :], k_segment_ids[:, None, :]
  mask = (qs == ks) & (ks != 0) & (kp <= qp)
  if window is not None:
    mask &= kp > qp - window
  return mask


def _masked_scores(logits: jax.Array, mask: jax.Array, logit_softcap: float | None
                   ) -> jax.Array:
  """Float32 scores soft-capped, masked keys replaced by MASK_VALUE."""
  return jnp.where(mask, layers.softcap(logits, logit_softcap), MASK_VALUE)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *,
                          logit_softcap: float | None = None,
                          keys_transposed: bool = False) -> jax.Array:
  """Grouped-query attention. q [B, L, N, H] (already scaled), k / v [B, K, S, H] (k [B, K, H,
  S] with keys_transposed: the cache layout), mask [B, L, S] -> [B, L, N, H]. Query head n
  uses kv head n // (N / K). Scores and softmax in float32."""
  b, l, n, h = q.shape
  kh = k.shape[1]
  g = n // kh
  # Queries of a kv group stacked along one axis, [B, K, G*L, H]: every matmul (forward and
  # backward) is then a plain batched gemm with one contracting axis, which XLA:CPU runs far
  # faster than the [B, L, K, G, H] einsum (whose key gradient contracts over g and l).
  qg = q.reshape(b, l, kh, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kh, g * l, h)
  logits = jnp.einsum("bkmh,bkhs->bkms" if keys_transposed else "bkmh,bksh->bkms", qg, k,
                      preferred_element_type=jnp.float32)
  s = v.shape[2]
  mask = jnp.broadcast_to(mask[:, None, None, :, :], (b, 1, g, l, s)).reshape(b, 1, g * l, s)
  probs = jax.nn.softmax(_masked_scores(logits, mask, logit_softcap), axis=-1).astype(v.dtype)
  out = jnp.einsum("bkms,bksh->bkmh", probs, v)  # [B, K, G*L, H]
  return out.reshape(b, kh, g, l, h).transpose(0, 3, 1, 2, 4).reshape(b, l, n, h)


def block_size(length: int) -> int:
  """Queries per block of `self_attention` for rows of `length` tokens."""
  return max(MIN_BLOCK, -(-length // MAX_BLOCKS))


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, positions: jax.Array,
                   segment_ids: jax.Array, *, window: int | None = None,
                   logit_softcap: float | None = None, block: int | None = None) -> jax.Array:
  """Attention of a row's tokens to the same row's tokens (no cache): q [B, L, N, H] (scaled),
  k / v [B, K, L, H], positions / segment_ids [B, L] -> [B, L, N, H].

  Equal to `dot_product_attention` with `make_mask(positions, segment_ids, positions,
  segment_ids, window)`. With `block` < L (default: `block_size(L)` on BLOCKED_BACKENDS, else
  no blocking) each block of queries attends only the keys it can reach (module docstring).
  """
  length = q.shape[1]
  if block is None:
    block = block_size(length) if jax.default_backend() in BLOCKED_BACKENDS else length
  outs = []
  for start in range(0, length, block):
    end = min(start + block, length)
    # Keys after `end` are later tokens; keys a whole window before `start` are out of reach.
    first = 0 if window is None else max(0, start - window + 1)
    mask = make_mask(positions[:, start:end], segment_ids[:, start:end],
                     positions[:, first:end], segment_ids[:, first:end], window)
    outs.append(dot_product_attention(q[:, start:end], k[:, :, first:end], v[:, :, first:end],
                                      mask, logit_softcap=logit_softcap))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def shared_prefix_attention(q: jax.Array, k: jax.Array, v: jax.Array, positions: jax.Array,
                            segment_ids: jax.Array, prefix: tuple[jax.Array, ...], *,
                            k_positions: jax.Array | None = None,
                            k_segment_ids: jax.Array | None = None,
                            window: int | None = None,
                            logit_softcap: float | None = None,
                            keys_transposed: bool = False) -> jax.Array:
  """Rows that all continue one prefix: each row's tokens attend the shared prefix and their own
  row's keys. q [B, L, N, H] (scaled), positions / segment_ids [B, L] (the queries'); k / v
  [B, K, S', H] (k [B, K, H, S'] with keys_transposed) with k_positions / k_segment_ids [B, S']
  (the row's own keys: its tokens, or its cache after they were written; default: the queries'
  own); prefix = (k [1, K, H, S], v [1, K, S, H], positions, segment_ids [1, S]) (a cache's
  layouts) -> [B, L, N, H].

  Equal to `dot_product_attention` over the prefix repeated to B rows and followed by each
  row's keys (one softmax over both), without repeating it: the prefix scores and values are
  one matmul per kv head over all rows' queries, reading the prefix once.
  """
  if k_positions is None:
    k_positions, k_segment_ids = positions, segment_ids
  b, l, n, h = q.shape
  kh = k.shape[1]
  g = n // kh
  pk, pv, ppos, pseg = prefix
  s = pv.shape[2]
  qg = q.reshape(b, l, kh, g, h).transpose(0, 2, 3, 1, 4)  # [B, K, G, L, H]
  # The prefix part as one [M, H] x [H, S] matmul per kv head, M = B*G*L queries, in the
  # layouts the matmuls want (the prefix is the big operand: it is never transposed, and
  # neither are its [K, M, S] scores). The two parts share one softmax through their
  # maxima and sums instead of a concatenation.
  qm = qg.transpose(1, 0, 2, 3, 4).reshape(kh, b * g * l, h)  # [K, M, H]
  shared = jnp.einsum("kmh,khs->kms", qm, pk[0], preferred_element_type=jnp.float32)
  shared_mask = make_mask(positions, segment_ids, jnp.broadcast_to(ppos, (b, s)),
                          jnp.broadcast_to(pseg, (b, s)), window)  # [B, L, S]
  shared_mask = jnp.broadcast_to(shared_mask[:, None], (b, g, l, s)).reshape(1, b * g * l, s)
  shared = _masked_scores(shared, shared_mask, logit_softcap)
  own = jnp.einsum("bkglh,bkhs->bkgls" if keys_transposed else "bkglh,bksh->bkgls", qg, k,
                   preferred_element_type=jnp.float32)
  own_mask = make_mask(positions, segment_ids, k_positions, k_segment_ids, window)  # [B, L, S']
  own = _masked_scores(own, own_mask[:, None, None], logit_softcap)

  def to_rows(x):  # [K, M, ...] -> [B, K, G, L, ...]
    return x.reshape(kh, b, g, l, *x.shape[2:]).transpose(1, 0, 2, 3, *range(4, x.ndim + 2))

  def to_heads(x):  # [B, K, G, L] -> [K, M]
    return x.transpose(1, 0, 2, 3).reshape(kh, b * g * l)

  top = jnp.maximum(to_rows(jnp.max(shared, axis=-1)), jnp.max(own, axis=-1))  # [B, K, G, L]
  shared_e = jnp.exp(shared - to_heads(top)[..., None])  # [K, M, S]
  own_e = jnp.exp(own - top[..., None])  # [B, K, G, L, S']
  total = to_rows(jnp.sum(shared_e, axis=-1)) + jnp.sum(own_e, axis=-1)  # [B, K, G, L]
  out = (to_rows(jnp.einsum("kms,ksh->kmh", shared_e.astype(v.dtype), pv[0],
                            preferred_element_type=jnp.float32))
         + jnp.einsum("bkgls,bksh->bkglh", own_e.astype(v.dtype), v,
                      preferred_element_type=jnp.float32))  # [B, K, G, L, H]
  out = (out / total[..., None]).astype(v.dtype)
  return out.transpose(0, 3, 1, 2, 4).reshape(b, l, n, h)
