"""Shared pieces of the side-by-side benchmarks (bench/train.py, bench/forward.py).

The issue's two sizes (Gemma 1 style: multi-query, all layers global, no post norms):

  small   2 layers, D 128, MLP 512, 4 heads of 32, 1 kv head, vocab 2048
  medium  4 layers, D 256, MLP 1024, 4 heads of 64, 1 kv head, vocab 2048

Both run at batch 16 x seq 256 (every position real, one segment per row), float32.
The Hugging Face twin is built with `tests/model_testing.py` (the parity-tested conversion),
so both sides hold the same weights.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SIZES = {
    "small": dict(num_layers=2, embed_dim=128, hidden_dim=512, num_heads=4, head_dim=32),
    "medium": dict(num_layers=4, embed_dim=256, hidden_dim=1024, num_heads=4, head_dim=64),
}


def model_config(size: str, family: str = "gemma1", dtype: str = "float32", vocab: int = 2048):
  """The ModelConfig of one of the issue's sizes (multi-query, tiny preset of `family`)."""
  from icl_ft.model import config as model_config_lib  # pylint: disable=g-import-not-at-top

  return model_config_lib.get_preset(f"tiny_{family}", num_kv_heads=1, vocab_size=vocab,
                                     dtype=dtype, **SIZES[size])


def load_average() -> list[float]:
  """The 1/5/15-minute load averages (the machine is shared: read ratios, not absolutes)."""
  return [round(x, 2) for x in os.getloadavg()]


def matmul_flops_per_token(cfg, seq_len: int) -> float:
  """Forward matmul FLOPs per token: projections, MLP, tied output, attention (causal half)."""
  d, f, n, k, h, v = (cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads,
                      cfg.head_dim, cfg.vocab_size)
  per_layer = 2 * d * (n * h + 2 * k * h) + 2 * n * h * d + 2 * 3 * d * f
  # scores + weighted sum, average over causal positions: 2 matmuls * 2 FLOPs * N*H * L / 2.
  attn = 2 * n * h * seq_len
  return cfg.num_layers * (per_layer + attn) + 2 * d * v


def hf_twin(model, attn_implementation: str = "sdpa"):
  """The Hugging Face CausalLM with `model`'s weights (float32), attention as asked."""
  import model_testing  # pylint: disable=g-import-not-at-top

  hf = model_testing.hf_model(model)
  hf.config._attn_implementation = attn_implementation  # pylint: disable=protected-access
  return hf


def interleaved(fns: dict, reps: int, warmup: int = 1) -> dict[str, list[float]]:
  """Seconds per call of each fn, alternating fns every repetition (fair on a shared box)."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(reps):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times


def median(xs: list[float]) -> float:
  return statistics.median(xs)
