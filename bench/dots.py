"""The three matmuls of one weight in a train step, float32 against bfloat16, on this machine.

    python bench/dots.py [--tokens 1024] [--dims 640x2048,640x65536] [--reps 5]

A weight W [D, F] applied to activations x [T, D] costs three matmuls per step: the forward
x @ W ([T, D] x [D, F]), the input gradient g @ W^T ([T, F] x [F, D]) and the weight
gradient x^T @ g ([D, T] x [T, F]: both operands contract over their token dimension).
Each is timed as a jitted `jnp.einsum` on operands of the given dtype, accumulated in
float32, and reported in GFLOP/s. The weight gradient is timed twice: as autodiff writes it
(both operands contract over their leading, token dimension: XLA:CPU upcasts bfloat16 to
float32 for it) and from x^T already written out row-major (`weight_grad_from_xt`, what
`icl_ft.model.layers.einsum` does on one CPU device). The defaults are the Gemma 3 270M's
shapes at batch 8 x 128: an MLP projection (640 x 2048) and a slice of the tied output
projection (640 x 65536, a quarter of its vocabulary).
"""

from __future__ import annotations

import argparse
import json

import _common  # pylint: disable=g-bad-import-order

import jax  # pylint: disable=wrong-import-order
import jax.numpy as jnp  # pylint: disable=wrong-import-order

# name -> (einsum, operand shapes as functions of T, D, F)
DOTS = {
    "forward": ("td,df->tf", lambda t, d, f: ((t, d), (d, f))),
    "input_grad": ("tf,df->td", lambda t, d, f: ((t, f), (d, f))),
    "weight_grad": ("td,tf->df", lambda t, d, f: ((t, d), (t, f))),
    "weight_grad_from_xt": ("dt,tf->df", lambda t, d, f: ((d, t), (t, f))),
}


def rate(spec: str, shapes, flops: int, dtype, reps: int) -> float:
  """GFLOP/s of one jitted einsum on ones of `shapes` in `dtype` (median of `reps` calls after
  a compiling one)."""
  a, b = (jnp.ones(s, dtype) for s in shapes)
  fn = jax.jit(lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=jnp.float32))
  times = _common.interleaved({"dot": lambda: fn(a, b).block_until_ready()}, reps)["dot"]
  return flops / _common.median(times) / 1e9


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tokens", type=int, default=1024)
  parser.add_argument("--dims", default="640x2048,640x65536", help="comma-separated DxF")
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  out: dict = {"tokens": args.tokens, "load_before": _common.load_average(), "gflops": {}}
  for dims in args.dims.split(","):
    d, f = (int(x) for x in dims.split("x"))
    for name, (spec, shapes) in DOTS.items():
      for dtype in (jnp.float32, jnp.bfloat16):
        key = f"{dims}/{name}/{jnp.dtype(dtype).name}"
        flops = 2 * args.tokens * d * f
        out["gflops"][key] = round(rate(spec, shapes(args.tokens, d, f), flops, dtype,
                                        args.reps), 1)
        print(f"{key}: {out['gflops'][key]} GFLOP/s", flush=True)
  out["load_after"] = _common.load_average()
  print(json.dumps(out))


if __name__ == "__main__":
  main()
