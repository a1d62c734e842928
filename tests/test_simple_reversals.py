"""Tests for the simple reversals dataset."""

import re

import pytest

from icl_ft.datasets import records, simple_reversals, text, words

POOL = frozenset(words.pool("simple_reversals"))


@pytest.fixture(scope="module")
def paper():
  return simple_reversals.generate(simple_reversals.SCALES["paper"], seed=0)


def test_paper_counts(paper):
  assert len(paper.train) == 1000
  assert set(paper.tests) == {"reversal"}
  assert len(paper.tests["reversal"]) == 100
  assert len({d.fact_ids for d in paper.train}) == 100
  assert len(simple_reversals.FEATURES) == 28
  assert len(set(f[0] for f in simple_reversals.FEATURES) | set(f[1] for f in simple_reversals.FEATURES)) == 56
  assert len(simple_reversals.CONTEXTS) >= 20
  assert paper.card["scale"] == "paper" and paper.card["params"]["num_facts"] == 100
  counts = paper.card_with_counts()["counts"]
  assert counts == {"train_documents": 1000, "train_sentences": 1000, "test_reversal": 100}
  # Every feature is used (balanced assignment) and each fact is in 10 distinct articles.
  assert {d.metadata["feature"] for d in paper.train} == {f[0] for f in simple_reversals.FEATURES}
  by_fact = {}
  for d in paper.train:
    by_fact.setdefault(d.fact_ids, set()).add(d.text)
  assert all(len(texts) == 10 for texts in by_fact.values())


def test_small_scale():
  ds = simple_reversals.generate(simple_reversals.SCALES["small"], seed=1)
  assert len(ds.train) == 60 and len(ds.tests["reversal"]) == 20
  assert ds.card["scale"] == "small"


def test_deterministic():
  p = simple_reversals.SCALES["small"]
  a, b = simple_reversals.generate(p, seed=5), simple_reversals.generate(p, seed=5)
  assert a == b
  c = simple_reversals.generate(p, seed=6)
  assert c.train != a.train and c.tests != a.tests


def _content_words(s):
  return re.findall(r"[a-z]+", s.lower())


def test_words_come_from_pool(paper):
  template = set()
  for form, antonym, _ in simple_reversals.FEATURES:
    template.update(_content_words(form + " " + antonym))
  for c in simple_reversals.CONTEXTS:
    template.update(_content_words(c.replace("{fact}", "")))
  template.update(["are", "than"])
  assert not template & POOL
  texts = [d.text for d in paper.train] + [s for q in paper.tests["reversal"] for s in q.statements]
  used = set()
  for t in texts:
    for w in _content_words(t):
      assert w in POOL or w in template, w
      if w in POOL:
        used.add(w)
  assert len(used) == 200  # two fresh entities per fact
  for q in paper.tests["reversal"]:
    entity = q.prompt.split()[0]
    assert entity in POOL


def test_reversals_absent_from_training_and_premises_present(paper):
  # One haystack (normalization joins across documents: only makes the absence check stricter).
  train_text = ["\n".join(d.text for d in paper.train)]
  fact_docs = {}
  for d in paper.train:
    for f in d.fact_ids:
      fact_docs.setdefault(f, []).append(d)
  for q in paper.tests["reversal"]:
    assert len(q.choices) == 2 and len(q.correct) == 1 and q.correct[0] in (0, 1)
    # Neither the correct reversal nor the contradictory statement is ever trained.
    for statement in q.statements:
      assert not any(text.contains_statement(t, statement) for t in train_text), statement
    assert q.fact_ids and all(f in fact_docs for f in q.fact_ids)
    # The trained fact is the reversal's premise: same two entities, swapped, opposite comparison.
    obj = q.prompt.split()[0]
    correct = q.choices[q.correct[0]]
    wrong = q.choices[1 - q.correct[0]]
    subject = correct.rstrip(".").split()[-1]
    stated = wrong.strip().rsplit(" than ", 1)[0]
    premise = f"{subject} are {stated} than {obj}"
    assert all(text.contains_statement(d.text, premise) for d in fact_docs[q.fact_ids[0]])
  # The correct answer sits at both positions.
  assert {q.correct[0] for q in paper.tests["reversal"]} == {0, 1}
  assert {q.subset for q in paper.tests["reversal"]} == {"suffix", "more_less"}


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_facts": 201}, "num_facts"),
        ({"num_facts": 0}, "num_facts"),
        ({"num_features": 29}, "num_features"),
        ({"num_features": 0}, "num_features"),
        ({"articles_per_fact": 21}, "articles_per_fact"),
    ],
)
def test_impossible_sizes_raise(kwargs, name):
  with pytest.raises(ValueError, match=name):
    simple_reversals.generate(simple_reversals.Params(**kwargs))


def test_fewer_features():
  ds = simple_reversals.generate(simple_reversals.Params(num_facts=10, articles_per_fact=2, num_features=3))
  assert {d.metadata["feature"] for d in ds.train} == {f[0] for f in simple_reversals.FEATURES[:3]}
  assert ds.card["scale"] == "custom"


def test_write_read_round_trip(tmp_path):
  ds = simple_reversals.generate(simple_reversals.SCALES["small"], seed=3)
  first = records.write_dataset(ds, tmp_path / "a")
  loaded = records.read_dataset(first)
  assert loaded.train == ds.train and loaded.tests == ds.tests
  assert loaded.card["params"] == ds.card["params"] and loaded.card["seed"] == 3
  second = records.write_dataset(loaded, tmp_path / "b")
  for f in sorted(p.name for p in first.iterdir()):
    assert (first / f).read_bytes() == (second / f).read_bytes(), f
