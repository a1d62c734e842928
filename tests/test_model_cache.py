"""KV cache: prefill + decode equals the full forward; one prefix scored with many suffixes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_testing as mt
from icl_ft.model import attention

# Gemma 2 (GQA, soft caps, local/global) and Gemma 3 with one kv head (multi-query, QK-norm);
# Gemma 1 adds nothing the cache path does not see here.
CASES = [("tiny_gemma2", {}), ("tiny_gemma3", {"num_kv_heads": 1})]
IDS = ["tiny_gemma2", "tiny_gemma3_mqa"]
TOL = dict(rtol=1e-5, atol=1e-5)


def _forward(model):
  return jax.jit(lambda t, p, s: model(t, p, s)[0])


def _cached(model):
  return jax.jit(lambda t, p, s, c: model(t, p, s, cache=c))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_prefill_then_decode_matches_full_forward(case):
  model = mt.make_model(case[0], seed=4, **case[1])
  cfg = model.config
  rng = np.random.default_rng(0)
  prompt_len, steps = 20, 30                       # 50 tokens > window 32
  total = prompt_len + steps
  raw = mt.random_tokens(rng, 2, total, cfg.vocab_size)
  # Row 0: a full 20-token prompt; row 1: 13 tokens, left-padded to 20.
  toks, pos, seg = mt.padded_inputs(raw[:, :prompt_len], [20, 13], left=True)
  dec_toks = raw[:, prompt_len:]
  dec_pos = pos[:, -1:] + 1 + np.arange(steps)[None]
  full_toks = np.concatenate([toks, dec_toks], 1)
  full_pos = np.concatenate([pos, dec_pos], 1).astype(np.int32)
  full_seg = np.concatenate([seg, np.ones_like(dec_toks)], 1)
  full = np.asarray(_forward(model)(full_toks, full_pos, full_seg))

  step = _cached(model)
  cache = model.init_cache(2, 64)
  # Prefill in two chunks of 10, then decode one token at a time.
  first, cache = step(toks[:, :10], pos[:, :10], seg[:, :10], cache)
  assert int(cache.end_index) == 10
  second, cache = step(toks[:, 10:], pos[:, 10:], seg[:, 10:], cache)
  logits = np.concatenate([np.asarray(first), np.asarray(second)], 1)
  real = seg.astype(bool)
  np.testing.assert_allclose(logits[real], full[:, :prompt_len][real], **TOL)
  assert int(cache.end_index) == prompt_len
  for t in range(steps):
    sl = slice(t, t + 1)
    logits, cache = step(dec_toks[:, sl], dec_pos[:, sl].astype(np.int32),
                         np.ones((2, 1), np.int32), cache)
    np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, prompt_len + t], **TOL)
  assert int(cache.end_index) == total
  if hasattr(step, "_cache_size"):                  # private JAX API: best effort
    assert step._cache_size() == 2                  # prefill chunk shape + decode shape


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_logits_at_one_position_per_row(case):
  model = mt.make_model(case[0], seed=5, **case[1])
  rng = np.random.default_rng(1)
  toks, pos, seg = mt.padded_inputs(mt.random_tokens(rng, 3, 12, model.config.vocab_size),
                                    [12, 7, 3], left=False)
  full = np.asarray(_forward(model)(toks, pos, seg))  # [3, 12, V]
  at = np.array([11, 6, 2], np.int32)  # each row's last real token
  only = jax.jit(lambda t, p, s, a: model(t, p, s, logits_at=a)[0])(toks, pos, seg, at)
  assert only.shape == (3, 1, model.config.vocab_size)
  np.testing.assert_allclose(np.asarray(only)[:, 0], full[np.arange(3), at], **TOL)
  # With a cache: the cache is written for every position, the logits only at `at`.
  cache = model.init_cache(3, 16)
  last, cache = jax.jit(lambda t, p, s, c, a: model(t, p, s, cache=c, logits_at=a))(
      toks, pos, seg, cache, at)
  np.testing.assert_allclose(np.asarray(last)[:, 0], full[np.arange(3), at], **TOL)
  assert int(cache.end_index) == 12


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_repeat_cache_scores_continuations(case):
  model = mt.make_model(case[0], seed=6, **case[1])
  cfg = model.config
  rng = np.random.default_rng(2)
  prefix_len, cont_lens = 37, [12, 5, 1]           # prefix longer than the window
  width = max(cont_lens)
  prefix = mt.random_tokens(rng, 1, prefix_len, cfg.vocab_size)
  conts = mt.random_tokens(rng, len(cont_lens), width, cfg.vocab_size)

  cache = model.init_cache(1, prefix_len + width)
  step = _cached(model)
  prefix_logits, cache = step(prefix, np.arange(prefix_len, dtype=np.int32)[None],
                              np.ones((1, prefix_len), np.int32), cache)
  shared = cache  # batch 1, with `width` empty slots after the prefix
  cache = attention.repeat_cache(cache, len(cont_lens))
  assert cache.batch_size == len(cont_lens) and cache.k[0].shape[0] == len(cont_lens)
  c_toks, c_pos, c_seg = mt.padded_inputs(conts, cont_lens)
  c_pos = np.where(c_seg == 1, c_pos + prefix_len, 0).astype(np.int32)
  logits, _ = step(c_toks, c_pos, c_seg, cache)
  logits = np.asarray(logits)
  assert np.all(np.isfinite(logits))

  # Reference: prefix + continuation as one sequence per row (right-padded to one width,
  # which the masks make equivalent to running each alone; see test_model_packing).
  seqs = np.concatenate([np.repeat(prefix, len(cont_lens), 0), c_toks], 1)
  pos = np.concatenate([np.broadcast_to(np.arange(prefix_len), (len(cont_lens), prefix_len)),
                        c_pos], 1).astype(np.int32)
  seg = np.concatenate([np.ones((len(cont_lens), prefix_len), np.int32), c_seg], 1)
  ref = np.asarray(_forward(model)(seqs, pos, seg))
  # The same rows against the batch-1 cache as a shared prefix (never repeated).
  prefixed = np.asarray(jax.jit(lambda t, p, s, c: model(t, p, s, prefix=c)[0])(
      c_toks, c_pos, c_seg, shared))
  # The shared prefix plus each row's own cache (a 4-token chunk, then one token at a time).
  own = model.init_cache(len(cont_lens), width)
  decode = jax.jit(lambda t, p, s, c, pre: model(t, p, s, cache=c, prefix=pre))
  pieces = []
  for sl in [slice(0, 4)] + [slice(i, i + 1) for i in range(4, width)]:
    out, own = decode(c_toks[:, sl], c_pos[:, sl], c_seg[:, sl], own, shared)
    pieces.append(np.asarray(out))
  decoded = np.concatenate(pieces, axis=1)
  assert own.max_len == own.v[0].shape[2] == width  # the rows cache only their own tokens
  for b, n in enumerate(cont_lens):
    np.testing.assert_allclose(np.asarray(prefix_logits)[0], ref[b, :prefix_len], **TOL)
    np.testing.assert_allclose(logits[b, :n], ref[b, prefix_len:prefix_len + n], **TOL)
    np.testing.assert_allclose(prefixed[b, :n], ref[b, prefix_len:prefix_len + n], **TOL)
    np.testing.assert_allclose(decoded[b, :n], ref[b, prefix_len:prefix_len + n], **TOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_local_layers_reading_only_the_newest_slots(case):
  """`local_recent`: once a row's own tokens fill the window, local layers read only the
  newest slots of its cache and skip the shared prefix, and the logits stay the full forward's."""
  window = 8
  model = mt.make_model(case[0], seed=8, sliding_window=window, **case[1])
  cfg = model.config
  rng = np.random.default_rng(3)
  prefix_len, own_len = 12, 20
  prefix = mt.random_tokens(rng, 1, prefix_len, cfg.vocab_size)
  own = mt.random_tokens(rng, 2, own_len, cfg.vocab_size)
  shared = model.init_cache(1, prefix_len)
  _, shared = _cached(model)(prefix, np.arange(prefix_len, dtype=np.int32)[None],
                             np.ones((1, prefix_len), np.int32), shared)
  seqs = np.concatenate([np.repeat(prefix, 2, 0), own], 1)
  full_pos = np.broadcast_to(np.arange(prefix_len + own_len, dtype=np.int32), seqs.shape)
  ref = np.asarray(_forward(model)(seqs, full_pos, np.ones(seqs.shape, np.int32)))

  decode = jax.jit(lambda t, p, c, pre, recent: model(
      t, p, jnp.ones_like(t), cache=c, prefix=pre, local_recent=recent), static_argnums=4)
  cache = model.init_cache(2, own_len)
  for i in range(own_len):
    pos = np.full((2, 1), prefix_len + i, np.int32)
    # From own token `window` on, the window reaches only the row's last `window` tokens.
    recent = window if i >= window else None
    if i == 2:  # before that, the prefix is in reach: reading only the newest slots differs
      early, _ = decode(own[:, i:i + 1], pos, cache, shared, window)
      assert np.max(np.abs(np.asarray(early)[:, 0] - ref[:, prefix_len + i])) > 1e-3
    logits, cache = decode(own[:, i:i + 1], pos, cache, shared, recent)
    np.testing.assert_allclose(np.asarray(logits)[:, 0], ref[:, prefix_len + i], **TOL)
  with pytest.raises(ValueError, match="shorter than the window"):
    decode(own[:, :1], pos, model.init_cache(2, own_len), shared, window - 1)


