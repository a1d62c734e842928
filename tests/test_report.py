"""Summary arithmetic on a hand-made results file (values computed by hand below)."""

import json
import math

import pytest

from icl_ft.evaluation import report


def _rec(dataset, split, condition, subset, qid, n_choices, correct, predicted):
  return {"dataset": dataset, "split": split, "subset": subset, "condition": condition,
          "id": qid, "choices": [{"logprob": -1.0 - i, "num_tokens": 2, "mean_logprob": -0.5}
                                 for i in range(n_choices)],
          "metric": "sum", "predicted": predicted, "correct": correct,
          "is_correct": predicted in correct}


# Group 1: syllo / syllogism / icl, two subsets.
#   subset A: q1 ok (2 choices, 1 correct), q2 wrong (2, 1), q3 ok (4, 1), q4 ok (6, 2 correct)
#   subset B: q5 wrong (6, 2 correct), q6 ok (3, 1)
#   accuracy p = 4/6; se = sqrt(p (1 - p) / n) = sqrt((2/3)(1/3) / 6) = sqrt(1/27);
#   subset accuracies 3/4 and 1/2, mean 5/8;
#   subset_se = sqrt(((3/4-5/8)^2 + (1/2-5/8)^2) / (2-1)) / sqrt(2) = sqrt(2 * 1/64) / sqrt(2) = 1/8
#   chance = (1/2 + 1/2 + 1/4 + 2/6 + 2/6 + 1/3) / 6 = 2.25 / 6 = 0.375
# Group 2: rev / reversal / pretrained, one subset: 2 of 5 correct, 2 choices each
#   accuracy 0.4; se = sqrt(0.4 * 0.6 / 5) = sqrt(0.048); subset_se None (one subset); chance 0.5
# Group 3: syllo / syllogism / pretrained, three subsets with accuracies 1, 0, 1/2
#   accuracy 2/4 = 0.5 (X: 1/1, Y: 0/1, Z: 1/2); se = sqrt(0.25 / 4) = 0.25;
#   subset mean 1/2, subset_se = sqrt((1/4 + 1/4 + 0) / 2) / sqrt(3) = 0.5 / sqrt(3); chance 0.5
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
  assert icl["se"] == pytest.approx(math.sqrt(1 / 27))
  assert icl["subset_se"] == pytest.approx(0.125) and icl["subsets"] == 2
  assert len(icl["by_subset"]) == 2  # [correct, n] per subset, adding up to the row
  assert [sum(v[i] for v in icl["by_subset"].values()) for i in (0, 1)] == [4, 6]
  assert icl["chance"] == pytest.approx(0.375)
  assert rev["n"] == 5 and rev["accuracy"] == pytest.approx(0.4)
  assert rev["se"] == pytest.approx(math.sqrt(0.048))
  assert rev["subset_se"] is None and rev["subsets"] == 1
  assert rev["chance"] == pytest.approx(0.5)
  assert pre["n"] == 4 and pre["accuracy"] == pytest.approx(0.5)
  assert pre["se"] == pytest.approx(0.25)
  assert pre["subset_se"] == pytest.approx(0.5 / math.sqrt(3)) and pre["subsets"] == 3
  assert pre["chance"] == pytest.approx(0.5)


@pytest.mark.parametrize("outcomes", [
    {"a": [True, False], "b": [True, False]},  # equal subset accuracies: subset SE 0
    {"a": [True, True, False, False, True, False]},  # a single subset
    {"a": [True], "b": [False], "c": [True, False]},
])
def test_se_is_positive_for_any_accuracy_strictly_between_0_and_1(outcomes):
  recs = [_rec("d", "s", "c", sub, f"{sub}{i}", 2, [0], 0 if ok else 1)
          for sub, oks in outcomes.items() for i, ok in enumerate(oks)]
  (row,) = report.summarize(recs)
  n = len(recs)
  p = sum(sum(v) for v in outcomes.values()) / n
  assert 0 < p < 1 and n > 1
  assert row["se"] == pytest.approx(math.sqrt(p * (1 - p) / n)) and row["se"] > 0
  if len(outcomes) == 2:
    assert row["subset_se"] == 0.0  # why the subset SE is never the reported one
  assert "± 0.000" not in report.pivot_table([row])


def test_se_is_zero_only_at_the_ends_and_undefined_without_questions():
  assert report.standard_error(0.0, 10) == 0.0 and report.standard_error(1.0, 10) == 0.0
  assert report.standard_error(0.1, 10) > 0
  assert math.isnan(report.standard_error(0.5, 0))
  assert report.subset_standard_error({"a": [True, False]}) is None


