"""Tests for the semantic_structure dataset: world model, documents, test splits."""

import collections
import dataclasses
import re

import pytest

from icl_ft.datasets import (records, semantic_documents, semantic_hierarchy, semantic_phrasing,
                             semantic_structure, text, words)
from icl_ft.datasets.semantic_hierarchy import ISA, Statement, World

POOL = frozenset(words.pool("semantic_structure"))
TEMPLATE_WORDS = semantic_phrasing.template_words()
_TOKEN = re.compile(r"[A-Za-z]+")


@pytest.fixture(scope="module")
def paper():
  return semantic_structure.generate_with_world(semantic_structure.SCALES["paper"], seed=0)


@pytest.fixture(scope="module")
def small():
  return semantic_structure.generate_with_world(semantic_structure.SCALES["small"], seed=1)


@pytest.fixture(params=["paper", "small"])
def generated(request, paper, small):
  return {"paper": paper, "small": small}[request.param]


def _tokens(s: str) -> list[str]:
  return [t.lower() for t in _TOKEN.findall(s)]


class _Training:
  """Training documents indexed by word, to find the few that could contain a statement."""

  def __init__(self, docs):
    self.docs = docs
    self.by_word = collections.defaultdict(set)
    for i, d in enumerate(docs):
      for t in set(_tokens(d.text)):
        self.by_word[t].add(i)

  def containing(self, statement: str) -> list[records.Document]:
    nonsense = [t for t in _tokens(statement) if t not in TEMPLATE_WORDS]
    candidates = set.intersection(*(self.by_word[t] for t in nonsense)) if nonsense else range(len(self.docs))
    return [self.docs[i] for i in sorted(candidates) if text.contains_statement(self.docs[i].text, statement)]


def _stated(docs) -> set[str]:
  return {fid for d in docs for fid in d.fact_ids}


# ---- The world model, on hand-checked cases. ----


def test_english_hierarchy():
  cats = semantic_hierarchy.english_categories()
  assert len(cats) == 110 and len(set(cats)) == 110
  world = World(cats)
  assert world.ancestors("dog") == ("mammal", "animal", "living thing")
  assert world.ancestors("robin") == ("songbird", "bird", "animal", "living thing")
  assert set(world.children["bird of prey"]) == {"eagle", "owl", "hawk"}
  for c in cats:
    own = [f for f in world.facts if f.statement.subject == c and f.statement.kind == "property"]
    assert 1 <= len(own) <= 6, c


def test_holds_inheritance_and_chains():
  world = World(semantic_hierarchy.english_categories())
  S = Statement
  assert world.holds(S(ISA, "dog", "mammal")) and world.holds(S(ISA, "dog", "living thing"))
  assert not world.holds(S(ISA, "mammal", "dog")) and not world.holds(S(ISA, "dog", "dog"))
  assert world.holds(S("can", "robin", "fly"))  # songbirds can fly
  assert not world.holds(S("can", "penguin", "fly")) and not world.holds(S("can", "bird", "fly"))
  assert world.holds(S("has", "penguin", "feathers")) and world.holds(S("is", "penguin", "alive"))
  assert world.holds(S("eats", "robin", "seed"))  # songbird eats seed
  assert world.holds(S("is kept in", "apple", "kitchen"))  # food is kept in the kitchen
  assert world.derivation(S("can", "robin", "fly")) == ("isa:robin:songbird", "can:songbird:fly")
  assert world.derivation(S(ISA, "robin", "animal")) == ("isa:robin:songbird", "isa:songbird:bird", "isa:bird:animal")
  assert world.derivation(S("is kept in", "apple", "kitchen")) == (
      "isa:apple:fruit", "isa:fruit:food", "is_kept_in:food:kitchen")
  with pytest.raises(ValueError, match="does not hold"):
    world.derivation(S("can", "penguin", "fly"))
  with pytest.raises(ValueError, match="relation"):
    S("likes", "dog", "cat")


def test_definitely_false_excludes_undecided_statements():
  world = World(semantic_hierarchy.english_categories())
  S = Statement
  assert world.definitely_false(S("can", "penguin", "fly"))
  assert not world.definitely_false(S("can", "bird", "fly"))  # some birds can: undecided
  assert not world.definitely_false(S("can", "robin", "fly"))  # true
  # Owls eat rodents (bird of prey) and mice: "owls eat squirrels" concerns a rodent.
  assert not world.holds(S("eats", "owl", "squirrel"))
  assert not world.definitely_false(S("eats", "owl", "squirrel"))
  assert world.definitely_false(S("eats", "owl", "grass"))
  assert world.definitely_false(S(ISA, "dog", "bird")) and not world.definitely_false(S(ISA, "dog", "dog"))


