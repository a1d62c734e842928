"""ICL context shards: each question's facts in its shard, every shard within the budget."""

from __future__ import annotations

import pytest

from icl_ft.datasets import registry
from icl_ft.evaluation import contexts
from icl_ft.evaluation import prompts
from icl_ft.inference import prefill
from icl_ft.model import loader
from icl_ft.model.tokenizer import Tokenizer

FMT = prompts.PromptFormat()


@pytest.fixture(scope="module")
def tok():
  return Tokenizer(loader.default_asset("tokenizer.model"))


def _questions(ds):
  return [q for qs in ds.tests.values() for q in qs]


def _full_tokens(tok, ds):
  return len(prefill.encode_context(tok, prompts.context_text(ds.train, 1, 0, FMT)))


# Budgets far below the whole set (1089, 6052, 4605 tokens): several shards each.
@pytest.mark.parametrize("name,budget", [("semantic_structure", 600), ("celebrities", 300),
                                         ("simple_reversals", 150)])
def test_every_question_in_one_shard_that_states_its_facts(tok, name, budget):
  ds = registry.generate(name, "small", seed=0)
  assert _full_tokens(tok, ds) > 2 * budget
  shards = contexts.plan_shards(ds.train, _questions(ds), tok, FMT, budget, name)
  assert len(shards) >= 2
  placed = [key for s in shards for key in s.questions]
  assert sorted(placed) == sorted((q.split, q.id) for q in _questions(ds))  # each exactly once
  shard_of = {key: s for s in shards for key in s.questions}
  stated_anywhere = {f for d in ds.train for f in d.fact_ids}
  for q in _questions(ds):
    shard = shard_of[(q.split, q.id)]
    in_context = {f for i in shard.documents for f in ds.train[i].fact_ids}
    needed = set(q.fact_ids) & stated_anywhere
    assert needed and needed <= in_context, q.id
  for s in shards:
    assert list(s.documents) == sorted(set(s.documents))  # training order, no repeats
    text = prompts.context_text([ds.train[i] for i in s.documents], 1, 0, FMT)
    assert list(s.context_ids) == prefill.encode_context(tok, text)
    assert len(s.context_ids) <= budget
    assert len(s.context_ids) > budget * 0.75  # filled with distractors


def test_a_set_that_fits_is_one_shard_with_the_unsharded_context(tok):
  ds = registry.generate("syllogisms", "small", seed=0)
  full = prefill.encode_context(tok, prompts.context_text(ds.train, 1, 0, FMT))
  shards = contexts.plan_shards(ds.train, _questions(ds), tok, FMT, len(full), "syllogisms")
  assert len(shards) == 1
  assert list(shards[0].context_ids) == full
  assert shards[0].documents == tuple(range(len(ds.train)))


def test_deterministic(tok):
  ds = registry.generate("semantic_structure", "small", seed=0)
  budget = 600
  a = contexts.plan_shards(ds.train, _questions(ds), tok, FMT, budget)
  b = contexts.plan_shards(ds.train, _questions(ds), tok, FMT, budget)
  assert a == b


def test_a_question_whose_facts_cannot_fit_is_an_error_naming_it(tok):
  ds = registry.generate("syllogisms", "small", seed=0)
  with pytest.raises(prefill.ContextTooLongError, match=r"question 'syllogism_\d+' \(syllogism\) "
                                                        r"needs 1 documents"):
    contexts.plan_shards(ds.train, _questions(ds), tok, FMT, 40, "dataset syllogisms")
