"""The study's stages: run once per run directory, each leaving a completion marker with its
timing and what it produced (stages/<stage>.json); a rerun skips marked stages."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from icl_ft import fileio
from icl_ft.evaluation import evaluate


def to_json(obj: Any) -> str:
  """`obj` as the study's JSON files hold it: indented, sorted keys, one trailing newline."""
  return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


@dataclasses.dataclass
class StageRecord:
  """One stage of the study: what it was, how long it took, what it produced."""

  key: str  # e.g. "train/simple_reversals/ft_s0"
  kind: str  # data | tokenizer | augment | train | eval | report
  seconds: float
  resumed: bool  # finished by an earlier call (seconds are that call's)
  info: dict[str, Any]
  # Process CPU time (all threads): on a shared machine, what the stage cost regardless of load.
  cpu_seconds: float = 0.0


class Stages:
  """Runs stages in order; a stage with a completion marker is skipped."""

  def __init__(self, run_dir: Path, total: int, progress: bool):
    self.dir = run_dir / "stages"
    self.total = total
    self.progress = progress
    self.records: list[StageRecord] = []
    self._done: dict[str, dict[str, Any]] = {}  # key -> info, for stages already seen this call

  def _say(self, text: str) -> None:
    if self.progress:
      print(f"[study {len(self.records) + 1}/{self.total}] {text}", flush=True)

  def run(self, key: str, kind: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`fn()` once per run directory: its info (a stage asked for again is neither re-run nor
    recorded twice; one finished by an earlier call is recorded as resumed)."""
    if key in self._done:
      return self._done[key]
    self._done[key] = info = self._run(key, kind, fn)
    return info

  def _run(self, key: str, kind: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    marker = self.dir / (key.replace("/", "__") + ".json")
    if marker.is_file() and has_duplicates(kind, marker):
      marker.unlink()  # an unlocked older run scored questions twice: the rerun repairs it
    if marker.is_file():
      done = json.loads(marker.read_text(encoding="utf-8"))
      self._say(f"{key}: done earlier ({done['seconds']:.1f} s), skipped")
      self.records.append(StageRecord(key, kind, float(done["seconds"]), True, done["info"],
                                      float(done.get("cpu_seconds", 0.0))))
      return done["info"]
    self._say(f"{key} ...")
    start, cpu = time.perf_counter(), time.process_time()
    info = fn() or {}
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    fileio.atomic_write(marker, to_json({"key": key, "kind": kind, "seconds": seconds,
                                         "cpu_seconds": cpu, "info": info}))
    if self.progress:
      print(f"[study {len(self.records) + 1}/{self.total}] {key}: {seconds:.1f} s "
            f"(cpu {cpu:.1f} s)", flush=True)
    self.records.append(StageRecord(key, kind, seconds, False, info, cpu))
    return info


def has_duplicates(kind: str, marker: Path) -> bool:
  """Whether a finished eval stage's questions.jsonl holds a question twice."""
  if kind != "eval":
    return False
  info = json.loads(marker.read_text(encoding="utf-8")).get("info", {})
  path = Path(info.get("dir", "")) / evaluate.QUESTIONS_FILE
  return bool(info.get("dir")) and path.is_file() and evaluate.has_duplicate_records(path)


def clear_run_dir(run_dir: Path) -> None:
  """Deletes everything in `run_dir` but its lock file (held by this process)."""
  for child in run_dir.iterdir():
    if child.name == fileio.LOCK_FILE:
      continue
    if child.is_dir() and not child.is_symlink():
      shutil.rmtree(child)
    else:
      child.unlink()


def enable_compilation_cache(path: str | os.PathLike[str]) -> None:
  """Points JAX's persistent compilation cache at `path` (every program, however fast to compile)."""
  path = os.path.abspath(os.fspath(path))
  if jax.config.jax_compilation_cache_dir == path:
    return
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  try:  # JAX reads the settings once, at the first compile; make it read them again
    # A private module (it may move between JAX versions), hence imported here, guarded.
    from jax._src import compilation_cache  # pylint: disable=g-import-not-at-top

    compilation_cache.reset_cache()
  except (ImportError, AttributeError):
    pass
