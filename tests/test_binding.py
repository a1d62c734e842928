"""The binding probe: celebrity questions with only their choices' documents in context."""

from __future__ import annotations

import collections

import pytest

from icl_ft import sharding
from icl_ft.config import schema
from icl_ft.model import loader
from icl_ft.pretrain import binding
from icl_ft.pretrain import corpus as corpus_lib
from icl_ft.pretrain import recipe


@pytest.fixture(scope="module")
def episodes():
  return corpus_lib.heldout_episodes("celebrities", 2, recipe.HELDOUT_PARAMS, seed=0)


def test_context_holds_exactly_the_choices_people(episodes):
  person_of = {q.choices[i]: q.fact_ids[0] for _, qs in episodes for q in qs for i in q.correct}
  per_k = collections.Counter()
  for k, docs, q in binding.probe_items(episodes, counts=(1, 2, 3, 4)):
    per_k[k] += 1
    assert q.correct == (0,) and len(q.choices) == max(k, 2)
    assert q.choices[0] in person_of and q.fact_ids[0] == person_of[q.choices[0]]
    in_context = {f for d in docs for f in d.fact_ids}
    assert in_context == {person_of[c] for c in q.choices[:k]}, (k, q.id)
    if k == 1:  # the second choice's person has no document in the context
      assert person_of[q.choices[1]] not in in_context
  n = sum(len(qs) for _, qs in episodes)
  assert per_k == {k: n for k in (1, 2, 3, 4)}  # every question is asked at every k


def test_default_model_finds_forward_answers_at_every_k():
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  model, tok = loader.load_model(schema.ModelConfig(preset="tiny_default", checkpoint="default",
                                                    tokenizer="default"), mesh, rules)
  result = binding.binding_accuracy(model, tok, episodes=1, counts=(2, 4))
  assert set(result) == {"celebrities/forward", "celebrities/reversal"}
  for split, by_k in result.items():
    assert set(by_k) == {"2", "4"}
    assert by_k["2"]["chance"] == 0.5 and by_k["4"]["chance"] == 0.25
    assert by_k["2"]["n"] == by_k["4"]["n"] > 0
  # The default looks a person's description up whichever other people stand beside it (its
  # held-out forward accuracy is 1.00): the probe put the right document in every context.
  assert result["celebrities/forward"]["4"]["accuracy"] >= 0.9
