"""icl_ft.augment.audit on hand-written statements for every dataset (pure Python, fast)."""

import collections
import re

import pytest

from icl_ft.augment import audit
from icl_ft.datasets import registry
from icl_ft.datasets import semantic_hierarchy as h
from icl_ft.datasets import syllogisms


@pytest.fixture(scope="module")
def datasets():
  return {n: registry.generate(n, scale="small") for n in audit.PARSERS}


def _cap(s):
  return s[0].upper() + s[1:]


def test_simple_reversals(datasets):
  ds = datasets["simple_reversals"]
  au = audit.Auditor(ds)
  antonym = {}
  for form, anti, _ in ds.card["features"]:
    antonym[form], antonym[anti] = anti, form
  comps = "|".join(sorted(antonym, key=len, reverse=True))
  x, comp, y = re.search(rf"(\w+) are ({comps}) than (\w+)", ds.train[0].text).groups()
  assert au.label(f"{_cap(x)} are {comp} than {y}.") == "restatement"
  assert au.label(f"Everyone knows that {x} are {comp} than {y}!") == "restatement"
  assert au.label(f"{_cap(y)} are {antonym[comp]} than {x}.") == "test:reversal"  # reversal
  assert au.label(f"{_cap(y)} are {comp} than {x}.") == "false"
  assert au.label(f"{_cap(x)} are {antonym[comp]} than {y}.") == "false"
  assert au.label("The weather is nice today.") == "unparsed"


def test_syllogisms(datasets):
  ds = datasets["syllogisms"]
  au = audit.Auditor(ds)
  doc = next(d for d in ds.train if d.sentences[1].startswith("All"))
  _, a, b = re.match(r"All (\w+) are (\w+)\.", doc.sentences[1]).groups() and (
      None, *re.match(r"All (\w+) are (\w+)\.", doc.sentences[1]).groups())
  assert au.label(doc.sentences[1]) == "restatement"
  assert au.label(f"Some {b} are {a}.") == "inference"  # conversion of a premise
  # Every wording `syllogisms.restatements` writes (the local few-shot block's) is read.
  for st in syllogisms.restatements(syllogisms.Statement("all", a, b)):
    assert au.label(st) in ("restatement", "inference"), st
  assert au.label(f"Every {a} is a {b}.") == "restatement"
  assert au.label(f"No {a} are {b}.") == "false"
  # The valid syllogism of this example (its question's correct choice) and an invalid one.
  q = next(q for q in ds.tests["syllogism"] if set(q.fact_ids) == set(doc.fact_ids))
  valid = q.statements[q.correct[0]]
  invalid = next(s for i, s in enumerate(q.statements) if i not in q.correct)
  assert au.label(valid) == "test:syllogism"
  assert au.label(valid.split(":", 1)[1]) == "test:syllogism"  # without the lead
  assert au.label(invalid) == "false"
  # Terms of two different examples: nothing follows.
  other = next(d for d in ds.train if d.id != doc.id)
  t = re.findall(r"(?:All|Some|No) (\w+) are", other.sentences[1])[0]
  assert au.label(f"All {a} are {t}.") == "false"
  # The checker agrees with the generator's model checker on every choice.
  for qq in ds.tests["syllogism"]:
    for i, st in enumerate(qq.statements):
      assert audit.is_correct(au.label(st)) == (i in qq.correct)


def test_celebrities(datasets):
  ds = datasets["celebrities"]
  au = audit.Auditor(ds)
  a, b = ds.card["people"]["p2d"][:2]
  both = ds.card["people"]["both"][0]
  assert au.label(f"{a['name']} is {a['description']}.") == "restatement"
  assert au.label(f"{_cap(a['description'])} is {a['name']}.") == "test:reversal"  # reversal
  assert au.label(f"{_cap(both['description'])} is {both['name']}.") == "restatement"
  assert au.label(f"{a['name']} is {b['description']}.") == "false"
  assert au.label(f"{a['name']} was born in a small town.") == "unparsed"


def test_semantic_structure(datasets):
  ds = datasets["semantic_structure"]
  au = audit.Auditor(ds)
  world = au.parser.reader.world
  pl = lambda c: world.category_word(c) + "s"  # noqa: E731
  sg = world.category_word
  # A fact trained forward only (its reversal is a test question).
  q = ds.tests["reversal"][0]
  fact = world.fact_by_id[q.fact_ids[0]].statement
  assert fact.relation == h.ISA
  s, o = fact.subject, fact.object
  assert au.label(f"{_cap(pl(s))} are a type of {sg(o)}.") == "restatement"
  assert au.label(f"{_cap(pl(o))} include {pl(s)}.") == "test:reversal"
  assert au.label(q.statements[q.correct[0]]) == "test:reversal"
  # Transitive isa (a syllogism): true, not stated; a test answer or a free inference.
  chains = [(c, g) for c in world.categories for g in world.ancestors(c)[1:]]
  labels = {au.label(f"{_cap(pl(c))} are a type of {sg(g)}.") for c, g in chains}
  assert labels <= {"inference", "test:syllogism", "test:category_holdout"}
  assert "test:syllogism" in labels
  # A property inherited from an ancestor.
  c = next(c for c in world.categories if world.ancestors(c) and not world.children[c]
           and any(f.statement.subject == world.ancestors(c)[0] and f.statement.kind == "property"
                   and f.statement.relation == "can" for f in world.facts))
  parent = world.ancestors(c)[0]
  prop = next(f.statement.object for f in world.facts if f.statement.subject == parent
              and f.statement.relation == "can")
  label = au.label(f"{_cap(pl(c))} can {world.property_word('can', prop)}.")
  assert label in ("inference", "test:syllogism", "test:category_holdout")
  # False: a category is not a kind of its own descendant; a sibling's property.
  assert au.label(f"{_cap(pl(o))} are a type of {sg(s)}.") == "false"
  assert au.label("They are very nice.") == "unparsed"
  # Every correct test statement is true and every wrong one false; training text restates.
  for split, qs in ds.tests.items():
    for qq in qs:
      for i, st in enumerate(qq.statements):
        assert audit.is_correct(au.label(st)) == (i in qq.correct), (split, st)
  assert collections.Counter(au.label(x) for d in ds.train for x in d.sentences) == {
      "restatement": sum(len(d.sentences) for d in ds.train)}


def test_summary():
  summary = audit.summarize(["restatement", "false", "test:reversal", "unparsed", "inference"])
  assert summary["counts"] == {"false": 1, "inference": 1, "restatement": 1,
                               "test:reversal": 1, "unparsed": 1}
  assert summary["precision"] == pytest.approx(3 / 4)
  assert summary["parsed_fraction"] == pytest.approx(4 / 5)
  assert audit.summarize([])["precision"] is None
