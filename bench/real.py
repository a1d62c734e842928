"""The real Gemma 3 270M on this machine: ours vs Hugging Face, each side in its own process.

    python bench/real.py [--parts peak,fwd,decode,train,icl,accel] [--reps 5] [--bf16]

Weights: ours the `gemma3_270m` checkpoint (the GGUF converted to float32 params,
`icl_ft.model.gguf_checkpoint`); Hugging Face transformers reads the same GGUF file (dequantized
to float32) with sdpa attention: the pair tests/test_gemma3_270m.py holds to 1e-4 relative
logits. Inputs are real text: windows of the four datasets' `small` ICL contexts, tokenized
with the checkpoint's tokenizer.

Each side runs in a fresh process (`--worker ours` / `--worker hf`), one after the other, so
the other side is idle: PyTorch's OpenMP threads spin after each call and slow an XLA
computation started right after (BENCHMARKS.md). Inside a worker every part warms up once
(compilation) and then times `--reps` repetitions; medians.

Parts and figures (the last stdout line is one JSON object):
- peak: float32 [N, N] @ [N, N] `jnp.dot`s, N in `PEAK_SIZES` (ours process), the fastest is
  the matmul peak;
  and a sum over a 1 GiB float32 array: the memory read bandwidth. With them each side-by-side
  figure gets a bound, the ratio an implementation running at that floor would reach
  (`*_ratio_bound`: the HF time over the floor, FLOPs / peak for the forward, bytes read / bandwidth
  for a decode: the prompts' prefill at the matmul peak plus every step reading the weights and
  caches whole).
- fwd: scoring a batch of 8 x 128 tokens, float32 (logits, log-softmax, the next tokens'
  log-probs summed per row): `real_fwd_ratio_vs_hf` = HF seconds / ours;
  `real_fwd_peak_fraction` = ours' matmul FLOP/s (bench/_common.matmul_flops_per_token) / peak.
  With `--bf16` ours also times the bfloat16-compute forward (float32 params), the decode
  with bfloat16 weights and compute (`real_decode_bf16_*`: against HF's float32 `generate`,
  with its rows compared to HF's) and the train step with bfloat16 compute on float32 master
  weights and optimizer (`real_train_bf16_*`; parity: the first step's loss against float32),
  against HF's float32 step and HF's step under bfloat16 autocast
  (`real_train_bf16_ratio_vs_hf_bf16`).
- decode: 8 rows, 512-token prompts, 64 greedy new tokens (ours `icl_ft.inference.sampling`
  with a cache of [BOS] + the prompts' room; HF `generate`): `real_decode_ratio_vs_hf`, and the share of rows whose
  64 tokens are identical on both sides. Ours is also timed with one new token, which splits
  its time into the prompts' prefill and the per-step time (`real_decode_prefill_s`,
  `real_decode_step_ms`), each beside its floor (`real_decode_prefill_floor_s`,
  `real_decode_step_floor_ms`).
- train: full finetuning, AdamW, batch 8 x 128, float32 (ours `icl_ft.train.step.TrainStep`;
  HF forward + cross-entropy + backward + `torch.optim.AdamW`): `real_train_ratio_vs_hf`, and
  each side's peak resident memory over the timed steps (`*_train_peak_rss_gb`).
- icl: `bench/scoring.py --checkpoint gemma3_270m` on semantic_structure `small` (its whole ICL
  context, every test question; the naive side timed on the first questions and scaled):
  `real_icl_scoring_speedup`.
- accel: on a GPU or TPU, our train step's model FLOP utilization (`accel_mfu_270m`,
  `accel_mfu_1b`: the `gemma3_270m` and `gemma3_1b` presets, fresh weights, bfloat16 compute,
  batch 8 x 2048; matmul FLOPs x 3 over the step time and the chip's dense bfloat16 peak from
  `PEAK_BF16_FLOPS`). On a CPU, or a chip not in that table, they are null and `accel_note`
  says why. The study's wall time on that machine is `bench/run_all.py --run_study`'s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # pylint: disable=g-bad-import-order

import numpy as np  # pylint: disable=wrong-import-order

NAME = "gemma3_270m"
BATCH, FWD_LEN, TRAIN_LEN = 8, 128, 128
PROMPT_LEN, NEW = 512, 64
DATASETS = ("celebrities", "semantic_structure", "simple_reversals", "syllogisms")
PARTS = ("peak", "fwd", "decode", "train", "icl", "accel")
PEAK_SIZES = (2048, 3072, 4096)  # square float32 matmuls; the fastest is the peak
ACCEL_PRESETS = {"accel_mfu_270m": "gemma3_270m", "accel_mfu_1b": "gemma3_1b"}
ACCEL_BATCH, ACCEL_LEN = 8, 2048
# Dense bfloat16 matmul peak per chip (vendor datasheets), by `jax.Device.device_kind`.
PEAK_BF16_FLOPS = {
    "NVIDIA H200": 989e12, "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def _timed(fn, reps: int) -> tuple[float, object]:
  """(median seconds of `reps` calls after one warm-up call, the last call's result)."""
  out = fn()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return _common.median(times), out


def _windows(ids: list[int], bos: int, count: int, length: int) -> np.ndarray:
  """`count` consecutive windows of `length` tokens ([BOS] + `length - 1` text tokens)."""
  need = count * (length - 1)
  if len(ids) < need:
    raise ValueError(f"{len(ids)} text tokens, the windows need {need}")
  rows = [[bos] + ids[i * (length - 1):(i + 1) * (length - 1)] for i in range(count)]
  return np.asarray(rows, np.int32)


def write_inputs(tok, path: Path) -> None:
  """The benchmark's token arrays (real text), for both workers."""
  from icl_ft.datasets import registry  # pylint: disable=g-import-not-at-top
  from icl_ft.evaluation import prompts  # pylint: disable=g-import-not-at-top

  text = "\n\n".join(prompts.context_text(registry.generate(name, scale="small", seed=0).train)
                     for name in DATASETS)
  ids = tok.encode(text)
  np.savez(path, fwd=_windows(ids, tok.bos_id, BATCH, FWD_LEN),
           train=_windows(ids, tok.bos_id, BATCH, TRAIN_LEN),
           prompts=_windows(ids, tok.bos_id, BATCH, PROMPT_LEN))


def ours_worker(parts: list[str], reps: int, bf16: bool, workdir: Path) -> dict:
  """Our side: loads the checkpoint, writes the inputs, times the asked parts."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  import forward  # pylint: disable=g-import-not-at-top
  import sampling as sampling_bench  # pylint: disable=g-import-not-at-top
  import train as train_bench  # pylint: disable=g-import-not-at-top
  from icl_ft import sharding  # pylint: disable=g-import-not-at-top
  from icl_ft.config import schema  # pylint: disable=g-import-not-at-top
  from icl_ft.model import gguf_checkpoint  # pylint: disable=g-import-not-at-top
  from icl_ft.model import loader  # pylint: disable=g-import-not-at-top

  mesh, rules = sharding.mesh_from_config(schema.MeshConfig(), jax.devices()[:1])

  def load(dtype: str = "float32", param_dtype: str = "float32"):
    return loader.load_model(schema.ModelConfig(preset=NAME, checkpoint=NAME, tokenizer=NAME,
                                                dtype=dtype, param_dtype=param_dtype), mesh, rules)

  out: dict = {}
  if "accel" in parts:
    out.update(accelerator_mfu(reps))
  if not set(parts) - {"accel"}:
    return out
  model, tok = load()
  write_inputs(tok, workdir / "inputs.npz")
  inputs = np.load(workdir / "inputs.npz")
  out.update(gguf=str(gguf_checkpoint.gguf_file(gguf_checkpoint.CHECKPOINTS[NAME])),
             fwd_flops_per_token=_common.matmul_flops_per_token(model.config, FWD_LEN))
  if "peak" in parts:
    rates = {}
    for n in PEAK_SIZES:
      run, flops = train_bench.peak(n)
      seconds, _ = _timed(run, max(reps, 5))
      rates[n] = round(flops / seconds / 1e9, 1)
    out["peak_gflops_by_size"] = rates
    out["peak_gflops"] = max(rates.values())
    big = jax.numpy.ones((1 << 28,), jax.numpy.float32)  # 1 GiB
    total = jax.jit(jax.numpy.sum)
    seconds, _ = _timed(lambda: total(big).block_until_ready(), max(reps, 5))
    out["read_gb_per_s"] = round(big.nbytes / seconds / 1e9, 1)
    del big
  if "fwd" in parts:
    seconds, logp = _timed(forward.ours(model, inputs["fwd"], calls=1), reps)
    out["fwd_s"] = seconds
    np.save(workdir / "ours_fwd.npy", logp)
    if bf16:
      bf16_model, _ = load("bfloat16")
      seconds, logp16 = _timed(forward.ours(bf16_model, inputs["fwd"], calls=1), reps)
      out["fwd_bf16_s"] = seconds
      out["fwd_bf16_max_abs_row_logprob_diff"] = float(np.max(np.abs(logp16 - logp)))
      del bf16_model
  if "decode" in parts:
    out["param_bytes"] = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    out["prompt_flops_per_token"] = _common.matmul_flops_per_token(model.config, PROMPT_LEN)
    out["head_flops"] = 2 * model.config.embed_dim * model.config.vocab_size
    out["kv_cache_bytes"] = (2 * model.config.num_layers * BATCH * (PROMPT_LEN + NEW)
                             * model.config.num_kv_heads * model.config.head_dim * 4)

    def decode(m, name: str) -> None:
      run = sampling_bench.ours(m, inputs["prompts"], NEW, context=np.zeros(0, np.int32),
                                max_len=1)  # no more slots than the rows need
      out[f"{name}_s"], ids = _timed(run, max(1, reps // 2))
      np.save(workdir / f"ours_{name}.npy", ids)
      # One new token: the prompts' prefill and a single decode step. The difference to the
      # whole run is NEW - 1 steps: where the time goes, prefill or steps.
      one = sampling_bench.ours(m, inputs["prompts"], 1, context=np.zeros(0, np.int32),
                                max_len=1)
      out[f"{name}_one_token_s"], _ = _timed(one, max(1, reps // 2))

    decode(model, "decode")
    if bf16:  # bfloat16 weights and compute: half the bytes each step reads
      decode(load("bfloat16", "bfloat16")[0], "decode_bf16")
  if "train" in parts:
    batch = train_bench.batch_arrays(BATCH, TRAIN_LEN, model.config.vocab_size)
    batch["tokens"] = inputs["train"]
    out.update(_train(model, batch, reps))
    del model
    if bf16:  # float32 master weights and optimizer, bfloat16 matmuls
      bf16_out = _train(load("bfloat16")[0], batch, reps)
      out.update({k.replace("train_", "train_bf16_"): v for k, v in bf16_out.items()})
  return out


def _train(model, batch: dict, reps: int) -> dict:
  """Times full-finetuning steps of `model` (consumed: the step owns its weights)."""
  import gc  # pylint: disable=g-import-not-at-top

  import train as train_bench  # pylint: disable=g-import-not-at-top

  gc.collect()
  run, _ = train_bench.ours(model.config, batch, steps=1, model=model)
  del model
  gc.collect()
  first = run()  # compiles; the loss of the unchanged weights
  _common.reset_peak_rss()
  seconds, loss = _timed(run, reps)
  return dict(train_s=seconds, train_loss=loss, train_first_loss=first,
              train_peak_rss_gb=_common.peak_rss_gb())


def accelerator_mfu(reps: int) -> dict:
  """`accel_mfu_*` of our train step on this machine's accelerator, or null and why."""
  import jax  # pylint: disable=g-import-not-at-top

  import train as train_bench  # pylint: disable=g-import-not-at-top
  from icl_ft.model import config as model_config  # pylint: disable=g-import-not-at-top

  device = jax.devices()[0]
  out: dict = {key: None for key in ACCEL_PRESETS}
  peak = PEAK_BF16_FLOPS.get(device.device_kind)
  if device.platform == "cpu":
    out["accel_note"] = f"no GPU or TPU: JAX's device is {device.device_kind!r} (cpu)"
    return out
  if peak is None:
    out["accel_note"] = (f"no bfloat16 peak known for {device.device_kind!r}: add it to "
                         f"bench/real.py PEAK_BF16_FLOPS")
    return out
  for key, preset in ACCEL_PRESETS.items():
    cfg = model_config.get_preset(preset).replace(dtype="bfloat16")
    batch = train_bench.batch_arrays(ACCEL_BATCH, ACCEL_LEN, cfg.vocab_size)
    run, _ = train_bench.ours(cfg, batch, steps=1)
    run()  # compiles
    seconds, _ = _timed(run, reps)
    flops = 3 * _common.matmul_flops_per_token(cfg, ACCEL_LEN) * ACCEL_BATCH * ACCEL_LEN
    out[key] = round(flops / seconds / peak, 3)
    out[f"{key}_step_s"] = round(seconds, 4)
  out["accel_note"] = (f"{device.device_kind}: bfloat16 train step, batch {ACCEL_BATCH} x "
                       f"{ACCEL_LEN}, peak {peak / 1e12:.0f} TFLOP/s")
  return out


def hf_worker(parts: list[str], reps: int, bf16: bool, workdir: Path, gguf: str) -> dict:
  """The Hugging Face side: reads the GGUF with transformers, times the asked parts."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  import forward  # pylint: disable=g-import-not-at-top
  import sampling as sampling_bench  # pylint: disable=g-import-not-at-top
  import train as train_bench  # pylint: disable=g-import-not-at-top

  path = Path(gguf)
  net = transformers.AutoModelForCausalLM.from_pretrained(
      path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="sdpa").eval()
  inputs = np.load(workdir / "inputs.npz")
  out = {"torch_threads": torch.get_num_threads()}
  if "fwd" in parts:
    seconds, logp = _timed(forward.hf_net(net, inputs["fwd"], calls=1), reps)
    out["fwd_s"] = seconds
    np.save(workdir / "hf_fwd.npy", logp)
  if "decode" in parts:
    run = sampling_bench.hf_net(net, inputs["prompts"], NEW, context=np.zeros(0, np.int32))
    seconds, ids = _timed(run, max(1, reps // 2))
    out["decode_s"] = seconds
    np.save(workdir / "hf_decode.npy", ids)
  if "train" in parts:
    batch = train_bench.batch_arrays(BATCH, TRAIN_LEN, net.config.vocab_size)
    batch["tokens"] = inputs["train"]
    run = train_bench.hf_net(net, batch, steps=1)
    run()
    _common.reset_peak_rss()
    seconds, loss = _timed(run, reps)
    out.update(train_s=seconds, train_loss=loss, train_peak_rss_gb=_common.peak_rss_gb())
    if bf16:  # last: autocast's step trains the weights the float32 parts read
      run = train_bench.hf_net(net, batch, steps=1, bf16=True)
      run()
      out["train_bf16_s"], _ = _timed(run, reps)
  return out


def _worker(side: str, args: argparse.Namespace, workdir: Path, extra: list[str]) -> dict:
  """Runs one side's worker process; its last-line JSON."""
  cmd = [sys.executable, __file__, "--worker", side, "--parts", args.parts,
         "--reps", str(args.reps), "--workdir", str(workdir)] + extra
  print(f"[{time.strftime('%H:%M:%S')}] {side}: load {_common.load_average()}", flush=True)
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    sys.stderr.write(proc.stderr[-4000:])
    raise SystemExit(f"{side} worker exited {proc.returncode}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _icl(reps: int) -> dict:
  """bench/scoring.py on the 270M in its own process; its last-line JSON."""
  cmd = [sys.executable, str(Path(__file__).with_name("scoring.py")), "--checkpoint", NAME,
         "--warmup", "1", "--naive_batch", "4", "--naive_questions", str(max(2, reps // 2))]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    sys.stderr.write(proc.stderr[-4000:])
    raise SystemExit(f"bench/scoring.py exited {proc.returncode}")
  print(proc.stdout.strip().splitlines()[-2], flush=True)  # its summary line
  return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(ours: dict, hf: dict, icl: dict | None, workdir: Path) -> dict:
  """The headline figures from both sides' measurements."""
  out: dict = {k: ours[k] for k in ours if k.startswith("accel_")}
  fwd_tokens, train_tokens = BATCH * FWD_LEN, BATCH * TRAIN_LEN
  if "fwd_s" in ours:
    out["real_fwd_ours_tokens_per_s"] = round(fwd_tokens / ours["fwd_s"])
    out["real_fwd_hf_tokens_per_s"] = round(fwd_tokens / hf["fwd_s"])
    out["real_fwd_ratio_vs_hf"] = round(hf["fwd_s"] / ours["fwd_s"], 3)
    out["real_fwd_max_abs_row_logprob_diff"] = float(np.max(np.abs(
        np.load(workdir / "ours_fwd.npy") - np.load(workdir / "hf_fwd.npy"))))
    gflops = ours["fwd_flops_per_token"] * fwd_tokens / ours["fwd_s"] / 1e9
    out["real_fwd_gflops"] = round(gflops, 1)
    if "peak_gflops" in ours:
      out["peak_gflops"] = ours["peak_gflops"]
      out["real_fwd_peak_fraction"] = round(gflops / ours["peak_gflops"], 3)
      floor_s = ours["fwd_flops_per_token"] * fwd_tokens / (ours["peak_gflops"] * 1e9)
      out["real_fwd_ratio_bound"] = round(hf["fwd_s"] / floor_s, 3)
    if "fwd_bf16_s" in ours:
      out["real_fwd_bf16_ours_tokens_per_s"] = round(fwd_tokens / ours["fwd_bf16_s"])
      out["real_fwd_bf16_max_abs_row_logprob_diff"] = ours["fwd_bf16_max_abs_row_logprob_diff"]
  if "decode_s" in ours:
    new_tokens = BATCH * NEW
    out["real_decode_ours_tokens_per_s"] = round(new_tokens / ours["decode_s"], 1)
    out["real_decode_hf_tokens_per_s"] = round(new_tokens / hf["decode_s"], 1)
    out["real_decode_ratio_vs_hf"] = round(hf["decode_s"] / ours["decode_s"], 3)
    a, b = np.load(workdir / "ours_decode.npy"), np.load(workdir / "hf_decode.npy")
    out["real_decode_rows_identical"] = float(np.mean((a == b).all(axis=1)))
    if "decode_bf16_s" in ours:
      out["real_decode_bf16_ours_tokens_per_s"] = round(new_tokens / ours["decode_bf16_s"], 1)
      out["real_decode_bf16_ratio_vs_hf"] = round(hf["decode_s"] / ours["decode_bf16_s"], 3)
      c = np.load(workdir / "ours_decode_bf16.npy")
      out["real_decode_bf16_rows_identical"] = float(np.mean((c == b).all(axis=1)))
      # Tokens before the first difference, per row: where bfloat16 rounding changes a pick.
      same = np.cumprod(c == b, axis=1).sum(axis=1)
      out["real_decode_bf16_tokens_before_first_diff"] = [int(x) for x in same]
    if "read_gb_per_s" in ours and "peak_gflops" in ours:
      out["read_gb_per_s"] = ours["read_gb_per_s"]
      # The prefill's matmuls (logits of the last position only) at the matmul peak, then
      # every step reads all weights and, on average, half of each row's final cache.
      step_bytes = ours["param_bytes"] + ours["kv_cache_bytes"] / 2
      prefill_flops = BATCH * (PROMPT_LEN * (ours["prompt_flops_per_token"] - ours["head_flops"])
                               + ours["head_flops"])
      prefill_floor_s = prefill_flops / (ours["peak_gflops"] * 1e9)
      step_floor_s = step_bytes / (ours["read_gb_per_s"] * 1e9)
      floor_s = prefill_floor_s + NEW * step_floor_s
      out["real_decode_ratio_bound"] = round(hf["decode_s"] / floor_s, 3)
      out["real_decode_prefill_floor_s"] = round(prefill_floor_s, 2)
      out["real_decode_step_floor_ms"] = round(1e3 * step_floor_s, 1)
    if "decode_one_token_s" in ours:
      step_s = (ours["decode_s"] - ours["decode_one_token_s"]) / (NEW - 1)
      out["real_decode_step_ms"] = round(1e3 * step_s, 1)
      out["real_decode_prefill_s"] = round(ours["decode_one_token_s"] - step_s, 2)
  if "train_s" in ours:
    out["real_train_ours_tokens_per_s"] = round(train_tokens / ours["train_s"], 1)
    out["real_train_hf_tokens_per_s"] = round(train_tokens / hf["train_s"], 1)
    out["real_train_ratio_vs_hf"] = round(hf["train_s"] / ours["train_s"], 3)
    out["real_train_ours_peak_rss_gb"] = ours["train_peak_rss_gb"]
    out["real_train_hf_peak_rss_gb"] = hf["train_peak_rss_gb"]
    if "train_bf16_s" in ours:  # parity: the first step's loss on the same weights and batch
      out["real_train_bf16_ours_tokens_per_s"] = round(train_tokens / ours["train_bf16_s"], 1)
      out["real_train_bf16_ratio_vs_hf"] = round(hf["train_s"] / ours["train_bf16_s"], 3)
      if "train_bf16_s" in hf:  # like for like: HF's step under bfloat16 autocast
        hf_bf16_s = hf["train_bf16_s"]
        out["real_train_bf16_hf_tokens_per_s"] = round(train_tokens / hf_bf16_s, 1)
        out["real_train_bf16_ratio_vs_hf_bf16"] = round(hf_bf16_s / ours["train_bf16_s"], 3)
      out["real_train_bf16_peak_rss_gb"] = ours["train_bf16_peak_rss_gb"]
      out["real_train_bf16_first_loss_diff"] = round(
          abs(ours["train_bf16_first_loss"] - ours["train_first_loss"]), 5)
    if "peak_gflops" in ours:
      train_flops = 3 * ours["fwd_flops_per_token"] * train_tokens
      out["real_train_peak_fraction"] = round(train_flops / ours["train_s"] / 1e9
                                              / ours["peak_gflops"], 3)
  if icl is not None:
    out["real_icl_scoring_speedup"] = icl["icl_scoring_speedup"]
    out["real_icl"] = icl
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--parts", default=",".join(PARTS))
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--bf16", action="store_true", help="also time ours' bfloat16 forward")
  parser.add_argument("--worker", choices=("ours", "hf"), help=argparse.SUPPRESS)
  parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
  parser.add_argument("--gguf", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  parts = args.parts.split(",")
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    raise SystemExit(f"unknown --parts {unknown}; choose from {list(PARTS)}")
  if args.worker == "ours":
    print(json.dumps(ours_worker(parts, args.reps, args.bf16, Path(args.workdir))))
    return
  if args.worker == "hf":
    print(json.dumps(hf_worker(parts, args.reps, args.bf16, Path(args.workdir), args.gguf)))
    return

  load_before = _common.load_average()
  with tempfile.TemporaryDirectory() as tmp:
    workdir = Path(tmp)
    ours = _worker("ours", args, workdir, ["--bf16"] if args.bf16 else [])
    print(f"ours: {json.dumps(ours)}", flush=True)
    hf = {}
    if set(parts) & {"fwd", "decode", "train"}:
      hf = _worker("hf", args, workdir,
                   ["--gguf", ours["gguf"]] + (["--bf16"] if args.bf16 else []))
      print(f"hf: {json.dumps(hf)}", flush=True)
    icl = _icl(args.reps) if "icl" in parts else None
    out = summarize(ours, hf, icl, workdir)
  out.update(load_before=load_before, load_after=_common.load_average(), batch=BATCH,
             fwd_len=FWD_LEN, train_len=TRAIN_LEN, prompt_len=PROMPT_LEN, new_tokens=NEW,
             reps=args.reps, ours=ours, hf=hf)
  print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
  main()
