"""Runs every benchmark in bench/, writes the summary table into BENCHMARKS.md, prints one JSON.

    python bench/run_all.py [--only train,forward] [--skip scoring] [--no_write] [--smoke]
                            [--study_json results/default/study.json] [--run_study]

Each `bench/*.py` (not `_*.py`, not this file) runs as its own process, one after the other,
with the arguments in `ARGS` (chosen so the whole run takes ~30 minutes on the 2-core CPU box,
half of it `real`, the Gemma 3 270M; `--skip real` leaves the tiny models' figures alone); its last stdout line is its JSON result. Inside each side-by-side benchmark the
two sides alternate repetition by repetition, so a ratio is measured under one load.
`--reuse NAME=FILE` takes benchmark NAME's result from the last line of FILE (the saved stdout
of an earlier `python bench/NAME.py` with the same `ARGS`) instead of running it; the table
says so. Meant for load-independent figures (packing efficiency). `--smoke` uses `SMOKE_ARGS` instead (minimal repetitions: checks that every script runs end
to end; its numbers mean nothing) and never writes BENCHMARKS.md.

The study's wall time (`study_wall_s`): with `--run_study`, `icl-ft-study` (configs/study.py
defaults, run name `bench_study`, overwritten) runs here and its process wall time is
reported; otherwise it is read from the `study.json` of a finished run (`--study_json`), its
`seconds`, only if no stage of that run was resumed from an earlier call (a resumed run's last
call is not the study's wall time). Else `study_wall_s` is null and `study_note` says why.

The table between the markers `<!-- run_all:begin -->` / `<!-- run_all:end -->` in
BENCHMARKS.md is replaced (appended if missing; atomic write). The last line is one JSON
object with the headline figures, the machine, the load averages and per-benchmark wall times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"

# Arguments per benchmark (others run with none). Order = run order.
ARGS: dict[str, list[str]] = {
    "packing": [],
    # The whole `small` semantic_structure ICL evaluation (151 questions): what the target names.
    "scoring": ["--warmup", "4", "--naive_batch", "4"],
    "sampling": [],
    "train": [],
    "forward": [],
    "profile_step": ["--size", "small,medium", "--reps", "3"],
    # The real Gemma 3 270M, each side in its own process (~15 minutes).
    "real": ["--reps", "3", "--bf16"],
}

# Minimal repetitions: every script end to end in a few minutes (numbers meaningless).
SMOKE_ARGS: dict[str, list[str]] = {
    "packing": ["--datasets", "simple_reversals", "--epochs", "0.5", "--max_batches", "2"],
    "scoring": ["--questions", "2", "--warmup", "1", "--naive_batch", "4"],
    "sampling": ["--batch", "4", "--new", "4", "--reps", "1"],
    "train": ["--sizes", "small", "--reps", "1", "--steps", "1", "--peak_n", "256"],
    "forward": ["--sizes", "small", "--reps", "1", "--calls", "1"],
    "profile_step": ["--size", "small", "--reps", "1"],
    "attention": ["--shapes", "2x64x4x1x16", "--reps", "1"],
    "dots": ["--tokens", "64", "--dims", "64x256", "--reps", "1"],
    "real": ["--parts", "accel,peak,fwd", "--reps", "1"],
}

# key in the summary -> target, for the table and the `targets_met` map: met when the figure is
# >= its target, or <= it for the keys in AT_MOST.
TARGETS = {
    "train_ratio_vs_hf_small": 1.3, "train_ratio_vs_hf_medium": 1.3,
    "train_peak_fraction_medium": 0.5, "fwd_ratio_vs_hf_small": 1.0,
    "fwd_ratio_vs_hf_medium": 1.0, "icl_scoring_speedup": 20.0, "decode_ratio_vs_hf": 3.0,
    "packing_efficiency_min": 0.97, "train_floor_ratio_small": 1.1,
    "train_floor_ratio_medium": 1.1,
    "real_fwd_ratio_vs_hf": 2.0, "real_fwd_peak_fraction": 0.7, "real_icl_scoring_speedup": 20.0,
    "real_train_ratio_vs_hf": 1.5, "real_decode_ratio_vs_hf": 3.0,
}
# Figures reported beside the targets (bounds, memory, accelerator MFU; null where not measured).
REAL_FIGURES = ("real_fwd_ratio_bound", "real_decode_ratio_bound", "real_decode_rows_identical",
                "real_decode_prefill_s", "real_decode_prefill_floor_s", "real_decode_step_ms",
                "real_decode_step_floor_ms",
                "real_train_ours_peak_rss_gb", "real_train_hf_peak_rss_gb",
                "real_train_peak_fraction", "real_fwd_bf16_ours_tokens_per_s",
                "real_decode_bf16_ratio_vs_hf", "real_decode_bf16_rows_identical",
                "real_train_bf16_ratio_vs_hf", "real_train_bf16_peak_rss_gb",
                "real_train_bf16_first_loss_diff", "real_train_bf16_ratio_vs_hf_bf16",
                "accel_mfu_270m", "accel_mfu_1b", "accel_note")
STUDY_TARGET_S = 15 * 60
AT_MOST = {"train_floor_ratio_small", "train_floor_ratio_medium", "study_wall_s"}


def benchmarks(only: set[str], skip: set[str]) -> list[str]:
  """Names of the bench/*.py scripts to run, in ARGS order, then the rest alphabetically."""
  found = sorted(p.stem for p in BENCH.glob("*.py")
                 if not p.stem.startswith("_") and p.stem != "run_all")
  names = [n for n in ARGS if n in found] + [n for n in found if n not in ARGS]
  return [n for n in names if (not only or n in only) and n not in skip]


def machine() -> dict:
  """nproc, CPU model and vector flags, memory, library versions (what the numbers ran on)."""
  info: dict = {"nproc": os.cpu_count(), "platform": platform.machine(),
                "python": platform.python_version()}
  try:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
              if ln.startswith("model name")]
    info["cpu_model"] = models[0] if models else platform.processor()
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines()
                  if ln.startswith("flags")), [])
    info["cpu_vector_flags"] = sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
  except OSError:
    info["cpu_model"] = platform.processor()
  for mod in ("jax", "jaxlib", "flax", "torch", "transformers"):
    try:
      info[mod] = __import__(mod).__version__
    except Exception:  # pylint: disable=broad-except
      info[mod] = None
  return info


def run_bench(name: str, args_map: dict[str, list[str]]) -> dict:
  """Runs bench/<name>.py; its last-line JSON plus wall seconds, load and return code."""
  cmd = [sys.executable, str(BENCH / f"{name}.py"), *args_map.get(name, [])]
  print(f"== {' '.join(cmd[1:])}", flush=True)
  load = [round(x, 2) for x in os.getloadavg()]
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
  for ln in lines[:-1]:
    print(f"   {ln}", flush=True)
  result: dict = {}
  if proc.returncode == 0 and lines:
    try:
      result = json.loads(lines[-1])
    except json.JSONDecodeError:
      result = {}
  if not result:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    print(f"   FAILED (rc {proc.returncode}): {' | '.join(tail)}", flush=True)
  return {"result": result, "wall_s": round(wall, 1), "rc": proc.returncode,
          "command": "python bench/" + " ".join([f"{name}.py", *args_map.get(name, [])]),
          "load_before": load, "load_after": [round(x, 2) for x in os.getloadavg()]}


def reused_bench(name: str, path: Path, args_map: dict[str, list[str]]) -> dict:
  """bench/<name>.py's result read from the last line of `path` (a saved earlier run)."""
  lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
  result = json.loads(lines[-1]) if lines else {}
  print(f"== {name}: reused from {path}", flush=True)
  return {"result": result, "wall_s": None, "rc": 0, "reused": str(path),
          "command": "python bench/" + " ".join([f"{name}.py", *args_map.get(name, [])]),
          "load_before": [None], "load_after": [None]}


def study_wall(study_json: Path) -> tuple[float | None, str]:
  """(study wall seconds, note) from an icl-ft-study run's study.json."""
  if shutil.which("icl-ft-study") is None:
    return None, "icl-ft-study is not installed"
  if not study_json.exists():
    return None, (f"no {study_json} (run `icl-ft-study --config=configs/study.py` first, "
                  "or pass --run_study)")
  try:
    data = json.loads(study_json.read_text())
  except (OSError, json.JSONDecodeError) as e:
    return None, f"unreadable {study_json}: {e}"
  wall = data.get("study_wall_s", data.get("seconds"))
  if wall is None:
    return None, f"{study_json} has neither study_wall_s nor seconds"
  resumed = [s.get("key") for s in data.get("stages", []) if s.get("resumed")]
  if resumed:
    total = sum(float(s.get("seconds", 0.0)) for s in data.get("stages", []))
    return None, (f"{study_json}: {len(resumed)} stages were resumed from an earlier call, so "
                  f"its last call's {float(wall):.0f} s is not the study's wall time (stage "
                  f"seconds summed over calls: {total:.0f} s); rerun with --run_study")
  return float(wall), f"from {study_json} (`seconds` of a run with no resumed stage)"


def run_study() -> tuple[float | None, str]:
  """Runs icl-ft-study (configs/study.py defaults, run `bench_study`); its process wall time."""
  exe = shutil.which("icl-ft-study")
  if exe is None:
    return None, "icl-ft-study is not installed"
  cmd = [exe, "--config=configs/study.py", "--config.run=bench_study", "--config.overwrite=True"]
  print(f"== {' '.join(cmd[1:])}", flush=True)
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  if proc.returncode != 0:
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    return None, f"icl-ft-study failed (rc {proc.returncode}) after {wall:.0f} s: {tail}"
  return round(wall, 1), (f"measured here: `icl-ft-study {' '.join(cmd[1:])}`, process wall "
                          f"time (imports and compilation included)")


def summarize(runs: dict[str, dict], study: tuple[float | None, str]) -> dict:
  """The headline figures (null where a benchmark did not run or failed)."""
  r = {name: run["result"] for name, run in runs.items()}
  get = lambda name, key: r.get(name, {}).get(key)  # noqa: E731
  out = {
      "train_ratio_vs_hf_small": get("train", "train_ratio_vs_hf_small"),
      "train_ratio_vs_hf_medium": get("train", "train_ratio_vs_hf_medium"),
      "train_peak_fraction_medium": get("train", "train_peak_fraction_medium"),
      "fwd_ratio_vs_hf_small": get("forward", "fwd_ratio_vs_hf_small"),
      "fwd_ratio_vs_hf_medium": get("forward", "fwd_ratio_vs_hf_medium"),
      "icl_scoring_speedup": get("scoring", "icl_scoring_speedup"),
      "decode_ratio_vs_hf": get("sampling", "decode_ratio_vs_hf"),
      "packing_efficiency_min": get("packing", "packing_efficiency_min"),
      "train_floor_ratio_small": get("profile_step", "train_floor_ratio_small"),
      "train_floor_ratio_medium": get("profile_step", "train_floor_ratio_medium"),
      **{key: get("real", key) for key in TARGETS if key.startswith("real_")},
      **{key: get("real", key) for key in REAL_FIGURES},
      "study_wall_s": study[0],
      "study_note": study[1],
  }
  met = {k: (None if out[k] is None else out[k] <= t if k in AT_MOST else out[k] >= t)
         for k, t in TARGETS.items()}
  met["study_wall_s"] = None if study[0] is None else study[0] <= STUDY_TARGET_S
  out["targets_met"] = met
  return out


def _fmt(x) -> str:
  if x is None:
    return "n/a"
  return f"{x:.3g}" if isinstance(x, float) else str(x)


def details(runs: dict[str, dict]) -> list[str]:
  """One line per side-by-side figure: ours vs the reference, tokens/s."""
  r = {name: run["result"] for name, run in runs.items()}
  lines = []
  for name, what in (("train", "train step"), ("forward", "forward scoring")):
    for size in ("small", "medium"):
      res = r.get(name, {}).get(size)
      if res:
        extra = ""
        if "peak_fraction" in res:
          extra = (f"; {res['ours_gflop_per_s']} GFLOP/s = {res['peak_fraction']:.0%} of the "
                   f"measured fp32 matmul peak {res['peak_gflop_per_s']} GFLOP/s")
        lines.append(f"- {what}, {size}: ours {res['ours_tokens_per_s']:,} tokens/s, HF "
                     f"{res['hf_tokens_per_s']:,} tokens/s -> {res['ratio_vs_hf']:.2f}x{extra}")
  res = r.get("sampling")
  if res:
    lines.append(f"- decode, `{res['preset']}` batch {res['batch']}, {res['prompt_tokens']} "
                 f"prompt + {res['new_tokens']} new tokens: ours "
                 f"{res['ours_decode_tokens_per_s']:,} tokens/s, HF `generate` "
                 f"{res['hf_decode_tokens_per_s']:,} tokens/s -> {res['decode_ratio_vs_hf']:.2f}x "
                 f"(greedy rows identical: {res['greedy_rows_identical']:.0%})")
  res = r.get("scoring")
  if res:
    lines.append(f"- ICL scoring, {res['questions']} questions ({res['rows']} rows, context "
                 f"{res['context_tokens']} tokens): cached {res['cached_seconds']} s, naive "
                 f"{res['naive_seconds']} s -> {res['icl_scoring_speedup']:.1f}x")
  res = r.get("real")
  if res and "real_fwd_ratio_vs_hf" in res:
    lines.append(f"- Gemma 3 270M forward scoring, 8 x 128 tokens, float32: ours "
                 f"{res['real_fwd_ours_tokens_per_s']:,} tokens/s ({res['real_fwd_gflops']} "
                 f"GFLOP/s of a measured {res.get('peak_gflops')} GFLOP/s matmul peak), HF "
                 f"{res['real_fwd_hf_tokens_per_s']:,} tokens/s -> {res['real_fwd_ratio_vs_hf']:.2f}x "
                 f"(at the matmul peak: {res.get('real_fwd_ratio_bound')}x)")
  if res and "real_train_ratio_vs_hf" in res:
    lines.append(f"- Gemma 3 270M train step, AdamW, 8 x 128: ours "
                 f"{res['real_train_ours_tokens_per_s']:,} tokens/s (peak RSS "
                 f"{res['real_train_ours_peak_rss_gb']} GB), HF {res['real_train_hf_tokens_per_s']:,} "
                 f"tokens/s ({res['real_train_hf_peak_rss_gb']} GB) -> "
                 f"{res['real_train_ratio_vs_hf']:.2f}x")
  if res and "real_train_bf16_ratio_vs_hf" in res:
    lines.append(f"- the same step with bfloat16 compute (float32 master weights and AdamW): "
                 f"ours {res['real_train_bf16_ours_tokens_per_s']:,} tokens/s (peak RSS "
                 f"{res['real_train_bf16_peak_rss_gb']} GB) -> "
                 f"{res['real_train_bf16_ratio_vs_hf']:.2f}x HF's float32 step; first-step loss "
                 f"{res['real_train_bf16_first_loss_diff']} from float32's")
    if "real_train_bf16_ratio_vs_hf_bf16" in res:
      lines.append(f"- HF's step under bfloat16 autocast: "
                   f"{res['real_train_bf16_hf_tokens_per_s']:,} tokens/s -> ours bfloat16 "
                   f"{res['real_train_bf16_ratio_vs_hf_bf16']:.2f}x it")
  if res and "real_decode_ratio_vs_hf" in res:
    lines.append(f"- Gemma 3 270M decode, 8 rows, 512-token prompts + 64 greedy tokens: ours "
                 f"{res['real_decode_ours_tokens_per_s']} tokens/s, HF `generate` "
                 f"{res['real_decode_hf_tokens_per_s']} tokens/s -> "
                 f"{res['real_decode_ratio_vs_hf']:.2f}x (rows identical: "
                 f"{res['real_decode_rows_identical']:.0%}; at the floor: "
                 f"{res.get('real_decode_ratio_bound')}x)")
    if "real_decode_step_ms" in res:
      lines.append(f"- where that decode's time goes: the prompts' prefill "
                   f"{res['real_decode_prefill_s']} s (floor "
                   f"{res.get('real_decode_prefill_floor_s')} s), each step "
                   f"{res['real_decode_step_ms']} ms (floor "
                   f"{res.get('real_decode_step_floor_ms')} ms)")
  if res and "real_decode_bf16_ratio_vs_hf" in res:
    lines.append(f"- the same decode with bfloat16 weights and compute: ours "
                 f"{res['real_decode_bf16_ours_tokens_per_s']} tokens/s -> "
                 f"{res['real_decode_bf16_ratio_vs_hf']:.2f}x HF's float32 `generate` (rows "
                 f"identical to HF's: {res['real_decode_bf16_rows_identical']:.0%}; tokens "
                 f"before the first difference per row: "
                 f"{res['real_decode_bf16_tokens_before_first_diff']})")
  if res and "real_icl" in res:
    icl = res["real_icl"]
    lines.append(f"- Gemma 3 270M ICL scoring, {icl['questions']} questions, context "
                 f"{icl['context_tokens']} tokens: cached {icl['cached_seconds']} s, naive "
                 f"{icl['naive_seconds']} s (timed on {icl['naive_questions_timed']} questions, "
                 f"scaled) -> {icl['icl_scoring_speedup']:.1f}x")
  if res:
    lines.append(f"- accelerator MFU: 270M {_fmt(res.get('accel_mfu_270m'))}, 1B "
                 f"{_fmt(res.get('accel_mfu_1b'))} ({res.get('accel_note')})")
  res = r.get("dots")
  if res:
    by_dims: dict[str, list[str]] = {}
    for key, gflops in res["gflops"].items():
      dims, name, dtype = key.split("/")
      by_dims.setdefault(dims, []).append(f"{name} {dtype} {gflops}")
    for dims, parts in by_dims.items():
      lines.append(f"- one weight's matmuls, {res['tokens']} tokens x {dims}, GFLOP/s: "
                   + ", ".join(parts))
  for size in ("small", "medium"):
    res = r.get("profile_step", {}).get(size)
    if res:
      lines.append(f"- step profile ({size}), ms: " + ", ".join(
          f"{k} {v}" for k, v in res["ms"].items()))
      lines.append(f"- train floor ({size}): weight matmuls alone, summed, "
                   f"{res['matmul_floor_ms']} ms ({res['matmul_floor_gflop_per_s']} GFLOP/s; "
                   f"PyTorch {res['matmul_floor_torch_ms']} ms) + attention core "
                   f"{res['attention_core_ms']} ms per layer = {res['floor_ms']} ms; step "
                   f"{res['step_ms']} ms -> {res['train_floor_ratio']:.2f}x")
  return lines


def table(summary: dict, runs: dict[str, dict], info: dict) -> str:
  """Markdown: machine, headline figures vs targets, details, one line per benchmark run."""
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  lines = [f"Last `python bench/run_all.py`: {now}. Machine: {info['nproc']} cores "
           f"{info.get('cpu_model')} ({' '.join(info.get('cpu_vector_flags', []))}), "
           f"jax {info['jax']}, flax {info['flax']}, torch {info['torch']}, transformers "
           f"{info['transformers']}, Python {info['python']}.", "",
           "| figure | value | target | met |", "|---|---:|---:|:---:|"]
  targets = dict(TARGETS, study_wall_s=STUDY_TARGET_S)
  for key, target in targets.items():
    met = summary["targets_met"].get(key)
    mark = "n/a" if met is None else ("yes" if met else "**no**")
    cmp = "<=" if key in AT_MOST else ">="
    lines.append(f"| `{key}` | {_fmt(summary.get(key))} | {cmp} {target:g} | {mark} |")
  lines += ["", f"study: {summary['study_note']}.", ""]
  lines += details(runs)
  lines += ["", "| benchmark | command | wall s | load (1 min) before -> after | status |",
            "|---|---|---:|---|---|"]
  for name, run in runs.items():
    status = "ok" if run["result"] else f"failed (rc {run['rc']})"
    if run.get("reused"):
      status += f", reused from an earlier run ({run['reused']})"
      lines.append(f"| {name} | `{run['command']}` | - | - | {status} |")
      continue
    lines.append(f"| {name} | `{run['command']}` | {run['wall_s']} | "
                 f"{run['load_before'][0]} -> {run['load_after'][0]} | {status} |")
  return "\n".join(lines)


def write_table(path: Path, text: str) -> None:
  """Replaces the marked block of `path` (appends a section if there is none), atomically."""
  old = path.read_text() if path.exists() else "# Benchmarks\n"
  block = f"{BEGIN}\n{text}\n{END}"
  if BEGIN in old and END in old:
    new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
  else:
    new = old.rstrip("\n") + "\n\n## Summary (`bench/run_all.py`)\n\n" + block + "\n"
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(new)
  os.replace(tmp, path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", default="", help="comma-separated benchmark names")
  parser.add_argument("--skip", default="", help="comma-separated benchmark names")
  parser.add_argument("--study_json", default="results/default/study.json")
  parser.add_argument("--run_study", action="store_true",
                      help="run icl-ft-study here and report its wall time (~15 min or more)")
  parser.add_argument("--smoke", action="store_true",
                      help="minimal repetitions (SMOKE_ARGS); never writes BENCHMARKS.md")
  parser.add_argument("--no_write", action="store_true", help="do not touch BENCHMARKS.md")
  parser.add_argument("--reuse", action="append", default=[], metavar="NAME=FILE",
                      help="take NAME's result from the last line of FILE instead of running it")
  args = parser.parse_args()

  only = {s for s in args.only.split(",") if s}
  skip = {s for s in args.skip.split(",") if s}
  args_map = SMOKE_ARGS if args.smoke else ARGS
  info = machine()
  start = time.perf_counter()
  reuse = {}
  for item in args.reuse:
    name, sep, path = item.partition("=")
    if not sep or not Path(path).is_file():
      parser.error(f"--reuse {item!r}: expected NAME=FILE with an existing FILE")
    reuse[name] = Path(path)
  runs = {name: (reused_bench(name, reuse[name], args_map) if name in reuse
                 else run_bench(name, args_map))
          for name in benchmarks(only, skip)}
  if args.run_study:
    study = run_study()
  else:
    study_json = Path(args.study_json)
    study = study_wall(study_json if study_json.is_absolute() else ROOT / study_json)
  summary = summarize(runs, study)
  text = table(summary, runs, info)
  print(text)
  if not (args.no_write or args.smoke):
    write_table(ROOT / "BENCHMARKS.md", text)
  summary["machine"] = info
  summary["smoke"] = args.smoke
  summary["wall_s"] = {name: run["wall_s"] for name, run in runs.items()}
  summary["reused"] = {name: run["reused"] for name, run in runs.items() if run.get("reused")}
  summary["load"] = {name: [run["load_before"], run["load_after"]] for name, run in runs.items()}
  summary["total_wall_s"] = round(time.perf_counter() - start, 1)
  print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
  main()
