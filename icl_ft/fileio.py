"""Run-directory files: atomic writes (a reader never sees a half-written file, even after a
kill), the settings check that lets a rerun resume only what it would write again, and the
run-directory lock that keeps a second process out of a directory in use, and the portable
form of the paths such files record (`$RUN_DIR/...`, `$REPO/...`) so results can be moved."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
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


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def portable_paths(obj: Any, run_dir: str | os.PathLike[str], repo: str = REPO_ROOT) -> Any:
  """`obj` with this machine's paths made relative, for results that are committed or moved.

  A path under the run directory becomes `$RUN_DIR/...` (its results directory `$RUN_DIR/..`),
  one under the repository `$REPO/...`; a path given relative to the working directory that
  starts with the run directory as given counts as under it. Other strings are unchanged.
  """
  given = os.fspath(run_dir)
  run_abs = os.path.abspath(given)
  bases = ((run_abs, "$RUN_DIR"), (os.path.dirname(run_abs), "$RUN_DIR/.."), (os.path.abspath(repo), "$REPO"))

  def one(value: Any) -> Any:
    if isinstance(value, dict):
      return {k: one(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
      return [one(v) for v in value]
    if not isinstance(value, str) or not value:
      return value
    if os.path.isabs(value):
      path = os.path.normpath(value)
    elif value == given or value.startswith(given.rstrip(os.sep) + os.sep):
      path = os.path.abspath(value)
    else:
      return value
    for base, name in bases:
      if path == base or path.startswith(base.rstrip(os.sep) + os.sep):
        rel = os.path.relpath(path, base)
        return name if rel == "." else f"{name}/{rel}"
    return value

  return one(obj)


def check_run_dir(run_dir: str | os.PathLike[str], settings_name: str, settings: Any,
                  what: str) -> None:
  """Refuses a run directory that holds other settings, or files that are not such a run.

  `settings` (JSON-able) must equal `run_dir/settings_name` (paths compared as
  `portable_paths` writes them) when that file exists: a rerun then
  resumes. Otherwise the directory must be empty or absent. The errors name the first
  difference and the way out (`what` names the kind of run, e.g. "a study").
  """
  run_dir = Path(run_dir)
  settings_file = run_dir / settings_name
  way_out = "use another config.run or --config.overwrite=true"
  if settings_file.is_file():
    # Compared as written (`portable_paths`); files written with absolute paths still match.
    previous = portable_paths(json.loads(settings_file.read_text(encoding="utf-8")), run_dir)
    current = portable_paths(json.loads(json.dumps(settings, default=str)), run_dir)
    if previous != current:
      raise ValueError(f"{run_dir} holds {what} with different settings "
                       f"({first_difference(previous, current)}); {way_out}")
  elif run_dir.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
    raise FileExistsError(f"{run_dir} exists and is not {what} (no {settings_name}); {way_out}")


# ---------------------------------------------------------------------------
# Run-directory lock
# ---------------------------------------------------------------------------

LOCK_FILE = ".lock"


class RunDirLockedError(OSError):
  """Another process holds the run directory's lock."""


@contextlib.contextmanager
def run_dir_lock(run_dir: str | os.PathLike[str], what: str = "run",
                 enabled: bool = True) -> Iterator[None]:
  """Holds an exclusive lock on `run_dir` (created if absent) for the duration of the block.

  An OS lock (`flock` on `run_dir/.lock`), taken without waiting: a second process gets a
  one-line RunDirLockedError at once, and a killed holder releases it with its file
  descriptors, so no stale lock outlives a crash. The lock file is removed on exit, and so
  are the directories this call created if the block left them empty (a run refused on bad
  input leaves nothing behind).
  `enabled=False` (non-writing processes of a multi-host run) does nothing.
  """
  if not enabled:
    yield
    return
  run_dir = os.path.abspath(os.fspath(run_dir))
  created = []  # the directories made here, innermost first
  d = run_dir
  while not os.path.isdir(d):
    created.append(d)
    d = os.path.dirname(d)
  os.makedirs(run_dir, exist_ok=True)
  path = os.path.join(run_dir, LOCK_FILE)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      raise RunDirLockedError(
          f"{run_dir} is in use by another {what} (it holds {LOCK_FILE}); wait for it to "
          f"finish or use another directory") from None
    # The holder we waited on may have removed the file before releasing it: lock the file
    # that is at `path` now, or another process could lock a new one beside us.
    try:
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  try:
    os.write(fd, f"{os.getpid()}\n".encode())
    yield
  finally:
    with contextlib.suppress(OSError):
      os.remove(path)
    os.close(fd)
    for d in created:
      try:
        os.rmdir(d)  # only if empty
      except OSError:
        break
