"""Rolling best-fit packing: which examples share a row, the row layout, exact resume."""

import json

import grain
import numpy as np
import pytest

from icl_ft.pipeline import packing


def _examples(lengths):
  """Example i: tokens 100*i + 1.., loss_mask 1 on its second half."""
  return [{"tokens": np.arange(n, dtype=np.int32) + 100 * i + 1,
           "loss_mask": (np.arange(n) >= n // 2).astype(np.int32)} for i, n in enumerate(lengths)]


def _rows(lengths, seq_len, bins, **kw):
  ds = packing.PackIterDataset(grain.MapDataset.source(_examples(lengths)), seq_len=seq_len,
                               num_bins=bins, **kw)
  return list(ds)


def _members(row):
  """Example indices in a row, in order (recovered from the token ids)."""
  starts = row["tokens"][(row["positions"] == 0) & (row["segment_ids"] > 0)]
  return [int(t) // 100 for t in starts]


def test_best_fit_then_emit_the_fullest_row():
  # 6 -> A; 6 fits nowhere -> B; 4 fits both, ties -> A (10, full); 3 -> B (9); 4 fits nowhere
  # -> emit the fullest (A), 4 starts a new row; end: B (9) then the new row (4).
  rows = _rows([6, 6, 4, 3, 4], seq_len=10, bins=2, pad_values={"tokens": -7})
  assert [_members(r) for r in rows] == [[0, 2], [1, 3], [4]]
  last = rows[2]
  np.testing.assert_array_equal(last["tokens"], [401, 402, 403, 404] + [-7] * 6)
  np.testing.assert_array_equal(last["segment_ids"], [1] * 4 + [0] * 6)
  np.testing.assert_array_equal(last["positions"], [0, 1, 2, 3] + [0] * 6)
  np.testing.assert_array_equal(last["loss_mask"], [0, 0, 1, 1] + [0] * 6)
  np.testing.assert_array_equal(rows[1]["segment_ids"], [1] * 6 + [2] * 3 + [0])
  np.testing.assert_array_equal(rows[1]["positions"], list(range(6)) + [0, 1, 2, 0])


def test_every_example_once_whole_and_rows_tighter_than_closing_all_bins():
  rng = np.random.default_rng(0)
  lengths = rng.integers(20, 90, size=300).tolist()
  rows = _rows(lengths, seq_len=256, bins=8)
  members = [m for r in rows for m in _members(r)]
  assert sorted(members) == list(range(300))
  for r in rows:
    for m in _members(r):  # whole: all of example m's tokens, contiguous
      assert np.sum(r["tokens"] // 100 == m) == lengths[m]
  efficiency = np.mean([np.mean(r["segment_ids"] > 0) for r in rows[:-8]])  # but the final flush
  # grain's best-fit packer on the same stream closes all 8 rows whenever one example fits none.
  closing = grain.experimental.BestFitPackIterDataset(
      grain.MapDataset.source(_examples(lengths)).to_iter_dataset(),
      length_struct={"tokens": 256, "loss_mask": 256}, num_packing_bins=8, shuffle_bins=False)
  closing_rows = list(closing)
  baseline = np.mean([np.mean(r["tokens_segment_ids"] > 0) for r in closing_rows[:-8]])
  assert efficiency > 0.97 and efficiency > baseline + 0.02, (efficiency, baseline)
  assert len(rows) < len(closing_rows)


@pytest.mark.parametrize("cut", [0, 1, 5, 17])
def test_state_restores_exactly(cut):
  rng = np.random.default_rng(1)
  source = grain.MapDataset.source(_examples(rng.integers(3, 40, size=120).tolist()))
  ds = packing.PackIterDataset(source.shuffle(seed=3).repeat(3), seq_len=64, num_bins=4)
  want = list(ds)
  it = iter(ds)
  for _ in range(cut):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # checkpoints store it as JSON
  again = iter(ds)
  again.set_state(state)
  got = list(again)
  assert len(got) == len(want) - cut
  for a, b in zip(got, want[cut:]):
    for key in b:
      np.testing.assert_array_equal(a[key], b[key])


def test_foreign_state_is_refused():
  it = iter(packing.PackIterDataset(grain.MapDataset.source(_examples([3])), seq_len=8,
                                    num_bins=2))
  with pytest.raises(ValueError, match="not a PackIterDataset iterator state"):
    it.set_state({"parent": {}, "current_batch": None})


def test_bad_sizes_raise():
  with pytest.raises(ValueError, match="num_bins"):
    packing.PackIterDataset(grain.MapDataset.source(_examples([3])), seq_len=8, num_bins=0)
