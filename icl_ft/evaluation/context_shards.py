"""ICL context shards: every question's supporting documents in context, when all do not fit.

The `icl` condition puts a dataset's training documents in context (`icl_ft.evaluation.prompts`). When the
whole set is longer than the model's context budget, `plan_shards` splits it into shards that
each fit, and each question is scored against one shard that supports it: for every fact the
question depends on (`Question.fact_ids`), the shard holds a document stating it
(`Document.fact_ids`). The shard's other documents are the question's distractors. Each shard
is one shared prefix for the prefix-cached scorer (`icl_ft.inference.scoring.ContextScorer`: one prefill
per shard).

Packing (deterministic):
1. questions, most facts first, go to the shard that already states most of their facts and
   still fits once the missing ones are added (fewest documents that state them, chosen
   greedily), measured exactly (the tokens of the shard's context text); else to a new shard;
2. every document that no shard holds yet goes, in training order, to the shard with the most
   room that it fits;
3. each shard is filled with other documents while they fit, so every shard's context is about
   as long as the budget (like an unsharded context near the limit).
A shard's documents stay in training order, so a set that fits in one shard gives exactly the
unsharded context. A question whose facts cannot all be stated within the budget is an error
naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from icl_ft.evaluation import prompts
from icl_ft.inference import prefill
from icl_ft.datasets import records

_SLACK = 16  # tokens: how far the summed estimate may exceed the budget and still be counted


@dataclasses.dataclass(frozen=True)
class Shard:
  """One context: training documents (indices, in training order) and the questions it scores."""

  documents: tuple[int, ...]
  questions: tuple[tuple[str, str], ...]  # (split, question id)
  context_ids: tuple[int, ...]  # [BOS] + the context text's tokens


def stated_facts(documents: Sequence[records.Document], indices: Iterable[int]) -> set[str]:
  """The facts stated by `documents[indices]`."""
  return {f for i in indices for f in documents[i].fact_ids}


def context_ids(tokenizer: Any, documents: Sequence[records.Document], indices: Iterable[int],
                fmt: prompts.PromptFormat) -> list[int]:
  """[BOS] + the ICL context of `documents[indices]` (training order)."""
  docs = [documents[i] for i in sorted(indices)]
  return prefill.encode_context(tokenizer, prompts.context_text(docs, 1, 0, fmt))


def plan_shards(documents: Sequence[records.Document],
                questions: Sequence[records.Question], tokenizer: Any,
                fmt: prompts.PromptFormat, budget: int, name: str = "dataset") -> list[Shard]:
  """Shards whose contexts ([BOS] + text) are <= `budget` tokens (module docstring).

  Raises ContextTooLongError naming the first question whose facts cannot all be stated in
  `budget` tokens, or ValueError when there are no documents.
  """
  if not documents:
    raise ValueError(f"{name}: no training documents to put in context")
  docs = list(documents)
  by_fact: dict[str, list[int]] = {}
  for i, d in enumerate(docs):
    for f in d.fact_ids:
      by_fact.setdefault(f, []).append(i)
  # Token counts add up to within a few tokens of the joined text's: a cheap test that skips
  # shards that cannot fit before the exact count is taken.
  sep = len(prefill.encode_context(tokenizer, fmt.document_separator)) - 1
  doc_tokens = [len(prefill.encode_context(tokenizer, d.text)) - 1 + sep for d in docs]

  def fits(indices: set[int], known: int = 0, added: Iterable[int] = ()) -> int | None:
    if known and known + sum(doc_tokens[i] for i in added) > budget + _SLACK:
      return None
    n = len(context_ids(tokenizer, docs, indices, fmt))
    return n if n <= budget else None

  def cover(missing: set[str]) -> set[int]:
    """Few documents stating every fact in `missing` (greedy: most facts, then fewest tokens)."""
    chosen: set[int] = set()
    missing = set(missing)
    while missing:
      candidates = {i for f in missing for i in by_fact[f]}
      best = min(candidates, key=lambda i: (-len(missing.intersection(docs[i].fact_ids)),
                                            doc_tokens[i], i))
      chosen.add(best)
      missing -= set(docs[best].fact_ids)
    return chosen

  wanted = {(q.split, q.id): set(q.fact_ids) & by_fact.keys() for q in questions}
  order = sorted(questions, key=lambda q: (-len(wanted[(q.split, q.id)]), q.split, q.id))
  shards: list[set[int]] = []
  facts: list[set[str]] = []
  members: list[list[tuple[str, str]]] = []
  lengths: list[int] = []

  def add(s: int, indices: set[int], n: int) -> None:
    shards[s] |= indices
    facts[s] |= stated_facts(docs, indices)
    lengths[s] = n

  for q in order:
    key = (q.split, q.id)
    need = wanted[key]
    for s in sorted(range(len(shards)), key=lambda s: (len(need - facts[s]), s)):
      extra = cover(need - facts[s])
      n = fits(shards[s] | extra, lengths[s], extra) if extra else lengths[s]
      if n is not None:
        add(s, extra, n)
        members[s].append(key)
        break
    else:
      first = cover(need) or {0}
      n = fits(first)
      if n is None:
        total = len(context_ids(tokenizer, docs, first, fmt))
        raise prefill.ContextTooLongError(
            f"{name}: question {q.id!r} ({q.split}) needs {len(first)} documents to state its "
            f"facts, {total} context tokens with BOS, over the budget of {budget}",
            context_tokens=total, question_tokens=0, max_len=budget)
      shards.append(set())
      facts.append(set())
      members.append([key])
      lengths.append(0)
      add(len(shards) - 1, first, n)

  used = set().union(*shards) if shards else set()
  for i in range(len(docs)):  # documents no shard holds yet: where there is most room
    if i in used:
      continue
    for s in sorted(range(len(shards)), key=lambda s: (lengths[s], s)):
      if (n := fits(shards[s] | {i}, lengths[s], (i,))) is not None:
        add(s, {i}, n)
        break
  for s, shard in enumerate(shards):  # then fill every shard with other documents while they fit
    start = s * len(docs) // len(shards)  # each shard starts elsewhere: varied distractors
    for i in (*range(start, len(docs)), *range(start)):
      if i not in shard and (n := fits(shard | {i}, lengths[s], (i,))) is not None:
        add(s, {i}, n)
  return [Shard(documents=tuple(sorted(s)), questions=tuple(m),
                context_ids=tuple(context_ids(tokenizer, docs, s, fmt)))
          for s, m in zip(shards, members)]
