"""Runs every benchmark in bench/, writes the summary table into BENCHMARKS.md, prints one JSON.

    python bench/run_all.py [--only train,forward] [--skip scoring] [--no_write]
                            [--study_json results/default/study.json]

Each `bench/*.py` (not `_*.py`, not this file) runs as its own process with the arguments in
`ARGS` (chosen so the whole run takes tens of minutes on the 2-core CPU box, not hours); its
last stdout line is its JSON result. `bench/sampling.py` runs when present. The study's wall
time is read from `study.json` of an `icl-ft-study` run (`study_wall_s`, else its `seconds`)
when the binary is installed and the file exists; otherwise `study_wall_s` is null and
`study_note` says why (a full study run takes longer than this script should). The table
between the markers `<!-- run_all:begin -->` / `<!-- run_all:end -->` in BENCHMARKS.md is
replaced (appended if missing; atomic write). The last line is one JSON object with the
headline figures, the load averages and the per-benchmark wall times.
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
    "scoring": ["--questions", "40", "--warmup", "4", "--naive_batch", "4"],
    "sampling": [],
    "train": [],
    "forward": [],
    "profile_step": ["--size", "small", "--reps", "3"],
}

# (key in the summary, target, comparison) for the table and the `targets_met` map.
TARGETS = {
    "train_ratio_vs_hf_small": 1.3, "train_ratio_vs_hf_medium": 1.3,
    "train_peak_fraction_medium": 0.5, "fwd_ratio_vs_hf_small": 1.0,
    "fwd_ratio_vs_hf_medium": 1.0, "icl_scoring_speedup": 20.0, "decode_ratio_vs_hf": 3.0,
    "packing_efficiency_min": 0.97,
}
STUDY_TARGET_S = 15 * 60


def benchmarks(only: set[str], skip: set[str]) -> list[str]:
  """Names of the bench/*.py scripts to run, in ARGS order, then the rest alphabetically."""
  found = sorted(p.stem for p in BENCH.glob("*.py")
                 if not p.stem.startswith("_") and p.stem != "run_all")
  names = [n for n in ARGS if n in found] + [n for n in found if n not in ARGS]
  return [n for n in names if (not only or n in only) and n not in skip]


def run_bench(name: str) -> dict:
  """Runs bench/<name>.py; its last-line JSON plus wall seconds, load and return code."""
  cmd = [sys.executable, str(BENCH / f"{name}.py"), *ARGS.get(name, [])]
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
          "command": "python bench/" + " ".join([f"{name}.py", *ARGS.get(name, [])]),
          "load_before": load, "load_after": [round(x, 2) for x in os.getloadavg()]}


def study_wall(study_json: Path) -> tuple[float | None, str]:
  """(study wall seconds, note) from an icl-ft-study run's study.json."""
  if shutil.which("icl-ft-study") is None:
    return None, "icl-ft-study is not installed"
  if not study_json.exists():
    return None, (f"no {study_json} (run `icl-ft-study --config=configs/study.py` first; "
                  "run_all does not start a full study)")
  try:
    data = json.loads(study_json.read_text())
  except (OSError, json.JSONDecodeError) as e:
    return None, f"unreadable {study_json}: {e}"
  wall = data.get("study_wall_s", data.get("seconds"))
  if wall is None:
    return None, f"{study_json} has neither study_wall_s nor seconds"
  return float(wall), f"from {study_json}"


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
      "study_wall_s": study[0],
      "study_note": study[1],
  }
  met = {k: (out[k] >= t if out[k] is not None else None) for k, t in TARGETS.items()}
  met["study_wall_s"] = None if study[0] is None else study[0] <= STUDY_TARGET_S
  out["targets_met"] = met
  return out


def _fmt(x) -> str:
  if x is None:
    return "n/a"
  return f"{x:.3g}" if isinstance(x, float) else str(x)


def table(summary: dict, runs: dict[str, dict]) -> str:
  """Markdown: headline figures vs targets, then one line per benchmark run."""
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
  lines = [f"Last `python bench/run_all.py`: {now}, {platform.machine()} "
           f"{os.cpu_count()} cores, Python {platform.python_version()}.", "",
           "| figure | value | target | met |", "|---|---:|---:|:---:|"]
  targets = dict(TARGETS, study_wall_s=STUDY_TARGET_S)
  for key, target in targets.items():
    met = summary["targets_met"].get(key)
    mark = "n/a" if met is None else ("yes" if met else "**no**")
    cmp = "<=" if key == "study_wall_s" else ">="
    lines.append(f"| `{key}` | {_fmt(summary.get(key))} | {cmp} {target:g} | {mark} |")
  lines += ["", f"study: {summary['study_note']}.", "",
            "| benchmark | command | wall s | load before -> after | status |",
            "|---|---|---:|---|---|"]
  for name, run in runs.items():
    status = "ok" if run["result"] else f"failed (rc {run['rc']})"
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
  parser.add_argument("--no_write", action="store_true", help="do not touch BENCHMARKS.md")
  args = parser.parse_args()

  only = {s for s in args.only.split(",") if s}
  skip = {s for s in args.skip.split(",") if s}
  start = time.perf_counter()
  runs = {name: run_bench(name) for name in benchmarks(only, skip)}
  study_json = Path(args.study_json)
  summary = summarize(runs, study_wall(study_json if study_json.is_absolute()
                                       else ROOT / study_json))
  text = table(summary, runs)
  print(text)
  if not args.no_write:
    write_table(ROOT / "BENCHMARKS.md", text)
  summary["wall_s"] = {name: run["wall_s"] for name, run in runs.items()}
  summary["load"] = {name: [run["load_before"], run["load_after"]] for name, run in runs.items()}
  summary["total_wall_s"] = round(time.perf_counter() - start, 1)
  print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
  main()
