"""Decode throughput: icl_ft.inference.sampling (KV cache, compiled while_loop) vs Hugging Face `generate`.

    python bench/sampling.py [--preset tiny] [--batch 32] [--prompt 32] [--new 128] [--reps 3]
                             [--hf_attn sdpa] [--context 0] [--profile 0]

Same model on both sides (a fresh init of the preset, copied into the Hugging Face Gemma class
with the parity-tested conversion, tests/model_testing.py via bench/_common.py), float32, the
same batch of random prompts (`[BOS]` + `--prompt - 1` random ids), greedy, exactly `--new`
new tokens per row (no EOS, no stop strings). HF: `model.generate(..., do_sample=False,
use_cache=True)` under `torch.inference_mode()` (its default dynamic KV cache). Ours:
`Sampler.generate_ids` (prompt prefill + one jitted `lax.while_loop`). One call = prompt
prefill + `--new` decode steps for the whole batch, timed end to end including the host
transfer of the tokens; a warm-up call first (compilation excluded), then `--reps` calls per
side, alternating; medians. Decode tokens/s = batch x new tokens / seconds. Also reports the
fraction of rows whose greedy tokens are identical on both sides. The last line is one JSON
object; `decode_ratio_vs_hf` = HF seconds / our seconds.

`--context N`: every row continues one shared context of `[BOS]` + N - 1 random ids, prefilled
once per side outside the timing (ours: `Sampler.prefill`, attended as a shared prefix; HF: a
`DynamicCache` of the context, deep-copied and repeated to the batch in every call, which is
timed, then `generate` with that cache and `context + prompt` as input ids: its documented
prompt-reuse recipe). The prompts then have `--prompt` random ids each (no BOS).

`--profile K`: after the timing, one more call of ours under the JAX profiler; prints the K
ops with the most time per decode step, each with its shape and the JAX operation it came
from (`_common.op_profile`, `_common.hlo_ops`: XLA dumps the optimized HLO to a temporary
folder), and the total of all ops (the prompt prefill counted in, spread over the steps).
"""

from __future__ import annotations

import argparse
import json

import _common  # pylint: disable=g-bad-import-order

import jax  # pylint: disable=g-bad-import-order,wrong-import-order
import numpy as np  # pylint: disable=wrong-import-order
from flax import nnx  # pylint: disable=wrong-import-order

from icl_ft.inference import sampling  # pylint: disable=wrong-import-order
from icl_ft.model import config as model_config  # pylint: disable=wrong-import-order
from icl_ft.model.transformer import Transformer  # pylint: disable=wrong-import-order


class IdTokenizer:
  """The sampler's tokenizer interface over raw ids (no text: the prompts are ids)."""

  def __init__(self, vocab_size: int):
    self.vocab_size, self.pad_id, self.eos_id, self.bos_id = vocab_size, 0, 1, 2

  def id_to_piece(self, i: int) -> str:
    return f"<{i}>"

  def decode(self, ids) -> str:
    return " ".join(str(i) for i in ids)


def ours(model, prompts: np.ndarray, new: int, context: np.ndarray, max_len: int = 0):
  """A closure generating `new` greedy tokens per row with icl_ft.inference.sampling; [B, new] ids.

  `context`: [BOS] + shared context ids, prefilled once (the prompts then have no BOS), or
  empty: `[BOS]` once and each prompt's first id is its BOS. `max_len`: the sampler's cache
  length (0: the model's maximum sequence length, or what the rows need if longer).
  """
  tok = IdTokenizer(model.config.vocab_size)
  need = max(len(context), 1) + prompts.shape[1] + new  # the prefilled context is >= [BOS]
  sampler = sampling.Sampler(model, tok, batch_size=prompts.shape[0],
                             max_len=max(max_len or model.config.max_seq_len, need))
  params = sampling.SamplingParams(max_new_tokens=new, stop_at_eos=False)
  room = prompts.shape[1] + new
  if len(context):
    context = sampler.prefill(None, context_ids=[int(i) for i in context], room=room)
    rows = [list(p) for p in prompts]
  else:
    context = sampler.prefill(None, room=room)  # [BOS] once, reused per call
    rows = [list(p[1:]) for p in prompts]  # the prompt after BOS

  def run():
    outs = sampler.generate_ids(rows, params, context=context)
    return np.asarray([o.token_ids for o in outs])

  return run


def hf(model, prompts: np.ndarray, new: int, attn: str, context: np.ndarray):
  """A closure generating `new` greedy tokens per row with HF `generate`; [B, new] ids.

  With a `context`, its DynamicCache is prefilled once; each call copies it to the batch.
  """
  return hf_net(_common.hf_twin(model, attn), prompts, new, context)


