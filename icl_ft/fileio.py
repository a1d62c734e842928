"""Atomic file writes: a reader never sees a half-written file, even after a kill."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
  """Writes `data` to `path` via a temporary file in the same directory and a rename."""
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
