"""The `no_knowledge` transform: every nonsense word and celebrity name replaced by a fresh word."""

from __future__ import annotations

import re

import pytest

from icl_ft.datasets import celebrities
from icl_ft.datasets import celebrities_original
from icl_ft.datasets import records
from icl_ft.datasets import registry
from icl_ft.datasets import relabel
from icl_ft.datasets import words
from icl_ft.pretrain import corpus as corpus_lib

WORD = re.compile(r"[A-Za-z]+")
FRESH = frozenset(relabel.fresh_pool())
# Every pool except the fresh one, read from the word file directly (not through relabel).
POOLS = frozenset(w for ns, ws in words.pools().items() if ns != "no_knowledge" for w in ws)


def _stem(token: str) -> str:
  low = token.lower()
  return low[:-1] if low not in POOLS | FRESH and low.endswith("s") else low


def _is_nonsense(token: str) -> bool:
  return _stem(token) in POOLS


def _questions(ds: records.Dataset) -> list[records.Question]:
  return [q for qs in ds.tests.values() for q in qs]


@pytest.fixture(scope="module", params=registry.NAMES)
def pair(request):
  ds = registry.generate(request.param, "small", seed=0)
  return ds, relabel.relabel(ds, seed=0)


def test_structure_is_kept(pair):
  ds, out = pair
  assert out.name == ds.name and list(out.tests) == list(ds.tests)
  for q, r in zip(_questions(ds), _questions(out), strict=True):
    assert (r.id, r.split, r.subset, r.correct, r.fact_ids) == (q.id, q.split, q.subset, q.correct,
                                                               q.fact_ids)
    assert len(r.choices) == len(q.choices)
  assert len(out.train) == len(ds.train)


def test_every_nonsense_word_replaced_by_one_consistent_fresh_word(pair):
  ds, out = pair
  names = [p["name"] for group in ds.card.get("people", {}).values() for p in group]
  name_words = {w.lower() for n in names for w in WORD.findall(n)}
  mapping: dict[str, str] = {}
  replaced = 0
  for q, r in zip(_questions(ds), _questions(out)):
    for old, new in zip((q.prompt, *q.choices), (r.prompt, *r.choices)):
      a, b = WORD.findall(old), WORD.findall(new)
      assert len(a) == len(b), (old, new)  # one word for one word: the template is kept
      for x, y in zip(a, b):
        in_name = x.lower() in name_words and any(n in old for n in names)
        if not (_is_nonsense(x) or in_name):
          assert x == y, (old, new)
          continue
        replaced += 1
        key, value = (x.lower(), y.lower()) if in_name else (_stem(x), _stem(y))
        assert x != y and value in FRESH, (x, y)
        assert mapping.setdefault(key, value) == value, f"{x} mapped two ways"
        assert x[0].isupper() == y[0].isupper()
        assert in_name or x.endswith("s") == y.endswith("s")  # the plural is kept
        assert (x[0].lower() in "aeiou") == (y[0].lower() in "aeiou")  # "an" stays right
      assert not any(n in new for n in names), new
  assert replaced > 0
  assert len(set(mapping.values())) == len(mapping)  # injective: distinct stays distinct


def test_no_nonsense_word_left_anywhere(pair):
  _, out = pair
  texts = [d.text for d in out.train] + [t for q in _questions(out) for t in (q.prompt, *q.choices)]
  for t in texts:
    assert not [w for w in WORD.findall(t) if _is_nonsense(w)], t


def test_deterministic_and_seeded():
  ds = registry.generate("simple_reversals", "small", seed=0)
  assert relabel.relabel(ds, seed=0) == relabel.relabel(ds, seed=0)
  assert relabel.relabel(ds, seed=0).tests != relabel.relabel(ds, seed=1).tests


def test_relabel_many_holds_every_mapping_s_questions():
  ds = registry.generate("simple_reversals", "small", seed=0)
  many = relabel.relabel_many(ds, 3, seed=5)
  draws = [relabel.relabel(ds, seed=s) for s in (5, 6, 7)]
  assert many.train == draws[0].train and many.card["relabelled"]["seeds"] == [5, 6, 7]
  for split, qs in many.tests.items():
    assert len(qs) == 3 * len(ds.tests[split])
    for q in qs:
      k = relabel.relabelling_index(q.id)
      original = q.id[: -len(f"{relabel.RELABELLING_MARK}{k}")]
      want = next(d for d in draws[k].tests[split] if d.id == original)
      assert (q.prompt, q.choices, q.correct) == (want.prompt, want.choices, want.correct)
  assert relabel.relabel_many(ds, 1, seed=5) == draws[0]  # one mapping: ids unchanged
  assert relabel.relabelling_index("reversal_0001") is None
  assert relabel.relabelling_index("x@relabelling12") == 12
  with pytest.raises(ValueError, match="relabellings must be >= 1, got 0"):
    relabel.relabel_many(ds, 0)


def test_fresh_words_never_in_any_document():
  assert len(FRESH) >= 1000 and not FRESH & POOLS
  assert not FRESH & set(words.pool("pretraining"))
  for name in registry.NAMES:
    for scale in ("small", "paper"):
      ds = registry.generate(name, scale, seed=0)
      tokens = {w.lower() for t in relabel._texts(ds) for w in WORD.findall(t)}  # pylint: disable=protected-access
      assert not {_stem(w) for w in tokens} & FRESH, (name, scale)
  corpus = corpus_lib.generate(corpus_lib.Params(num_episodes=120), seed=0)
  tokens = {w.lower() for d in corpus.train for w in WORD.findall(d.text)}
  assert len(tokens & set(words.pool("pretraining"))) > 200
  assert not (tokens | {w[:-1] for w in tokens if w.endswith("s")}) & FRESH


def test_original_release_names_are_replaced(tmp_path):
  ds = registry.generate("celebrities", "small", seed=0)
  loaded = celebrities_original.load_original(celebrities_original.write_original_layout(ds, tmp_path), seed=0)
  out = relabel.relabel(loaded)
  names = [p["name"] for group in ds.card["people"].values() for p in group]
  assert set(relabel.celebrity_names(loaded)) == set(names)
  texts = [d.text for d in out.train] + [t for q in _questions(out) for t in (q.prompt, *q.choices)]
  assert not [n for n in names for t in texts if n in t]
  for d, e in zip(loaded.train, out.train):  # the prompt/completion boundary moved with the name
    start = e.metadata["completion_start"]
    assert e.text[start:] == relabel.make_relabelling(loaded).text(d.text[d.metadata["completion_start"]:])


def test_bad_fresh_words():
  ds = registry.generate("syllogisms", "small", seed=0)
  with pytest.raises(ValueError, match="too few"):
    relabel.relabel(ds, fresh=sorted(FRESH)[:10])
  with pytest.raises(ValueError, match="nonsense words of a dataset pool"):
    relabel.relabel(ds, fresh=[*sorted(FRESH), words.pool("syllogisms")[0]])