def test_lexicon_is_seeded_and_from_pool():
  a = semantic_hierarchy.make_lexicon(words.pool("semantic_structure"), seed=0)
  assert a == semantic_hierarchy.make_lexicon(words.pool("semantic_structure"), seed=0)
  assert a != semantic_hierarchy.make_lexicon(words.pool("semantic_structure"), seed=1)
  assert set(a) == set(semantic_hierarchy.lexemes())
  assert len(set(a.values())) == len(a) and set(a.values()) <= POOL
  assert {"category:dog", "can:fly", "has:wings", "is:red", "verb:eats", "can:bark", "has:bark"} <= set(a)
  assert a["can:bark"] != a["has:bark"]  # lexemes, not English spellings, get words


# ---- Generation: sizes, determinism, errors. ----


def test_paper_counts(paper):
  ds, world = paper.dataset, paper.world
  assert len(world.categories) == 110 and len(ds.card["categories"]) == 110
  assert len(ds.train) == 2200
  assert all(4 <= len(d.sentences) <= 20 for d in ds.train)
  assert {len(d.sentences) for d in ds.train} == set(range(4, 21))
  assert set(ds.tests) == set(semantic_structure.SPLITS)
  for split in ("rephrase", "reversal", "syllogism"):
    assert len(ds.tests[split]) == 300
  assert 150 <= len(ds.tests["category_holdout"]) <= 400
  assert len(world.holdouts) == 20
  assert ds.card["scale"] == "paper" and ds.card["num_choices"] == 4
  assert set(ds.card["formats"]) == set(semantic_documents.FORMATS)
  subsets = {s: {q.subset for q in qs} for s, qs in ds.tests.items()}
  assert subsets["rephrase"] == {"category_rephrase", "property_rephrase", "relation_rephrase"}
  assert subsets["reversal"] == {"category_reversal", "property_reversal", "relation_reversal"}
  assert {"chain2_category", "chain2_property", "chain2_relation", "chain3_category", "chain3_property",
          "chain4plus_property"} <= subsets["syllogism"]
  assert subsets["category_holdout"] == {"holdout_category", "holdout_property", "holdout_relation",
                                         "holdout_reversal"}
  assert ds.card_with_counts()["counts"]["train_documents"] == 2200


def test_small_scale(small):
  ds = small.dataset
  assert len(small.world.categories) == 24 and len(ds.train) == 64
  assert all(4 <= len(d.sentences) <= 5 for d in ds.train)
  assert all(len(ds.tests[s]) == 40 for s in ("rephrase", "reversal", "syllogism"))
  assert len(ds.tests["category_holdout"]) >= 10
  # Small enough to put the whole training set in a tiny model's context (~4k tokens).
  assert ds.card["train_characters"] == len("\n\n".join(d.text for d in ds.train)) < 12_000


def test_deterministic():
  p = semantic_structure.SCALES["small"]
  a = semantic_structure.generate(p, seed=2)
  assert a == semantic_structure.generate(p, seed=2)
  b = semantic_structure.generate(p, seed=3)
  assert a.train != b.train and a.tests != b.tests
  world = semantic_structure.build_world(p, seed=2)
  assert world.facts == semantic_structure.generate_with_world(p, seed=2).world.facts
  assert world.lexicon == a.card["lexicon"]
  assert sorted(world.holdouts) == sorted(a.card["holdout_categories"])


@pytest.mark.parametrize("seed", [4, 5, 6, 7])
def test_small_scale_other_seeds(seed):
  ds = semantic_structure.generate(semantic_structure.SCALES["small"], seed=seed)
  assert len(ds.train) == 64 and all(len(ds.tests[s]) == 40 for s in ("rephrase", "reversal", "syllogism"))


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"num_categories": 111}, "num_categories"),
        ({"num_categories": 3}, "num_categories"),
        ({"num_documents": 10}, "num_documents"),
        ({"num_holdout_categories": 500}, "num_holdout_categories"),
        ({"num_holdout_categories": -1}, "num_holdout_categories"),
        ({"num_rephrase_questions": 100_000}, "num_rephrase_questions"),
        ({"num_reversal_questions": 100_000}, "num_reversal_questions"),
        ({"num_syllogism_questions": -1}, "num_syllogism_questions"),
        ({"num_choices": 1}, "num_choices"),
        ({"min_sentences": 7, "max_sentences": 5}, "min_sentences"),
        ({"num_choices": 200}, "num_rephrase_questions"),  # no fact has 199 wrong answers
    ],
)
def test_impossible_sizes(overrides, name):
  params = dataclasses.replace(semantic_structure.SCALES["small"], **overrides)
  with pytest.raises(ValueError, match=name):
    semantic_structure.generate(params)


