"""Blocked vs dense self-attention core, forward + backward, on this machine's backend.

    python bench/attention.py [--shapes 16x256x4x1x32,8x512x4x2x32] [--reps 7]

A shape is B x L x N x K x H (batch, length, query heads, kv heads, head dim); full causal
rows, one segment each. `dense` is `attention.dot_product_attention` with the whole [L, L]
mask, `blocked` is `attention.self_attention` with `block_size(L)` (what the model uses on
CPU). Each is `jax.value_and_grad` of sum(out ** 2) w.r.t. q, k, v, jitted; the two alternate
repetition by repetition (medians). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import _common  # pylint: disable=g-bad-import-order

import jax  # pylint: disable=g-bad-import-order,wrong-import-order
import jax.numpy as jnp  # pylint: disable=wrong-import-order
import numpy as np  # pylint: disable=wrong-import-order

from icl_ft.model import attention  # pylint: disable=wrong-import-order


def core_inputs(b: int, l: int, n: int, k: int, h: int):
  """(q [B, L, N, H], k, v [B, K, L, H], positions, segment_ids [B, L]): full causal rows."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(b, l, n, h)), jnp.float32)
  kv = [jnp.asarray(rng.normal(size=(b, k, l, h)), jnp.float32) for _ in range(2)]
  pos = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
  seg = jnp.ones((b, l), jnp.int32)
  return q, kv[0], kv[1], pos, seg


def forms(pos: jax.Array, seg: jax.Array) -> dict:
  """name -> attention core f(q, k, v): `dense` (whole [L, L] mask) and `blocked` (the model's)."""
  l = pos.shape[1]
  return {
      "dense": lambda q, k, v: attention.dot_product_attention(
          q, k, v, attention.make_mask(pos, seg, pos, seg)),
      "blocked": lambda q, k, v: attention.self_attention(
          q, k, v, pos, seg, block=attention.block_size(l)),
  }


def core_grad(b: int, l: int, n: int, k: int, h: int, form: str = "blocked"):
  """A closure running one jitted forward + backward of the `form` core at B x L x N x K x H
  (`jax.value_and_grad` of sum(out ** 2) w.r.t. q, k, v; blocks until done)."""
  q, kk, v, pos, seg = core_inputs(b, l, n, k, h)
  f = forms(pos, seg)[form]
  grad = jax.jit(jax.value_and_grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2)))
  return lambda: jax.block_until_ready(grad(q, kk, v))


def measure(b: int, l: int, n: int, k: int, h: int, reps: int) -> dict[str, float]:
  """Milliseconds per forward + backward of each form, and their largest output difference."""
  q, kk, v, pos, seg = core_inputs(b, l, n, k, h)
  fs = forms(pos, seg)
  times = _common.interleaved(
      {name: core_grad(b, l, n, k, h, name) for name in fs}, reps)
  dense, blocked = (jax.jit(fs[name])(q, kk, v) for name in ("dense", "blocked"))
  ms = {name: round(1e3 * _common.median(t), 2) for name, t in times.items()}
  return {"dense_ms": ms["dense"], "blocked_ms": ms["blocked"],
          "speedup": round(ms["dense"] / ms["blocked"], 2), "block": attention.block_size(l),
          "max_abs_diff": float(jnp.max(jnp.abs(dense - blocked)))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--shapes", default="16x256x4x1x32,16x256x4x1x64,8x512x4x2x32")
  parser.add_argument("--reps", type=int, default=7)
  args = parser.parse_args()
  results = {}
  for shape in args.shapes.split(","):
    dims = [int(x) for x in shape.split("x")]
    results[shape] = r = measure(*dims, reps=args.reps)
    print(f"{shape:>16}: dense {r['dense_ms']:8.2f} ms  blocked {r['blocked_ms']:8.2f} ms "
          f"(block {r['block']})  {r['speedup']:.2f}x  max |diff| {r['max_abs_diff']:.1e}")
  print(json.dumps({"backend": jax.default_backend(), "load": _common.load_average(),
                    "results": results}, sort_keys=True))


if __name__ == "__main__":
  main()