def test_cache_pytree_and_errors():
  model = mt.make_model("tiny_gemma3", seed=7)
  cfg = model.config
  cache = model.init_cache(2, 8)
  leaves = jax.tree.leaves(cache)
  assert len(leaves) == 2 * cfg.num_layers + 3
  assert cache.end_index.shape == () and cache.end_index.dtype == jnp.int32
  assert cache.k[0].shape == (2, cfg.num_kv_heads, cfg.head_dim, 8)  # keys transposed
  assert cache.v[0].shape == (2, cfg.num_kv_heads, 8, cfg.head_dim)
  assert cache.k[0].dtype == jnp.float32 and cache.segment_ids.dtype == jnp.int32
  mapped = jax.tree.map(lambda x: x, cache)
  assert isinstance(mapped, attention.KVCache)
  ones = jnp.ones((2, 6), jnp.int32)
  _, cache = _cached(model)(ones, jnp.broadcast_to(jnp.arange(6), (2, 6)), ones, cache)
  assert int(cache.end_index) == 6
  with pytest.raises(ValueError, match="cache overflow: 6 cached \\+ 3 new tokens > max_len 8"):
    model(ones[:, :3], ones[:, :3], ones[:, :3], cache=cache)
  with pytest.raises(ValueError, match="batch size 1 but the cache has 2"):
    model(ones[:1, :1], ones[:1, :1], ones[:1, :1], cache=cache)
  with pytest.raises(ValueError, match="shared prefix has batch size 1, got 2"):
    model(ones[:1, :1], ones[:1, :1], ones[:1, :1], prefix=cache)
  assert model.init_cache(1, 4, dtype=jnp.bfloat16).v[0].dtype == jnp.bfloat16