# ---- Training documents. ----


def test_words_are_nonsense_or_template(generated):
  ds, world = generated.dataset, generated.world
  assert not TEMPLATE_WORDS & POOL
  assert all(words.is_english_word(w) for w in TEMPLATE_WORDS), sorted(
      w for w in TEMPLATE_WORDS if not words.is_english_word(w))
  lexicon_words = set(world.lexicon.values())
  assert lexicon_words <= POOL
  allowed = TEMPLATE_WORDS | lexicon_words | {w + "s" for w in lexicon_words}
  texts = [d.text for d in ds.train] + [s for qs in ds.tests.values() for q in qs for s in q.statements]
  for t in texts:
    bad = [w for w in _tokens(t) if w not in allowed]
    assert not bad, (bad, t)
  # English content words never appear (e.g. the category and property names).
  english = {"dog", "mammal", "animal", "wings", "fly", "red", "eats", "chases", "kitchen"}
  assert not english & set(_tokens("\n".join(texts)))


def test_documents_state_every_fact_and_record_units(generated):
  ds, world = generated.dataset, generated.world
  assert _stated(ds.train) == {f.id for f in world.facts}
  ids = [d.id for d in ds.train]
  assert len(set(ids)) == len(ids)
  forms = semantic_phrasing.Forms(world)
  for d in ds.train:
    units = d.metadata["sentence_fact_ids"]
    assert len(units) == len(d.sentences) and all(units), d.text  # every unit states something
    assert set(d.fact_ids) == {f for u in units for f in u}
    assert set(d.metadata["reversed_fact_ids"]) <= set(d.fact_ids)
    assert d.metadata["format"] in semantic_documents.FORMATS and d.metadata["focus"] in world.categories
    position = 0
    for sentence, fids in zip(d.sentences, units):
      position = d.text.index(sentence, position)  # the units, in order, make up the text
      toks = set(_tokens(sentence))
      for fid in fids:
        st = world.fact_by_id[fid].statement
        assert set(_tokens(forms.object_form(st.relation, st.object) if st.relation != ISA else forms.sg(st.object))) & (
            toks | {t[:-1] for t in toks}), (fid, sentence)


def test_documents_state_base_facts_only(generated):
  """No inherited statement is ever stated (so syllogism conclusions are new)."""
  world = generated.world
  base = {f.id for f in world.facts}
  for d in generated.dataset.train:
    assert set(d.fact_ids) <= base


def test_holdouts_appear_only_in_their_parent_fact(generated):
  ds, world = generated.dataset, generated.world
  forms = semantic_phrasing.Forms(world)
  assert world.holdouts
  parent_fact = {h: semantic_hierarchy.fact_id(Statement(ISA, h, world.parent[h])) for h in world.holdouts}
  for h in world.holdouts:
    assert [f.id for f in world.facts if h in (f.statement.subject, f.statement.object)] == [parent_fact[h]]
  holdout_of = {w: h for h in world.holdouts for w in (forms.sg(h), forms.pl(h))}
  mentions = collections.Counter()
  for d in ds.train:
    for sentence, fids in zip(d.sentences, d.metadata["sentence_fact_ids"]):
      for h in {holdout_of[t] for t in _tokens(sentence) if t in holdout_of}:
        mentions[h] += 1
        assert fids == [parent_fact[h]], (h, sentence, fids)
        assert parent_fact[h] not in d.metadata["reversed_fact_ids"], sentence
  assert set(mentions) == set(world.holdouts)


# ---- Test questions. ----


def test_questions_well_formed(generated):
  ds, world = generated.dataset, generated.world
  k = ds.card["num_choices"]
  ids = [q.id for qs in ds.tests.values() for q in qs]
  assert len(ids) == len(set(ids))
  for split, qs in ds.tests.items():
    for q in qs:
      assert q.split == split and len(q.choices) == k and len(set(q.choices)) == k
      assert len(q.correct) == 1 and 0 <= q.correct[0] < k
      assert q.choices[q.correct[0]].startswith(" ") and q.prompt and not q.prompt.endswith(" ")
      assert q.fact_ids and all(f in world.fact_by_id for f in q.fact_ids)
      statements = generated.choice_statements[q.id]
      assert len(statements) == k
      correct = statements[q.correct[0]]
      assert world.holds(correct)
      assert world.derivation(correct) == q.fact_ids


