"""Whole-example packing into fixed-length rows, as a checkpointable grain `IterDataset`.

Examples (dicts of equal-length 1-D int arrays, `tokens` among them) are packed whole, never
split, into rows of `seq_len` tokens. `num_bins` rows are open at a time: each example goes
into the open row it fills most tightly (best fit); when it fits in none, the fullest open row
is emitted and the example starts a new row in its place. A half-full row thus stays open for
later short examples instead of being closed with the rest of its window (grain's packers
close all their bins at once), which is what brings the padding of every dataset's training
formats under 3% (BENCHMARKS.md, packing).

A row: each key concatenated over its examples, plus `positions` (0.. within each example) and
`segment_ids` (1..k in order, 0 on padding); padding at the end (`pad_values`, default 0).

The iterator's state is the source index of the next example plus the source indices in each
open row (JSON), so `set_state` continues exactly; the source must be a `grain.MapDataset`
(random access: a restored row re-reads its examples by index).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

ROW_KEYS = ("positions", "segment_ids")


class PackIterDataset(grain.IterDataset):
  """Rows of `seq_len` tokens packed from `source` (module docstring)."""

  def __init__(self, source: grain.MapDataset, *, seq_len: int, num_bins: int,
               pad_values: Mapping[str, int] | None = None):
    super().__init__()
    if seq_len < 1 or num_bins < 1:
      raise ValueError(f"seq_len and num_bins must be >= 1, got {seq_len} and {num_bins}")
    self._source = source
    self._seq_len = int(seq_len)
    self._num_bins = int(num_bins)
    self._pad_values = dict(pad_values or {})

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._source, self._seq_len, self._num_bins, self._pad_values)

  def __str__(self) -> str:
    return f"PackIterDataset(seq_len={self._seq_len}, num_bins={self._num_bins})"


class _PackIterator(grain.DatasetIterator):
  """Iterator of `PackIterDataset`; state: next source index and each open row's indices."""

  def __init__(self, source: grain.MapDataset, seq_len: int, num_bins: int,
               pad_values: Mapping[str, int]):
    super().__init__()
    self._source = source
    self._size = len(source)
    self._seq_len = seq_len
    self._num_bins = num_bins
    self._pad_values = pad_values
    self._next = 0
    self._rows: list[list[int]] = []  # source indices of each open row
    self._examples: list[list[Mapping[str, np.ndarray]]] = []  # and their examples, read once
    self._used: list[int] = []  # tokens used in each open row

  def _take(self, row: int) -> dict[str, np.ndarray]:
    """Removes open row `row` and returns it assembled."""
    self._rows.pop(row)
    self._used.pop(row)
    return self._assemble(self._examples.pop(row))

  def _assemble(self, examples: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    n = self._seq_len
    out = {key: np.full((n,), self._pad_values.get(key, 0), np.int32) for key in examples[0]}
    out.update({key: np.zeros((n,), np.int32) for key in ROW_KEYS})
    start = 0
    for segment, example in enumerate(examples, start=1):
      end = start + len(example["tokens"])
      for key, value in example.items():
        out[key][start:end] = value
      out["positions"][start:end] = np.arange(end - start)
      out["segment_ids"][start:end] = segment
      start = end
    return out

  def __next__(self) -> dict[str, np.ndarray]:
    while self._next < self._size:
      index, example = self._next, self._source[self._next]
      length = len(example["tokens"])
      self._next += 1
      fits = [r for r, used in enumerate(self._used) if used + length <= self._seq_len]
      if fits:  # best fit: the row this example fills most tightly
        row = max(fits, key=lambda r: self._used[r])
        self._rows[row].append(index)
        self._examples[row].append(example)
        self._used[row] += length
        continue
      full = None
      if len(self._rows) == self._num_bins:  # emit the fullest row, start a new one
        full = self._take(int(np.argmax(self._used)))
      self._rows.append([index])
      self._examples.append([example])
      self._used.append(length)
      if full is not None:
        return full
    if self._rows:  # a finite source is exhausted: the rest, fullest first
      return self._take(int(np.argmax(self._used)))
    raise StopIteration

  def get_state(self) -> dict[str, Any]:
    return {"next_index": self._next, "open_rows": [list(r) for r in self._rows]}

  def set_state(self, state: Mapping[str, Any]) -> None:
    if not {"next_index", "open_rows"} <= set(state):
      raise ValueError(f"not a PackIterDataset iterator state (keys {sorted(state)}); was it "
                       "saved by another version of the pipeline?")
    self._next = int(state["next_index"])
    self._rows = [[int(i) for i in r] for r in state["open_rows"]]
    self._examples = [[self._source[i] for i in r] for r in self._rows]
    self._used = [sum(len(e["tokens"]) for e in r) for r in self._examples]
