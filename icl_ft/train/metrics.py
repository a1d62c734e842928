"""Training metrics: a JSONL log and TensorBoard event files (no TensorFlow needed).

`MetricsWriter(workdir)` appends one JSON object per record to `workdir/metrics.jsonl` and
writes scalars to `workdir/tensorboard/events.out.tfevents.*` (the TFRecord-framed `Event`
protos TensorBoard reads, encoded here by hand: a few fields of two protos and a CRC32C).
Only process 0 writes; on other processes the writer is a no-op.

On resume, `truncate_after(step)` drops JSONL records of steps after the restored checkpoint
(written by the killed run and about to be redone), so the log of a resumed run reads as one
uninterrupted run. TensorBoard shows the later of two events with the same step.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from icl_ft import fileio

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tensorboard"

# ---------------------------------------------------------------------------
# CRC32C (Castagnoli) and TFRecord framing
# ---------------------------------------------------------------------------


def _crc32c_table() -> list[int]:
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for b in data:
    crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data, its masked CRC."""
  header = struct.pack("<Q", len(data))
  return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


def read_tfrecords(path: str | os.PathLike[str]) -> Iterator[bytes]:
  """The records of a TFRecord file (CRCs checked)."""
  with open(path, "rb") as f:
    while header := f.read(8):
      (length,) = struct.unpack("<Q", header)
      (hcrc,) = struct.unpack("<I", f.read(4))
      if hcrc != _masked_crc(header):
        raise ValueError(f"{path}: corrupt record header")
      data = f.read(length)
      (dcrc,) = struct.unpack("<I", f.read(4))
      if dcrc != _masked_crc(data):
        raise ValueError(f"{path}: corrupt record data")
      yield data


# ---------------------------------------------------------------------------
# The Event / Summary protos (tensorflow/core/util/event.proto, summary.proto)
# ---------------------------------------------------------------------------


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: Mapping[str, float] | None = None) -> bytes:
  """An `Event` proto: wall_time (1), step (2), file_version (3) or summary (5) of scalars."""
  out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
  if file_version is not None:
    out += _len_field(3, file_version.encode())
  if scalars:
    summary = b""
    for tag, value in scalars.items():
      # Summary.Value: tag (1), simple_value (2, float).
      v = _len_field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", float(value))
      summary += _len_field(1, v)
    out += _len_field(5, summary)
  return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
  shift = n = 0
  while True:
    b = buf[i]
    i += 1
    n |= (b & 0x7F) << shift
    shift += 7
    if not b & 0x80:
      return n, i


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
  i = 0
  while i < len(buf):
    key, i = _read_varint(buf, i)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, i = _read_varint(buf, i)
    elif wire == 1:
      value, i = buf[i:i + 8], i + 8
    elif wire == 5:
      value, i = buf[i:i + 4], i + 4
    elif wire == 2:
      length, i = _read_varint(buf, i)
      value, i = buf[i:i + length], i + length
    else:
      raise ValueError(f"unsupported wire type {wire}")
    yield field, wire, value


def decode_event(data: bytes) -> dict[str, Any]:
  """Inverse of `encode_event` (for tests): {wall_time, step, file_version?, scalars}."""
  out: dict[str, Any] = {"step": 0, "scalars": {}}
  for field, _, value in _fields(data):
    if field == 1:
      out["wall_time"] = struct.unpack("<d", value)[0]
    elif field == 2:
      out["step"] = value
    elif field == 3:
      out["file_version"] = value.decode()
    elif field == 5:
      for f, _, v in _fields(value):
        if f == 1:
          tag, simple = None, None
          for f2, _, v2 in _fields(v):
            if f2 == 1:
              tag = v2.decode()
            elif f2 == 2:
              simple = struct.unpack("<f", v2)[0]
          out["scalars"][tag] = simple
  return out


def read_events(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """All events of the event files in `directory`, file by file in name order."""
  events = []
  for name in sorted(os.listdir(directory)):
    if name.startswith("events.out.tfevents."):
      events.extend(decode_event(r) for r in read_tfrecords(os.path.join(directory, name)))
  return events


class EventFileWriter:
  """Appends scalar summaries to a new TensorBoard event file in `logdir`."""

  def __init__(self, logdir: str | os.PathLike[str]):
    os.makedirs(logdir, exist_ok=True)
    now = time.time()
    name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.0"
    self.path = os.path.join(logdir, name)
    self._f = open(self.path, "ab")
    self._f.write(tfrecord(encode_event(now, 0, file_version="brain.Event:2")))
    self._f.flush()

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
    if finite:
      self._f.write(tfrecord(encode_event(time.time(), int(step), scalars=finite)))

  def flush(self) -> None:
    self._f.flush()

  def close(self) -> None:
    self._f.close()


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
