"""Train-step throughput: our jitted step (icl_ft.train.step) vs Hugging Face PyTorch Gemma.

    python bench/train.py [--sizes small,medium] [--reps 5] [--steps 0] [--hf_attn sdpa]

Sizes in bench/_common.py (the issue's: 2 x D128 and 4 x D256, MLP 4D, 4 heads, multi-query,
vocab 2048), batch 16 x seq 256, float32 on both sides, AdamW on both sides (ours: the
project's `make_optimizer` + `TrainStep`, params and optimizer state donated; HF:
`torch.optim.AdamW`, forward + cross-entropy + backward + step, PyTorch eager). One
repetition = `--steps` steps of one side (default 3 at small, 1 at medium); the sides alternate repetition by repetition and
the median seconds per step is reported, so both see the same machine load. At `medium` a
float32 [N, N] @ [N, N] `jnp.dot` is timed in the same rotation (the measured matmul peak)
and the step's matmul FLOPs (6 x forward matmul FLOPs per token, attention counted causal)
give the fraction of peak. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import _common  # pylint: disable=g-bad-import-order

import jax  # pylint: disable=g-bad-import-order,wrong-import-order
import jax.numpy as jnp  # pylint: disable=wrong-import-order
import numpy as np  # pylint: disable=wrong-import-order
from flax import nnx  # pylint: disable=wrong-import-order

from icl_ft import sharding  # pylint: disable=wrong-import-order
from icl_ft.config import schema  # pylint: disable=wrong-import-order
from icl_ft.model import builder  # pylint: disable=wrong-import-order
from icl_ft.model.transformer import Transformer  # pylint: disable=wrong-import-order
from icl_ft.train import optimizer as optimizer_lib  # pylint: disable=wrong-import-order
from icl_ft.train import step as step_lib  # pylint: disable=wrong-import-order


def batch_arrays(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Full rows: one segment each, positions 0..L-1, loss on every position but the last."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, vocab, size=(batch, seq)).astype(np.int32)
  positions = np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy()
  segment_ids = np.ones((batch, seq), np.int32)
  loss_mask = np.ones((batch, seq), np.int32)
  loss_mask[:, -1] = 0
  return {"tokens": tokens, "positions": positions, "segment_ids": segment_ids,
          "loss_mask": loss_mask}


def ours(cfg, batch: dict[str, np.ndarray], steps: int, model=None):
  """A closure running `steps` of our train step (blocks on the last step's loss); `model`
  (default: a fresh one of `cfg`) is trained in place of a fresh init."""
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  model = builder.fresh(cfg, mesh, seed=0) if model is None else model
  opt_cfg = schema.OptimizerConfig(learning_rate=3e-4, schedule="constant", warmup_steps=0,
                                   weight_decay=0.0, clip_norm=0.0)
  tx, _ = optimizer_lib.make_optimizer(opt_cfg, 1000)
  graphdef, params_state, rest = step_lib.split_model(model)
  params = nnx.to_pure_dict(params_state)
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          params)
  _, opt_shardings = step_lib.opt_state_shardings(tx, abstract, param_shardings, mesh)
  stepper = step_lib.TrainStep(graphdef=graphdef, rest=rest, tx=tx,
                               param_shardings=param_shardings, opt_shardings=opt_shardings,
                               mesh=mesh)
  state = {"params": params, "opt": jax.jit(tx.init, out_shardings=opt_shardings)(params)}
  data = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()},
                        sharding.data_sharding(mesh))

  def run():
    metrics = None
    for _ in range(steps):
      state["params"], state["opt"], metrics = stepper.train(state["params"], state["opt"], data,
                                                             3e-4)
    return float(metrics["loss"])

  return run, stepper


def hf(cfg, batch: dict[str, np.ndarray], steps: int, attn: str):
  """A closure running `steps` Hugging Face train steps (PyTorch eager, AdamW)."""
  model = Transformer(cfg, rngs=nnx.Rngs(params=0))
  return hf_net(_common.hf_twin(model, attn), batch, steps)


def hf_net(net, batch: dict[str, np.ndarray], steps: int, bf16: bool = False):
  """A closure running `steps` train steps of the Hugging Face model `net` (AdamW); `bf16`:
  forward and loss under `torch.autocast` to bfloat16 (float32 weights and optimizer)."""
  import torch  # pylint: disable=g-import-not-at-top

  net.train()
  opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=0.0)
  tokens = torch.from_numpy(batch["tokens"].astype(np.int64))
  targets = torch.cat([tokens[:, 1:], torch.zeros_like(tokens[:, :1])], dim=1)
  mask = torch.from_numpy(batch["loss_mask"].astype(np.float32))

  def run():
    loss = None
    for _ in range(steps):
      opt.zero_grad(set_to_none=True)
      with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = net(input_ids=tokens, use_cache=False).logits  # [B, L, V]
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                               reduction="none")
        loss = (ce * mask.flatten()).sum() / mask.sum()
      loss.backward()
      opt.step()
    return float(loss.detach())

  return run


def peak(n: int):
  """A closure timing one float32 [n, n] @ [n, n] jnp.dot; its FLOPs."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  return (lambda: dot(a, b).block_until_ready()), 2.0 * n ** 3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default="small,medium")
  parser.add_argument("--family", default="gemma1")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--steps", type=int, default=0,
                      help="train steps per repetition (0: 3 at small, 1 at medium)")
  parser.add_argument("--hf_attn", default="sdpa", help="HF attention: sdpa (default) or eager")
  parser.add_argument("--peak_n", type=int, default=2048)
  args = parser.parse_args()

  import torch  # pylint: disable=g-import-not-at-top

  out = {"device": jax.devices()[0].platform, "torch_threads": torch.get_num_threads(),
         "batch": args.batch, "seq": args.seq, "hf_attn": args.hf_attn, "family": args.family,
         "load_before": _common.load_average()}
  tokens_per_step = args.batch * args.seq
  for size in args.sizes.split(","):
    cfg = _common.model_config(size, args.family)
    batch = batch_arrays(args.batch, args.seq, cfg.vocab_size)
    steps = args.steps or (3 if size == "small" else 1)
    ours_run, stepper = ours(cfg, batch, steps)
    fns = {"ours": ours_run, "hf": hf(cfg, batch, steps, args.hf_attn)}
    if size == "medium":
      peak_fn, peak_flops = peak(args.peak_n)
      fns["peak"] = peak_fn
    times = _common.interleaved(fns, args.reps)
    ours_s = _common.median(times["ours"]) / steps
    hf_s = _common.median(times["hf"]) / steps
    res = {"ours_tokens_per_s": round(tokens_per_step / ours_s),
           "hf_tokens_per_s": round(tokens_per_step / hf_s),
           "ratio_vs_hf": round(hf_s / ours_s, 3),
           "ours_ms_per_step": round(1e3 * ours_s, 2), "hf_ms_per_step": round(1e3 * hf_s, 2),
           "compiles": stepper.cache_size()}
    step_flops = 3 * _common.matmul_flops_per_token(cfg, args.seq) * tokens_per_step
    res["step_gflops"] = round(step_flops / 1e9, 3)
    res["ours_gflop_per_s"] = round(step_flops / ours_s / 1e9, 1)
    if "peak" in times:
      peak_s = _common.median(times["peak"])
      res["peak_gflop_per_s"] = round(peak_flops / peak_s / 1e9, 1)
      res["peak_gflop_per_s_best"] = round(peak_flops / min(times["peak"]) / 1e9, 1)
      res["peak_fraction"] = round(step_flops / ours_s / (peak_flops / peak_s), 3)
    out[size] = res
    print(f"{size}: {json.dumps(res)}", flush=True)
  out["load_after"] = _common.load_average()
  for size in ("small", "medium"):
    if size in out:
      out[f"train_ratio_vs_hf_{size}"] = out[size]["ratio_vs_hf"]
  if "medium" in out:
    out["train_peak_fraction_medium"] = out["medium"].get("peak_fraction")
  print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
  main()