def test_pooling_seed_rows_equals_summarizing_the_pooled_records():
  recs = []
  for seed, oks in ((0, [1, 0, 0, 1, 1]), (1, [0, 0, 0, 1, 0]), (2, [1, 1, 1, 1, 0])):
    recs += [{**_rec("d", "s", "ft", "ab"[i % 2], f"q{i}", 3 if i else 2, [0], 0 if ok else 1),
              "seed": seed} for i, ok in enumerate(oks)]
  recs += [{**_rec("d", "s", "icl", "a", "q0", 2, [0], 0), "seed": 0}]
  per_seed = [{**row, "seed": seed} for seed in (0, 1, 2)
              for row in report.summarize(r for r in recs if r["seed"] == seed)]
  pooled = report.pool_seeds(per_seed)
  direct = report.summarize(recs)
  assert [(r["condition"], r["n"]) for r in pooled] == [("ft", 15), ("icl", 1)]
  for got, want in zip(pooled, direct):
    for key in ("dataset", "split", "condition", "n", "subsets"):
      assert got[key] == want[key], key
    for key in ("accuracy", "se", "chance"):
      assert got[key] == pytest.approx(want[key]), key
    assert got["subset_se"] is None  # needs the per-question records
    assert got["by_subset"] == want["by_subset"]  # the per-subset counts pool too
  assert pooled[0]["accuracy"] == pytest.approx(8 / 15)  # 3 + 1 + 4 correct
  assert pooled[0]["by_subset"] == {"a": [4, 9], "b": [4, 6]}
  assert pooled[0]["se"] == pytest.approx(math.sqrt(8 / 15 * 7 / 15 / 15))


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
  assert lines[0] == ("| dataset | split | condition | accuracy | SE | subset SE | subsets | n | "
                      "chance |")
  assert lines[2] == "| syllo | syllogism | icl | 0.667 | 0.192 | 0.125 | 2 | 6 | 0.375 |"
  assert lines[3] == "| rev | reversal | pretrained | 0.400 | 0.219 |  | 1 | 5 | 0.500 |"
  # Columns in CONDITION_ORDER (pretrained before icl), whatever order the rows come in.
  pivot = report.pivot_table(rows).strip().splitlines()
  assert pivot[0] == "| dataset | split | pretrained | icl | chance |"
  assert pivot[2] == "| syllo | syllogism | 0.500 ± 0.250 | 0.667 ± 0.192 | 0.500 |"
  assert pivot[3] == "| rev | reversal | 0.400 ± 0.219 |  | 0.500 |"
  subset = report.pivot_table(rows, se_key="subset_se").strip().splitlines()
  assert subset[2] == "| syllo | syllogism | 0.500 ± 0.289 | 0.667 ± 0.125 | 0.500 |"
  assert subset[3] == "| rev | reversal | 0.400 |  | 0.500 |"  # one subset: no subset SE


def test_one_condition_order_and_colour_for_every_table_and_figure():
  from icl_ft.config import schema

  # The study's conditions are a sub-sequence of the one order (no_knowledge after pretrained).
  assert [c for c in report.CONDITION_ORDER if c in schema.STUDY_CONDITIONS] == list(schema.STUDY_CONDITIONS)
  assert report.CONDITION_ORDER[:3] == ("pretrained", "no_knowledge", "icl")
  assert set(report.CONDITION_COLORS) == set(report.CONDITION_ORDER)
  assert len(set(report.CONDITION_COLORS.values())) == len(report.CONDITION_COLORS)
  shuffled = ["ft_aug_all", "icl", "x", "ft", "pretrained", "ft_split", "no_knowledge"]
  assert report.order_conditions(shuffled) == [
      "pretrained", "no_knowledge", "icl", "ft", "ft_split", "ft_aug_all", "x"]
  colors = report.condition_colors(shuffled + ["run:icl"])
  assert colors["icl"] == report.CONDITION_COLORS["icl"]
  assert colors["run:icl"] == report.OTHER_COLORS[0] and colors["x"] == report.OTHER_COLORS[1]
  rows = [{"dataset": "d", "split": s, "condition": c, "accuracy": 0.5, "se": 0.1, "n": 2,
           "chance": 0.5} for s in ("s2", "s1") for c in shuffled]
  ordered = report.order_rows(rows, splits={"d": ["s1", "s2"]})
  assert [r["condition"] for r in ordered[:7]] == report.order_conditions(shuffled)
  assert [r["split"] for r in ordered] == ["s1"] * 7 + ["s2"] * 7
  assert report.pivot_table(rows).splitlines()[0] == (
      "| dataset | split | " + " | ".join(report.order_conditions(shuffled)) + " | chance |")


