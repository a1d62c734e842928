"""Where a train step's time goes: each piece jitted alone, forward + backward, timed.

    python bench/profile_step.py [--size medium] [--reps 5]   # --size small,medium: both

Pieces, at the size and batch of bench/train.py (each a `jax.value_and_grad` of a scalar
over that piece's inputs and parameters, so forward and backward are both counted):
`attention` (one layer's pre-norm + q/k/v/o projections + RoPE + masked softmax attention),
`mlp` (one layer's pre-norm + GeGLU MLP), `head` (final norm + tied output logits +
cross-entropy), `model_fwd` (the whole model's logits, forward only), `loss_grad` (the whole
loss and gradients) and `step` (the whole train step with AdamW, as bench/train.py). Times
alternate piece by piece each repetition (medians); the per-layer pieces are multiplied by
the number of layers in `sum_of_pieces`.

`matmul_floor`: every weight matmul of the step (each layer's q/k/v/o projections and
gate/up/down, and the tied output projection; forward, input gradient and weight gradient of
each) timed alone as one jitted float32 `lax.dot_general` of its shape and contraction, and
summed: the time the step would take if it did nothing but those matmuls, one after the
other at their standalone speed. `matmul_floor_torch_ms`: the same matmuls in PyTorch
(`a @ b`, `a @ b.T`, `a.T @ b`), each shape timed right after ours.

`train_floor_ratio_<size>` = `step_ms` / `floor_ms`, where `floor_ms` = `matmul_floor_ms` +
layers x `attention_core_ms` (one layer's blocked attention core, forward + backward, as
bench/attention.py times it, here in its own loop): how far the whole step is from its
matmuls and attention core run back to back. The last line is one JSON object: per size
its figures, and the ratios at top level.
"""

from __future__ import annotations

import argparse
import json

import _common  # pylint: disable=g-bad-import-order

import jax  # pylint: disable=g-bad-import-order,wrong-import-order
import jax.numpy as jnp  # pylint: disable=wrong-import-order
import numpy as np  # pylint: disable=wrong-import-order
from flax import nnx  # pylint: disable=wrong-import-order

import attention as attention_bench  # pylint: disable=wrong-import-order
import train as train_bench  # pylint: disable=wrong-import-order
from icl_ft.model.transformer import Transformer  # pylint: disable=wrong-import-order
from icl_ft.pipeline import loader as data_loader  # pylint: disable=wrong-import-order
from icl_ft.train import step as step_lib  # pylint: disable=wrong-import-order


def matmul_floor(cfg, tokens: int, reps: int) -> dict[str, float]:
  """Summed standalone times of the step's weight matmuls, forward and both gradients."""
  dims = {"forward": (((1,), (0,)), ((), ())),      # x [M, K] @ w [K, N]
          "input_grad": (((1,), (1,)), ((), ())),   # dy [M, N] @ w[K, N]^T
          "weight_grad": (((0,), (0,)), ((), ()))}  # x[M, K]^T @ dy [M, N]
  import torch  # pylint: disable=g-import-not-at-top

  torch_ops = {"forward": lambda a, b: a @ b, "input_grad": lambda a, b: a @ b.T,
               "weight_grad": lambda a, b: a.T @ b}
  cache: dict = {}
  total = {"ours": 0.0, "torch": 0.0}
  flops = 0.0
  for m, k, n in _common.weight_matmuls(cfg, tokens):
    for kind, shapes in (("forward", ((m, k), (k, n))), ("input_grad", ((m, n), (k, n))),
                         ("weight_grad", ((m, k), (m, n)))):
      key = (kind, shapes)
      if key not in cache:
        a = jax.random.normal(jax.random.key(0), shapes[0], jnp.float32)
        b = jax.random.normal(jax.random.key(1), shapes[1], jnp.float32)
        ta, tb = torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b))
        dot = jax.jit(lambda a, b, dn=dims[kind]: jax.lax.dot_general(a, b, dn))
        # One side at a time: torch's OpenMP threads spin after each call, and interleaving
        # would charge that to the next XLA call.
        cache[key] = {
            "ours": _common.median(_common.interleaved(
                {"ours": lambda: dot(a, b).block_until_ready()}, reps)["ours"]),
            "torch": _common.median(_common.interleaved(
                {"torch": lambda: torch_ops[kind](ta, tb)}, reps)["torch"])}
      for side in total:
        total[side] += cache[key][side]
      flops += 2.0 * m * k * n
  return {"matmul_floor_ms": round(1e3 * total["ours"], 2),
          "matmul_floor_torch_ms": round(1e3 * total["torch"], 2),
          "matmul_floor_gflop": round(flops / 1e9, 3),
          "matmul_floor_gflop_per_s": round(flops / total["ours"] / 1e9, 1)}


