"""Run-directory files: atomic writes (a reader never sees a half-written file, even after a
kill) and the settings check that lets a rerun resume only what it would write again."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def umask_mode(mode: int = 0o666) -> int:
  """`mode` less the process umask: what open() / mkdir() would give (0o644 / 0o755 usually)."""
  umask = os.umask(0)
  os.umask(umask)
  return mode & ~umask


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
  """Writes `data` to `path` via a temporary file in the same directory and a rename.

  The file gets the mode a plain open() would (the umask's), not mkstemp's private 0600.
  """
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
  try:
    os.fchmod(fd, umask_mode(0o666))
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def first_difference(a: Any, b: Any, path: str = "") -> str:
  """`key.path: a != b` at the first (sorted) key where two JSON-like trees differ."""
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if a.get(k) != b.get(k):
        return first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
  return f"{path or 'settings'}: {a!r} != {b!r}"


def check_run_dir(run_dir: str | os.PathLike[str], settings_name: str, settings: Any,
                  what: str) -> None:
  """Refuses a run directory that holds other settings, or files that are not such a run.

  `settings` (JSON-able) must equal `run_dir/settings_name` when that file exists: a rerun then
  resumes. Otherwise the directory must be empty or absent. The errors name the first
  difference and the way out (`what` names the kind of run, e.g. "a study").
  """
  run_dir = Path(run_dir)
  settings_file = run_dir / settings_name
  way_out = "use another config.run or --config.overwrite=true"
  if settings_file.is_file():
    previous = json.loads(settings_file.read_text(encoding="utf-8"))
    current = json.loads(json.dumps(settings, default=str))
    if previous != current:
      raise ValueError(f"{run_dir} holds {what} with different settings "
                       f"({first_difference(previous, current)}); {way_out}")
  elif run_dir.exists() and any(run_dir.iterdir()):
    raise FileExistsError(f"{run_dir} exists and is not {what} (no {settings_name}); {way_out}")
