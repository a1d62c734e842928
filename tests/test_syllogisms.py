"""Tests for the syllogisms dataset and its model checker."""

import re

import pytest

from icl_ft.datasets import records, syllogisms, text, words
from icl_ft.datasets.syllogisms import Statement

POOL = frozenset(words.pool("syllogisms"))


def All(a, b):  # pylint: disable=invalid-name
  return Statement("all", a, b)


def Some(a, b):  # pylint: disable=invalid-name
  return Statement("some", a, b)


def No(a, b):  # pylint: disable=invalid-name
  return Statement("no", a, b)


# ---- The model checker against textbook cases (expected answers written by hand). ----


def test_barbara():
  premises = [All("A", "B"), All("B", "C")]
  assert syllogisms.valid(premises, All("A", "C"))
  assert syllogisms.valid(premises, Some("A", "C"))  # subalternation: existential import
  assert syllogisms.valid(premises, Some("C", "A"))
  assert not syllogisms.valid(premises, All("C", "A"))
  assert not syllogisms.valid(premises, No("A", "C"))
  assert not syllogisms.valid(premises, No("C", "A"))


def test_celarent_and_darii():
  assert syllogisms.valid([No("M", "P"), All("S", "M")], No("S", "P"))
  assert syllogisms.valid([No("M", "P"), All("S", "M")], No("P", "S"))
  assert not syllogisms.valid([No("M", "P"), All("S", "M")], Some("S", "P"))
  assert syllogisms.valid([All("M", "P"), Some("S", "M")], Some("S", "P"))
  assert not syllogisms.valid([All("M", "P"), Some("S", "M")], All("S", "P"))


def test_darapti_needs_existential_import():
  premises = [All("M", "P"), All("M", "S")]
  assert syllogisms.valid(premises, Some("S", "P"))
  assert not syllogisms.valid(premises, All("S", "P"))
  assert not syllogisms.valid(premises, All("P", "S"))


def test_undistributed_middle_is_invalid():
  premises = [All("P", "M"), All("S", "M")]
  for c in syllogisms.conclusions("S", "P"):
    assert not syllogisms.valid(premises, c), c


def test_two_particular_or_two_negative_premises_give_nothing():
  for premises in ([Some("M", "P"), Some("S", "M")], [No("M", "P"), No("S", "M")]):
    assert not any(syllogisms.valid(premises, c) for c in syllogisms.conclusions("S", "P"))


def test_conversions_and_models():
  assert syllogisms.valid([Some("A", "B")], Some("B", "A"))
  assert syllogisms.valid([No("A", "B")], No("B", "A"))
  assert not syllogisms.valid([All("A", "B")], All("B", "A"))
  assert len(syllogisms.models(["A"])) == 1
  assert len(syllogisms.models(["A", "B"])) == 5  # of the 8 region sets, those with A and B non-empty
  with pytest.raises(ValueError, match="no model"):
    syllogisms.valid([All("A", "B"), No("A", "B")], Some("B", "A"))


def test_usable_forms_are_the_traditional_valid_moods():
  # Valid forms with A/I/E conclusions under existential import: Barbara (AA1), Darii (AI1),
  # Celarent (EA1), Cesare (EA2), Camestres (AE2), Darapti (AA3), Datisi (AI3), Disamis (IA3),
  # Bramantip (AA4), Dimaris (IA4), Camenes (AE4). Forms valid only for O conclusions (Ferio,
  # Felapton, ...) are excluded since "some ... are not" is not offered.
  expected = {"AA1", "AI1", "EA1", "EA2", "AE2", "AA3", "AI3", "IA3", "AA4", "IA4", "AE4"}
  assert set(syllogisms.usable_forms()) == expected
  assert syllogisms.form_premises("AA1", "troff", "glon", "yomp") == (All("glon", "yomp"), All("troff", "glon"))
  with pytest.raises(ValueError, match="form"):
    syllogisms.form_premises("AO1")


def test_statement_text():
  assert All("troff", "yomp").text() == "All troff are yomp."
  assert syllogisms.lead_sentence(["glon", "troff", "yomp"]) == "The relationships between glon, troff and yomp are:"
  assert syllogisms.lead_sentence(["yomp", "troff"]) == "The relationships between yomp and troff are:"
  with pytest.raises(ValueError, match="quantifier"):
    Statement("most", "a", "b")


# ---- The dataset. ----


