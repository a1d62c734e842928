"""Summary arithmetic on a hand-made results file (values computed by hand below)."""

import json
import math

import pytest

from icl_ft import report


def _rec(dataset, split, condition, subset, qid, n_choices, correct, predicted):
  return {"dataset": dataset, "split": split, "subset": subset, "condition": condition,
          "id": qid, "choices": [{"logprob": -1.0 - i, "num_tokens": 2, "mean_logprob": -0.5}
                                 for i in range(n_choices)],
          "metric": "sum", "predicted": predicted, "correct": correct,
          "is_correct": predicted in correct}


# Group 1: syllo / syllogism / icl, two subsets.
#   subset A: q1 ok (2 choices, 1 correct), q2 wrong (2, 1), q3 ok (4, 1), q4 ok (6, 2 correct)
#   subset B: q5 wrong (6, 2 correct), q6 ok (3, 1)
#   accuracy = 4/6; subset accuracies 3/4 and 1/2, mean 5/8;
#   se = sqrt(((3/4-5/8)^2 + (1/2-5/8)^2) / (2-1)) / sqrt(2) = sqrt(2 * 1/64) / sqrt(2) = 1/8
#   chance = (1/2 + 1/2 + 1/4 + 2/6 + 2/6 + 1/3) / 6 = 2.25 / 6 = 0.375
# Group 2: rev / reversal / pretrained, one subset: 2 of 5 correct, 2 choices each
#   accuracy 0.4; se = sqrt(0.4 * 0.6 / 5) = sqrt(0.048); chance 0.5
# Group 3: syllo / syllogism / pretrained, three subsets with accuracies 1, 0, 1/2
#   accuracy 2/4 = 0.5 (X: 1/1, Y: 0/1, Z: 1/2); subset mean 1/2;
#   se = sqrt((1/4 + 1/4 + 0) / 2) / sqrt(3) = 0.5 / sqrt(3); chance (1/2 * 4) / 4 = 0.5
RECORDS = [
    _rec("syllo", "syllogism", "icl", "A", "q1", 2, [0], 0),
    _rec("syllo", "syllogism", "icl", "A", "q2", 2, [1], 0),
    _rec("syllo", "syllogism", "icl", "A", "q3", 4, [2], 2),
    _rec("syllo", "syllogism", "icl", "A", "q4", 6, [1, 4], 4),
    _rec("syllo", "syllogism", "icl", "B", "q5", 6, [0, 3], 5),
    _rec("syllo", "syllogism", "icl", "B", "q6", 3, [2], 2),
    _rec("rev", "reversal", "pretrained", "s", "r1", 2, [0], 0),
    _rec("rev", "reversal", "pretrained", "s", "r2", 2, [0], 1),
    _rec("rev", "reversal", "pretrained", "s", "r3", 2, [1], 1),
    _rec("rev", "reversal", "pretrained", "s", "r4", 2, [1], 0),
    _rec("rev", "reversal", "pretrained", "s", "r5", 2, [0], 1),
    _rec("syllo", "syllogism", "pretrained", "X", "p1", 2, [0], 0),
    _rec("syllo", "syllogism", "pretrained", "Y", "p2", 2, [0], 1),
    _rec("syllo", "syllogism", "pretrained", "Z", "p3", 2, [0], 0),
    _rec("syllo", "syllogism", "pretrained", "Z", "p4", 2, [1], 0),
]


@pytest.fixture
def results_file(tmp_path):
  path = tmp_path / "questions.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
  return path


def test_summary_by_hand(results_file):
  rows = report.summarize(report.read_results(results_file))
  assert [tuple(r[k] for k in ("dataset", "split", "condition")) for r in rows] == [
      ("syllo", "syllogism", "icl"), ("rev", "reversal", "pretrained"),
      ("syllo", "syllogism", "pretrained")]
  assert all(tuple(r) == report.SUMMARY_KEYS for r in rows)
  icl, rev, pre = rows
  assert icl["n"] == 6 and icl["accuracy"] == pytest.approx(4 / 6)
  assert icl["se"] == pytest.approx(0.125)
  assert icl["chance"] == pytest.approx(0.375)
  assert rev["n"] == 5 and rev["accuracy"] == pytest.approx(0.4)
  assert rev["se"] == pytest.approx(math.sqrt(0.048))
  assert rev["chance"] == pytest.approx(0.5)
  assert pre["n"] == 4 and pre["accuracy"] == pytest.approx(0.5)
  assert pre["se"] == pytest.approx(0.5 / math.sqrt(3))
  assert pre["chance"] == pytest.approx(0.5)


def test_partial_last_line_is_ignored_but_a_bad_middle_line_is_an_error(results_file):
  text = results_file.read_text()
  results_file.write_text(text + '{"dataset": "syl')
  assert len(report.read_results(results_file)) == len(RECORDS)
  lines = text.splitlines(keepends=True)
  results_file.write_text("".join(lines[:3]) + "not json\n" + "".join(lines[3:]))
  with pytest.raises(report.ResultsFormatError, match=r"questions.jsonl:4"):
    report.read_results(results_file)


def test_markdown_tables(results_file):
  rows = report.summarize(report.read_results(results_file))
  table = report.markdown_table(rows)
  lines = table.strip().splitlines()
  assert lines[0] == "| dataset | split | condition | accuracy | SE | n | chance |"
  assert lines[2] == "| syllo | syllogism | icl | 0.667 | 0.125 | 6 | 0.375 |"
  assert lines[3] == "| rev | reversal | pretrained | 0.400 | 0.219 | 5 | 0.500 |"
  pivot = report.pivot_table(rows).strip().splitlines()
  assert pivot[0] == "| dataset | split | icl | pretrained | chance |"
  assert pivot[2] == "| syllo | syllogism | 0.667 ± 0.125 | 0.500 ± 0.289 | 0.500 |"
  assert pivot[3] == "| rev | reversal |  | 0.400 ± 0.219 | 0.500 |"


def test_read_summary_round_trip(tmp_path, results_file):
  rows = report.summarize(report.read_results(results_file))
  (tmp_path / "summary.json").write_text(json.dumps(rows))
  assert report.read_summary(tmp_path) == rows
  (tmp_path / "summary.json").write_text(json.dumps([{"dataset": "x"}]))
  with pytest.raises(report.ResultsFormatError):
    report.read_summary(tmp_path)
