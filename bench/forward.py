"""Forward scoring throughput: our jitted forward vs Hugging Face PyTorch Gemma (no grad).

    python bench/forward.py [--sizes small,medium] [--reps 7] [--calls 3] [--hf_attn sdpa]

Same sizes and batch as bench/train.py (bench/_common.py; batch 16 x seq 256, float32, same
weights on both sides). One call scores a batch the way the evaluation does: the model's
logits, log-softmax, the log-prob of each next token, summed per row (returned to the host).
Ours: `model.hidden` + `model.target_logprobs` under `jax.jit` (the graphdef static; the
log-normalizer over vocabulary chunks, as `icl_ft.inference.scoring` does on one device);
HF: `model(input_ids).logits` under `torch.inference_mode()`. The sides alternate repetition
by repetition (`--calls` calls each); medians. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import _common  # pylint: disable=g-bad-import-order

import jax  # pylint: disable=g-bad-import-order,wrong-import-order
import jax.numpy as jnp  # pylint: disable=wrong-import-order
import numpy as np  # pylint: disable=wrong-import-order
from flax import nnx  # pylint: disable=wrong-import-order

from icl_ft.inference import scoring  # pylint: disable=wrong-import-order
from icl_ft.model.transformer import Transformer  # pylint: disable=wrong-import-order


def ours(model, tokens: np.ndarray, calls: int):
  """A closure scoring the batch `calls` times with our model (host result)."""
  graphdef, state = nnx.split(model)
  b, l = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
  segment_ids = jnp.ones((b, l), jnp.int32)
  toks = jnp.asarray(tokens)

  @jax.jit
  def score(state, toks):
    model = nnx.merge(graphdef, state)
    x, _ = model.hidden(toks, positions, segment_ids)  # [B, L, D]
    # As the evaluation's scorer does on one device: the logits in vocabulary chunks.
    return model.target_logprobs(x[:, :-1], toks[:, 1:], scoring.VOCAB_CHUNK).sum(-1)  # [B]

  def run():
    out = None
    for _ in range(calls):
      out = np.asarray(score(state, toks))
    return out

  return run


def hf(model, tokens: np.ndarray, calls: int, attn: str):
  """A closure scoring the batch `calls` times with the Hugging Face twin."""
  return hf_net(_common.hf_twin(model, attn).eval(), tokens, calls)


def hf_net(net, tokens: np.ndarray, calls: int):
  """A closure scoring the batch `calls` times with the Hugging Face model `net`."""
  import torch  # pylint: disable=g-import-not-at-top

  toks = torch.from_numpy(tokens.astype(np.int64))

  def run():
    out = None
    with torch.inference_mode():
      for _ in range(calls):
        logits = net(input_ids=toks, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        out = logp.gather(-1, toks[:, 1:, None])[..., 0].sum(-1).numpy()
    return out

  return run


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default="small,medium")
  parser.add_argument("--family", default="gemma1")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--reps", type=int, default=7)
  parser.add_argument("--calls", type=int, default=3, help="forward calls per repetition")
  parser.add_argument("--hf_attn", default="sdpa", help="HF attention: sdpa (default) or eager")
  args = parser.parse_args()

  out = {"device": jax.devices()[0].platform, "batch": args.batch, "seq": args.seq,
         "hf_attn": args.hf_attn, "family": args.family, "load_before": _common.load_average()}
  tokens_per_call = args.batch * args.seq
  for size in args.sizes.split(","):
    cfg = _common.model_config(size, args.family)
    model = Transformer(cfg, rngs=nnx.Rngs(params=0))
    tokens = np.random.default_rng(0).integers(1, cfg.vocab_size,
                                               size=(args.batch, args.seq)).astype(np.int32)
    ours_run, hf_run = ours(model, tokens, args.calls), hf(model, tokens, args.calls, args.hf_attn)
    diff = float(np.max(np.abs(ours_run() - hf_run())))
    times = _common.interleaved({"ours": ours_run, "hf": hf_run}, args.reps)
    ours_s = _common.median(times["ours"]) / args.calls
    hf_s = _common.median(times["hf"]) / args.calls
    res = {"ours_tokens_per_s": round(tokens_per_call / ours_s),
           "hf_tokens_per_s": round(tokens_per_call / hf_s),
           "ratio_vs_hf": round(hf_s / ours_s, 3), "ours_ms": round(1e3 * ours_s, 2),
           "hf_ms": round(1e3 * hf_s, 2), "max_abs_row_logprob_diff": diff}
    out[size] = res
    print(f"{size}: {json.dumps(res)}", flush=True)
  out["load_after"] = _common.load_average()
  for size in ("small", "medium"):
    if size in out:
      out[f"fwd_ratio_vs_hf_{size}"] = out[size]["ratio_vs_hf"]
  print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
  main()