@pytest.fixture(scope="module")
def paper():
  return syllogisms.generate(syllogisms.SCALES["paper"], seed=0)


def test_paper_counts(paper):
  assert len(paper.train) == 69
  assert set(paper.tests) == {"syllogism"}
  assert len(paper.tests["syllogism"]) == 69
  assert paper.card["scale"] == "paper"
  assert paper.card_with_counts()["counts"] == {"train_documents": 69, "train_sentences": 207, "test_syllogism": 69}
  assert {q.subset for q in paper.tests["syllogism"]} == set(syllogisms.usable_forms())


def test_small_and_deterministic():
  p = syllogisms.SCALES["small"]
  a = syllogisms.generate(p, seed=2)
  assert len(a.train) == 20 and len(a.tests["syllogism"]) == 20
  assert a == syllogisms.generate(p, seed=2)
  b = syllogisms.generate(p, seed=3)
  assert a.train != b.train and a.tests != b.tests


def test_words_come_from_pool(paper):
  template = {"the", "relationships", "between", "and", "are", "all", "some", "no"}
  assert not template & POOL
  for d in paper.train:
    ws = re.findall(r"[a-z]+", d.text.lower())
    assert all(w in POOL or w in template for w in ws), d.text
    assert len({w for w in ws if w in POOL}) == 3
  for q in paper.tests["syllogism"]:
    for s in q.statements:
      assert all(w in POOL or w in template for w in re.findall(r"[a-z]+", s.lower())), s


def test_questions_and_training_text(paper):
  # One haystack (normalization joins across documents: only makes the absence check stricter).
  train_text = ["\n".join(d.text for d in paper.train)]
  premise_docs = {}
  for d in paper.train:
    assert d.text == " ".join(d.sentences) and len(d.sentences) == 3
    assert d.sentences[0].startswith("The relationships between ")
    for f in d.fact_ids:
      premise_docs.setdefault(f, []).append(d)
  for q in paper.tests["syllogism"]:
    assert len(q.choices) == 6 and len(set(q.choices)) == 6
    assert q.correct and len(q.correct) < 6 and all(0 <= i < 6 for i in q.correct)
    assert q.prompt.startswith("The relationships between ") and q.prompt.endswith(" are:")
    for i in q.correct:
      statement = q.prompt + q.choices[i]
      assert not any(text.contains_statement(t, statement) for t in train_text), statement
      # Nor the bare conclusion.
      assert not any(text.contains_statement(t, q.choices[i]) for t in train_text), q.choices[i]
    assert len(q.fact_ids) == 2 and all(f in premise_docs for f in q.fact_ids)
    # The premises' document is about the same end terms.
    doc = premise_docs[q.fact_ids[0]][0]
    ends = set(re.findall(r"between (\w+) and (\w+) are", q.prompt)[0])
    assert ends <= set(re.findall(r"[a-z]+", doc.sentences[0]))
    # Re-derive `correct` from the document's own premise sentences.
    premises = []
    for sentence in doc.sentences[1:]:
      quant, subj, _, pred = sentence.rstrip(".").split()
      premises.append(Statement(quant.lower(), subj, pred))
    derived = []
    for i, c in enumerate(q.choices):
      quant, subj, _, pred = c.strip().rstrip(".").split()
      if syllogisms.valid(premises, Statement(quant.lower(), subj, pred)):
        derived.append(i)
    assert tuple(derived) == q.correct


def test_variation_in_order(paper):
  # Premise order and lead-sentence term order vary across examples.
  major_first = sum(d.fact_ids[0].endswith("_major") for d in paper.train)
  assert 0 < major_first < len(paper.train)
  assert len({q.correct for q in paper.tests["syllogism"]}) > 3


@pytest.mark.parametrize("n", [0, 134])
def test_impossible_sizes_raise(n):
  with pytest.raises(ValueError, match="num_examples"):
    syllogisms.generate(syllogisms.Params(num_examples=n))


def test_write_read_round_trip(tmp_path, paper):
  first = records.write_dataset(paper, tmp_path / "a")
  loaded = records.read_dataset(first)
  assert loaded.train == paper.train and loaded.tests == paper.tests
  second = records.write_dataset(loaded, tmp_path / "b")
  for f in ("train.jsonl", "test_syllogism.jsonl", "card.json"):
    assert (first / f).read_bytes() == (second / f).read_bytes(), f