def test_distractors_are_hard_and_false(generated):
  """Each wrong choice is false of the question's entity and true of some other entity."""
  ds, world = generated.dataset, generated.world
  objects = collections.defaultdict(set)  # relation -> objects in the knowledge base
  for f in world.facts:
    objects[f.statement.relation].add(f.statement.object)
  for qs in ds.tests.values():
    for q in qs:
      statements = generated.choice_statements[q.id]
      correct = statements[q.correct[0]]
      for i, st in enumerate(statements):
        if i == q.correct[0]:
          continue
        assert st.relation == correct.relation
        assert not world.holds(st) and world.definitely_false(st), (q.id, st)
        if st.subject == correct.subject:  # the object is the answer
          assert st.object != correct.object
          assert any(world.holds(Statement(st.relation, x, st.object)) for x in world.categories if x != st.subject)
        else:  # the subject is the answer
          assert st.object == correct.object
          assert any(world.holds(Statement(st.relation, st.subject, o)) for o in objects[st.relation])


def test_statement_search_finds_training_sentences(generated):
  """The absence checks below can see a statement when it is there."""
  docs = generated.dataset.train
  training = _Training(docs)
  for d in docs[:: max(1, len(docs) // 50)]:
    for sentence in d.sentences:
      assert d in training.containing(sentence.lstrip("- "))


def test_inference_statements_absent_from_training_but_premises_trained(generated):
  ds = generated.dataset
  training = _Training(ds.train)
  stated = _stated(ds.train)
  reversed_anywhere = {f for d in ds.train for f in d.metadata["reversed_fact_ids"]}
  for split in ("reversal", "syllogism", "category_holdout"):
    for q in ds.tests[split]:
      statement = q.prompt + q.choices[q.correct[0]]
      assert not training.containing(statement), (split, statement, training.containing(statement)[:1])
      assert set(q.fact_ids) <= stated, q
  for q in ds.tests["reversal"]:
    assert q.fact_ids[0] not in reversed_anywhere
  for q in ds.tests["category_holdout"]:
    assert q.fact_ids[0] not in reversed_anywhere  # the held-out category's parent fact


def test_syllogisms_are_chains_of_trained_facts(generated):
  ds, world = generated.dataset, generated.world
  base = {f.statement for f in world.facts}
  for q in ds.tests["syllogism"]:
    conclusion = generated.choice_statements[q.id][q.correct[0]]
    assert conclusion not in base and conclusion.subject not in world.holdouts
    n, kind = re.fullmatch(r"chain(\d|4plus)_(\w+)", q.subset).groups()
    assert kind == conclusion.kind
    assert len(q.fact_ids) == (int(n) if n != "4plus" else len(q.fact_ids)) >= 2
    if n == "4plus":
      assert len(q.fact_ids) >= 4


def test_rephrase_uses_held_out_phrasings(generated):
  ds = generated.dataset
  training = _Training(ds.train)
  stated = _stated(ds.train)
  normalized = text.normalize("\n".join(d.text for d in ds.train))
  for marker in semantic_phrasing.REPHRASE_MARKERS:
    assert f" {marker} " not in f" {normalized} ", marker
  for q in ds.tests["rephrase"]:
    statement = q.prompt + q.choices[q.correct[0]]
    assert not training.containing(statement), statement
    assert len(q.fact_ids) == 1 and q.fact_ids[0] in stated
    assert any(m in text.normalize(q.prompt) for m in semantic_phrasing.REPHRASE_MARKERS), q.prompt


def test_holdout_split_asks_every_inference(generated):
  ds, world = generated.dataset, generated.world
  forward = collections.defaultdict(set)
  reversal = set()
  for q in ds.tests["category_holdout"]:
    st = generated.choice_statements[q.id][q.correct[0]]
    assert st.subject in world.holdouts
    (reversal if q.subset == "holdout_reversal" else forward[st.subject]).add(st)
    assert q.subset == ("holdout_reversal" if st == Statement(ISA, st.subject, world.parent[st.subject])
                        else f"holdout_{st.kind}")
  for h in world.holdouts:
    parent = Statement(ISA, h, world.parent[h])
    assert parent in reversal
    expected = set(world.true_statements(h)) - {parent}
    assert forward[h] <= expected
    if len(world.categories) == 110:  # at paper scale every inference has enough distractors
      assert forward[h] == expected, (h, expected - forward[h])
  skipped = sum(len(world.true_statements(h)) for h in world.holdouts) - len(ds.tests["category_holdout"])
  assert ds.card["holdout_inferences_skipped"] == skipped >= 0
  if len(world.categories) == 110:
    assert skipped == 0
