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


def weight_matmuls(cfg, tokens: int) -> list[tuple[int, int, int]]:
  """(M, K, N) of every forward weight matmul of a pass over `tokens` tokens, [M, K] @ [K, N]:
  each layer's q, k, v, o projections and gate, up, down, then the tied output projection."""
  d, f, n, k, h = cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  layer = [(tokens, d, n * h), (tokens, d, k * h), (tokens, d, k * h), (tokens, n * h, d),
           (tokens, d, f), (tokens, d, f), (tokens, f, d)]
  return layer * cfg.num_layers + [(tokens, d, cfg.vocab_size)]


def matmul_flops_per_token(cfg, seq_len: int) -> float:
  """Forward matmul FLOPs per token: projections, MLP, tied output, attention (causal half;
  a sliding-window layer attends at most its window)."""
  weights = sum(2 * k * n for _, k, n in weight_matmuls(cfg, 1))
  attn = 0.0
  for layer in range(cfg.num_layers):
    window = cfg.window(layer) if hasattr(cfg, "window") else None
    # Keys a query attends, averaged over positions: L / 2 causal, about W past the window.
    keys = seq_len / 2 if not window or window >= seq_len else window * (1 - window / (2 * seq_len))
    attn += 2 * 2 * cfg.num_heads * cfg.head_dim * keys  # scores + weighted sum, 2 FLOPs each
  return weights + attn


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


def dump_hlo_to(path: str) -> None:
  """Makes XLA write every compiled program's optimized HLO text under `path` (call before the
  first computation: XLA reads XLA_FLAGS when the backend starts)."""
  flags = f"--xla_dump_to={path} --xla_dump_hlo_as_text --xla_dump_hlo_pass_re=^$"
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def hlo_ops(path: str) -> dict[str, str]:
  """"module:op" -> "shape  what" (the JAX operations it came from) for the HLO dumped under
  `path` (`dump_hlo_to`), from the optimized programs' text."""
  import glob  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top

  ops = {}
  pattern = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name=\"([^\"]*)\"", re.M)
  for name in sorted(glob.glob(f"{path}/*after_optimizations.txt")):
    module = os.path.basename(name).split(".")[1]  # module_0007.jit_f.cpu_after_... -> jit_f
    with open(name) as f:
      for op, shape, where in pattern.findall(f.read()):
        what = "/".join(p for p in where.split("/")[-2:] if p not in ("body", "while"))
        ops[f"{module}:{op}"] = f"{shape.split('{')[0]}  {what}"
  return ops


def op_profile(fn, calls: int = 1) -> dict[str, float]:
  """Microseconds per call spent in each compiled op (XLA thunk) while `fn` runs `calls` times.

  From a `jax.profiler` trace (its Perfetto JSON): the durations of the events XLA emits per
  executed op, summed by "module:op" (e.g. `jit_f:ynn_fusion.12`, a matmul); Python frames,
  runtime wrappers and control flow (whose events span the ops inside) are left out. Ops that
  run concurrently each count their own time.
  """
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  # Runtime frames, and control flow (a while / cond event spans the ops it runs).
  wrappers = ("$", "ThunkExecutor", "Pjit", "CommonPjRt", "PjRt", "Slinky", "np.asarray", "end:",
              "while", "cond", "call")
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(calls):
        fn()
    (path,) = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  totals: dict[str, float] = {}
  for e in events:
    if e.get("ph") == "X" and not e["name"].startswith(wrappers):
      key = f"{e.get('args', {}).get('hlo_module', '?')}:{e['name']}"
      totals[key] = totals.get(key, 0.0) + e["dur"] / calls
  return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def reset_peak_rss() -> None:
  """Restarts this process's peak-resident-memory count (Linux: VmHWM), so that `peak_rss_gb`
  reports the peak of what runs after this call."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def peak_rss_gb() -> float:
  """This process's peak resident memory (GB) since start or the last `reset_peak_rss`."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return round(int(line.split()[1]) / 1e6, 2)
  raise RuntimeError("no VmHWM in /proc/self/status")