STAGES = [  # as study.json's "stages" / stages/augment__*.json hold them
    {"key": "augment/d/local_s0", "kind": "augment",
     "info": {"audit": {"total": 10, "correct": 3, "precision": 0.6,
                        "counts": {"restatement": 2, "test:s": 1, "false": 2, "unparsed": 5}}}},
    {"key": "augment/d/local_s1", "kind": "augment",
     "info": {"audit": {"total": 4, "correct": 0, "precision": None,
                        "counts": {"unparsed": 4}}}},
    {"key": "augment/d/global_s0", "kind": "augment",
     "info": {"audit": {"total": 2, "correct": 1, "precision": 0.5,
                        "counts": {"inference": 1, "false": 1}}}},
    {"key": "train/d/ft_s0", "kind": "train", "info": {}},
]


def test_augmentation_usability_per_dataset_and_kind():
  audits = report.audits_from_stages(STAGES)
  assert [(a["source"], a["strategy"], a["seed"]) for a in audits] == [
      ("d", "local", 0), ("d", "local", 1), ("d", "global", 0)]
  pooled = report.pool_audits(audits)
  # local: 14 generated; parsed = true + false = 3 + 2; true 3. global: 2, 2, 1.
  assert [(p["kind"], p["cards"], p["generated"], p["parsed"], p["true"]) for p in pooled] == [
      ("local", 2, 14, 5, 3), ("global", 1, 2, 2, 1)]
  lines = report.usability_table(audits).splitlines()
  assert lines[0].startswith("| dataset | kind | seeds | generated | parsed | true |")
  assert lines[2].startswith("| d | local | 2 | 14 | 5 | 3 | 35.7 | 0.600 | false 2, ")
  assert lines[3].startswith("| d | global | 1 | 2 | 2 | 1 | 100.0 | 0.500 |")


FT = [{"dataset": "d", "condition": c, "seed": 0, "steps": 10, "batch_size": 8, "seq_len": sl,
       "loss_tokens_seen": tok, "epochs": ep, "target_tokens_per_epoch": tok / ep}
      for c, sl, tok, ep in (("ft", 256, 2000, 40.0), ("ft_split", 128, 1000, 19.0))]


def test_finetuning_note_claims_only_what_the_records_show():
  note = report.finetuning_note(FT)
  assert "the same steps (10)" in note and "the same batch size (8)" in note
  assert "the same seq len" not in note and "seq len 128, 256" in note
  assert "1000-2000 (2.00x)" in note and "epochs 19.0-40.0" in note
  same = report.finetuning_note([{**f, "seq_len": 128, "loss_tokens_seen": 1000} for f in FT])
  assert "the same seq len (128)" in same and "(1.00x)" in same


def test_study_table_states_the_se_tokens_epochs_and_usability():
  rows = [{"dataset": "d", "split": "s", "condition": c, "accuracy": 0.5, "se": 0.1, "n": 20,
           "chance": 0.25, "subset_se": 0.0 if c == "icl" else None, "subsets": 2}
          for c in ("ft", "icl")]
  table = report.study_table("r", rows, [0, 1], {"d": {0: 2, 1: 2}}, FT,
                             report.audits_from_stages(STAGES))
  assert "binomial standard error over question evaluations" in table
  assert "| d | s | 0.500 ± 0.100 | 0.500 ± 0.100 | 0.250 |" in table  # icl before ft
  assert "| d | s | 0.500 ± 0.000 | 0.500 | 0.250 |" in table  # the subset SE, labelled
  assert "the paper's standard error across question subsets" in table
  assert "ICL documents subsample factor: d 2." in table
  assert "| d | local | 2 | 14 | 5 | 3 |" in table
  assert "seq len 128, 256" in table and "the same documents" not in table
  assert "`" not in table.splitlines()[0]


def test_read_summary_round_trip(tmp_path, results_file):
  rows = report.summarize(report.read_results(results_file))
  (tmp_path / "summary.json").write_text(json.dumps(rows))
  assert report.read_summary(tmp_path) == rows
  (tmp_path / "summary.json").write_text(json.dumps([{"dataset": "x"}]))
  with pytest.raises(report.ResultsFormatError):
    report.read_summary(tmp_path)