def hf_net(net, prompts: np.ndarray, new: int, context: np.ndarray):
  """`hf` for the Hugging Face model `net`."""
  import copy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import DynamicCache  # pylint: disable=g-import-not-at-top

  net.eval()
  net.generation_config.eos_token_id = None
  net.generation_config.pad_token_id = 0
  b = prompts.shape[0]
  ctx = torch.from_numpy(context.astype(np.int64))[None]  # [1, C]
  ids = torch.cat([ctx.expand(b, -1), torch.from_numpy(prompts.astype(np.int64))], dim=1)
  mask = torch.ones_like(ids)
  prefilled = None
  if len(context):
    prefilled = DynamicCache(config=net.config)
    with torch.inference_mode():
      net(input_ids=ctx, past_key_values=prefilled, use_cache=True)

  run_cache = net.generation_config.cache_implementation or "dynamic"

  def run():
    with torch.inference_mode():
      kwargs = {}
      if prefilled is not None:
        kwargs["past_key_values"] = copy.deepcopy(prefilled)
        kwargs["past_key_values"].batch_repeat_interleave(b)
      out = net.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                         min_new_tokens=new, do_sample=False, use_cache=True, **kwargs)
    return out[:, ids.shape[1]:].numpy()

  run.cache = run_cache
  return run


def _torch_threads() -> int:
  import torch  # pylint: disable=g-import-not-at-top

  return torch.get_num_threads()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per row, with BOS")
  parser.add_argument("--new", type=int, default=128, help="new tokens per row")
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--hf_attn", default="sdpa", help="HF attention: sdpa (default) or eager")
  parser.add_argument("--context", type=int, default=0,
                      help="shared context tokens before every prompt, with BOS (0: none)")
  parser.add_argument("--profile", type=int, default=0,
                      help="print the K ops with the most time per decode step (0: none)")
  args = parser.parse_args()
  hlo_dir = None
  if args.profile:
    import tempfile  # pylint: disable=g-import-not-at-top
    hlo_dir = tempfile.mkdtemp(prefix="hlo_")
    _common.dump_hlo_to(hlo_dir)

  cfg = model_config.get_preset(args.preset, dtype="float32")
  model = Transformer(cfg, rngs=nnx.Rngs(params=0))
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, cfg.vocab_size, size=(args.batch, args.prompt)).astype(np.int32)
  context = np.zeros((0,), np.int32)
  if args.context:
    context = rng.integers(3, cfg.vocab_size, size=(args.context,)).astype(np.int32)
    context[0] = 2  # BOS
  else:
    prompts[:, 0] = 2  # BOS
  ours_run = ours(model, prompts, args.new, context)
  hf_run = hf(model, prompts, args.new, args.hf_attn, context)
  load_before = _common.load_average()
  a, b = ours_run(), hf_run()  # also the warm-up (compiles ours)
  same_rows = float(np.mean(np.all(a == b, axis=1)))
  same_tokens = float(np.mean(a == b))
  times = _common.interleaved({"ours": ours_run, "hf": hf_run}, args.reps, warmup=0)
  ours_s, hf_s = _common.median(times["ours"]), _common.median(times["hf"])
  new_tokens = args.batch * args.new
  out = {
      "device": jax.devices()[0].platform, "preset": args.preset, "family": cfg.family,
      "batch": args.batch, "prompt_tokens": args.prompt, "new_tokens": args.new,
      "context_tokens": args.context,
      "hf_attn": args.hf_attn, "hf_cache": hf_run.cache, "torch_threads": _torch_threads(),
      "ours_seconds": round(ours_s, 4), "hf_seconds": round(hf_s, 4),
      "ours_decode_tokens_per_s": round(new_tokens / ours_s),
      "hf_decode_tokens_per_s": round(new_tokens / hf_s),
      "greedy_rows_identical": round(same_rows, 4), "greedy_tokens_identical": round(same_tokens, 4),
      "load_before": load_before, "load_after": _common.load_average(),
      "decode_ratio_vs_hf": round(hf_s / ours_s, 3),
  }
  print(f"ours {out['ours_decode_tokens_per_s']} tok/s, HF {out['hf_decode_tokens_per_s']} tok/s",
        flush=True)
  if args.profile:
    import shutil  # pylint: disable=g-import-not-at-top
    per_step = {k: v / args.new for k, v in _common.op_profile(ours_run).items()}
    names = _common.hlo_ops(hlo_dir)
    shutil.rmtree(hlo_dir, ignore_errors=True)
    print(f"ops per decode step: {sum(per_step.values()):.0f} us in {len(per_step)} ops; top:")
    for k, v in list(per_step.items())[:args.profile]:
      print(f"  {v:7.1f} us  {k:36s} {names.get(k, '')}")
    out["profile_us_per_step"] = round(sum(per_step.values()), 1)
  print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
  main()
