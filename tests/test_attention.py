"""Blocked self-attention equals dense masked attention on packed, padded rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_ft.model import attention


def _packed_rows(rng, batch: int, length: int):
  """Rows of random segment runs (positions 0, 1, ... per run), padding (segment 0) at both ends."""
  pos = np.zeros((batch, length), np.int32)
  seg = np.zeros((batch, length), np.int32)
  for b in range(batch):
    i = int(rng.integers(0, 6))  # left padding
    s = 1
    while i < length - 3:
      n = int(rng.integers(1, length // 2))
      n = min(n, length - 3 - i)
      pos[b, i:i + n] = np.arange(n)
      seg[b, i:i + n] = s
      i, s = i + n, s + 1
  return pos, seg


@pytest.mark.parametrize("window,softcap", [(None, None), (9, None), (None, 30.0), (40, 50.0)])
def test_blocked_self_attention_equals_dense(window, softcap):
  rng = np.random.default_rng(0)
  b, l, n, k, h = 3, 70, 4, 2, 8
  q, kk, v = (jnp.asarray(rng.normal(size=s).astype(np.float32))
              for s in ((b, l, n, h), (b, k, l, h), (b, k, l, h)))
  pos, seg = _packed_rows(rng, b, l)

  def dense(q, kk, v):
    mask = attention.make_mask(pos, seg, pos, seg, window)
    return attention.dot_product_attention(q, kk, v, mask, logit_softcap=softcap)

  def blocked(block):
    return lambda q, kk, v: attention.self_attention(q, kk, v, pos, seg, window=window,
                                                     logit_softcap=softcap, block=block)

  def loss(f):
    w = jnp.asarray(rng.normal(size=(b, l, n, h)).astype(np.float32))
    valid = jnp.asarray(seg != 0)[:, :, None, None]  # padding queries' outputs are arbitrary
    return jax.jit(jax.grad(lambda *a: jnp.sum(jnp.where(valid, f(*a) * w, 0.0)),
                           argnums=(0, 1, 2)))

  want = np.asarray(jax.jit(dense)(q, kk, v))
  valid = seg != 0
  rng_state = rng.bit_generator.state
  want_grads = loss(dense)(q, kk, v)
  for block in (3, 16, 32, l):
    got = np.asarray(jax.jit(blocked(block))(q, kk, v))
    np.testing.assert_allclose(got[valid], want[valid], rtol=1e-5, atol=1e-5, err_msg=f"{block}")
    rng.bit_generator.state = rng_state  # the same loss weights
    for g, w in zip(loss(blocked(block))(q, kk, v), want_grads):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5,
                                 err_msg=f"gradient, block {block}")


def test_block_size_bounds_the_block_count():
  assert attention.block_size(80) == attention.MIN_BLOCK
  for length in (256, 512, 2048, 8192, 1000):
    blocks = -(-length // attention.block_size(length))
    assert blocks <= attention.MAX_BLOCKS and attention.block_size(length) >= attention.MIN_BLOCK