def profile(size: str, args) -> dict:
  """The pieces, the whole step, the matmul floor and the train-floor ratio at one size."""
  cfg = _common.model_config(size, args.family)
  model = Transformer(cfg, rngs=nnx.Rngs(params=0))
  batch = {k: jnp.asarray(v) for k, v in
           train_bench.batch_arrays(args.batch, args.seq, cfg.vocab_size).items()}
  tok, pos, seg, lmask = (batch[k] for k in data_loader.BATCH_KEYS)
  x = jax.random.normal(jax.random.key(0), (args.batch, args.seq, cfg.embed_dim), jnp.float32)
  block = model.layers[0]

  def timed_grad(fn, module):
    """value_and_grad of sum(fn(module, x)) w.r.t. (module params, x), jitted."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    @jax.jit
    def run(params, x):
      def loss(params, x):
        return jnp.sum(fn(nnx.merge(graphdef, params, rest), x))
      return jax.value_and_grad(loss, argnums=(0, 1))(params, x)

    return lambda: jax.block_until_ready(run(params, x))

  def attention(blk, x):
    h = blk.pre_attention_norm(x)
    return blk.attend(h, pos, seg, pos, seg, None, None, rope=model.rope_tables(pos))[0]

  def mlp(blk, x):
    return blk.mlp(blk.pre_ffw_norm(x))

  def head(m, x):
    logits = m.embedder.decode(m.final_norm(x))
    return step_lib.masked_cross_entropy(logits, tok, lmask)["loss_sum"]

  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda state: nnx.merge(graphdef, state)(tok, pos, seg)[0])

  def loss_fn(state):
    logits = nnx.merge(graphdef, state)(tok, pos, seg)[0]
    return step_lib.masked_cross_entropy(logits, tok, lmask)["loss_sum"]

  grad = jax.jit(jax.value_and_grad(loss_fn))
  step_run, _ = train_bench.ours(cfg, train_bench.batch_arrays(args.batch, args.seq,
                                                               cfg.vocab_size), 1)
  fns = {"attention": timed_grad(attention, block), "mlp": timed_grad(mlp, block),
         "head": timed_grad(head, model),
         "model_fwd": lambda: jax.block_until_ready(fwd(state)),
         "loss_grad": lambda: jax.block_until_ready(grad(state)), "step": step_run}
  load = _common.load_average()
  times = _common.interleaved(fns, args.reps)
  ms = {k: round(1e3 * _common.median(v), 2) for k, v in times.items()}
  ms["sum_of_pieces"] = round(cfg.num_layers * (ms["attention"] + ms["mlp"]) + ms["head"], 2)
  print(f"== {size}")
  for k in ("attention", "mlp"):
    print(f"{k:>10}: {ms[k]:8.2f} ms per layer x {cfg.num_layers} = "
          f"{cfg.num_layers * ms[k] / ms['step']:.0%} of the step")
  print(f"{'head':>10}: {ms['head']:8.2f} ms = {ms['head'] / ms['step']:.0%} of the step")
  for k in ("model_fwd", "loss_grad", "step", "sum_of_pieces"):
    print(f"{k:>10}: {ms[k]:8.2f} ms")
  reps = max(3, args.reps)
  floor = matmul_floor(cfg, args.batch * args.seq, reps)
  print(f"matmul floor (weight matmuls alone, summed): {floor['matmul_floor_ms']:.2f} ms "
        f"({floor['matmul_floor_gflop_per_s']} GFLOP/s) = "
        f"{floor['matmul_floor_ms'] / ms['step']:.0%} of the step; the same matmuls in PyTorch: "
        f"{floor['matmul_floor_torch_ms']:.2f} ms")
  # The blocked attention core of one layer (bench/attention.py's), in its own loop like the
  # matmuls: the step's floor is those matmuls plus this core in every layer.
  core = attention_bench.core_grad(args.batch, args.seq, cfg.num_heads, cfg.num_kv_heads,
                                   cfg.head_dim)
  core_ms = 1e3 * _common.median(_common.interleaved({"core": core}, reps)["core"])
  floor_ms = floor["matmul_floor_ms"] + cfg.num_layers * core_ms
  ratio = ms["step"] / floor_ms
  print(f"train floor: {floor['matmul_floor_ms']:.2f} ms matmuls + {cfg.num_layers} x "
        f"{core_ms:.2f} ms attention core = {floor_ms:.2f} ms; step {ms['step']:.2f} ms -> "
        f"{ratio:.3f}x the floor")
  return {"size": size, "ms": ms, "load": load, **floor,
          "attention_core_ms": round(core_ms, 2), "floor_ms": round(floor_ms, 2),
          "step_ms": ms["step"], "train_floor_ratio": round(ratio, 3)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", default="medium", help="comma-separated sizes (bench/_common.py)")
  parser.add_argument("--family", default="gemma1")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--reps", type=int, default=5)
  args = parser.parse_args()
  out = {"family": args.family, "load_before": _common.load_average()}
  for size in args.size.split(","):
    out[size] = profile(size, args)
    out[f"train_floor_ratio_{size}"] = out[size]["train_floor_ratio"]
  out["load_after"] = _common.load_average()
  print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
  np.set_printoptions(precision=3)
  main()
