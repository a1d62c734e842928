"""Training metrics: a JSONL log and TensorBoard event files (no TensorFlow needed).

`MetricsWriter(workdir)` appends one JSON object per record to `workdir/metrics.jsonl` and
writes scalars to `workdir/tensorboard/events.out.tfevents.*` through tensorboardX.
Only process 0 writes; on other processes the writer is a no-op.

On resume, `truncate_after(step)` drops JSONL records of steps after the restored checkpoint
(written by the killed run and about to be redone), so the log of a resumed run reads as one
uninterrupted run. TensorBoard shows the later of two events with the same step.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from tensorboardX import SummaryWriter

from icl_ft import fileio

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"


class EventFileWriter:
  """Scalar summaries in a TensorBoard event file under `logdir` (written by tensorboardX)."""

  def __init__(self, logdir: str | os.PathLike[str]):
    # A live TensorBoard sees new points within half a minute; close() writes the rest.
    self._writer = SummaryWriter(logdir=os.fspath(logdir), flush_secs=30)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    """Writes the finite values (TensorBoard draws NaN/inf as gaps at best)."""
    for tag, value in values.items():
      if value is not None and math.isfinite(float(value)):
        self._writer.add_scalar(tag, float(value), int(step))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


# ---------------------------------------------------------------------------
# JSONL + TensorBoard
# ---------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """All records of a metrics JSONL file."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _jsonable(v: Any) -> Any:
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/inf; keep it readable ("nan")
  return v


class MetricsWriter:
  """JSONL + TensorBoard scalars under `workdir`; a no-op unless `enabled` (process 0)."""

  def __init__(self, workdir: str | os.PathLike[str], *, enabled: bool = True,
               tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(os.fspath(workdir), METRICS_FILE)
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(self.path, "a")
    if tensorboard:
      self._tb = EventFileWriter(os.path.join(os.fspath(workdir), TB_DIR))

  def truncate_after(self, step: int) -> None:
    """Drops records with `step` > `step` (atomically: temporary file, then rename)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    self._jsonl.close()
    keep = []
    with open(self.path) as f:
      lines = f.readlines()
    for i, line in enumerate(lines):
      try:
        r = json.loads(line)
      except json.JSONDecodeError:
        if i == len(lines) - 1:  # a line cut short by a killed run
          continue
        raise
      if int(r.get("step", 0)) <= step:
        keep.append(r)
    fileio.atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in keep))
    self._jsonl = open(self.path, "a")

  def write(self, step: int, record: Mapping[str, Any], *, scalars: Iterable[str] | None = None
            ) -> None:
    """One JSONL line {"step": step, **record}; numeric fields (or `scalars`) go to TB too."""
    if not self.enabled:
      return
    line = {"step": int(step), **{k: _jsonable(v) for k, v in record.items()}}
    self._jsonl.write(json.dumps(line) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      keys = scalars if scalars is not None else [
          k for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
      self._tb.scalars(step, {k: record[k] for k in keys if k in record})

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None
