"""A condition's shared context for a dataset: the budget check, subsampling, ICL shards.

`plan_contexts` gives each dataset its contexts: one (no documents; the training set in
context, whole or subsampled) when it fits the model's context budget, else an error naming the
overflow and the subsample that would fit (`check_budget`), or, for ICL with shards, shards.

ICL context shards: every question's supporting documents in context, when all do not fit.

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

from icl_ft.datasets import records
from icl_ft.evaluation import prompts
from icl_ft.inference import prefill
from icl_ft.inference import scoring

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


def uses_documents(condition: str) -> bool:
  return condition == "icl"


def context_for(dataset: records.Dataset, condition: str, fmt: prompts.PromptFormat,
                subsample: int = 1, seed: int = 0) -> str:
  """The condition's shared context for `dataset` (module `icl_ft.evaluation.prompts`)."""
  docs = dataset.train if uses_documents(condition) else None
  return prompts.context_text(docs, subsample, seed, fmt)


def fitting_subsample(tokenizer: Any, documents: Sequence[records.Document],
                      fmt: prompts.PromptFormat, seed: int, budget: int) -> int | None:
  """The smallest subsample factor whose context ([BOS] + text) is <= budget tokens, or None."""
  n = len(documents)

  def fits(k: int) -> bool:
    text = prompts.context_text(documents, k, seed, fmt)
    return len(prefill.encode_context(tokenizer, text)) <= budget

  if n == 0 or not fits(n):
    return None
  lo, hi = 1, n  # fits(hi) is True; subsamples are nested, so length falls as k grows
  while lo < hi:
    mid = (lo + hi) // 2
    if fits(mid):
      hi = mid
    else:
      lo = mid + 1
  return lo


def check_budget(name: str, dataset: records.Dataset, condition: str, tokenizer: Any,
                 fmt: prompts.PromptFormat, subsample: int, seed: int, max_len: int
                 ) -> tuple[list[int], int]:
  """(context ids, longest prompt + choice) for `dataset`; ContextTooLongError if over max_len."""
  context = context_for(dataset, condition, fmt, subsample, seed)
  ids = prefill.encode_context(tokenizer, context)
  questions = [q for qs in dataset.tests.values() for q in qs]
  rows = scoring.encode_questions(tokenizer, questions)
  longest = max(len(r.suffix) for r in rows)
  total = len(ids) + longest
  if total <= max_len:
    return ids, longest
  over = total - max_len
  what = (f"dataset {name}: the ICL context ({len(ids)} tokens with BOS, subsample {subsample})"
          if uses_documents(condition) else f"dataset {name}: the context ({len(ids)} tokens)")
  message = (f"{what} plus the longest question ({longest} tokens) is {total} tokens, "
             f"{over} over the model's max_seq_len {max_len}")
  if uses_documents(condition):
    k = fitting_subsample(tokenizer, dataset.train, fmt, seed, max_len - longest)
    if k is None:
      message += "; not even one document fits"
    else:
      message += f"; subsample factor {k} would fit (--config.icl.subsample={k})"
  raise prefill.ContextTooLongError(message, context_tokens=len(ids), question_tokens=longest,
                                    max_len=max_len)


@dataclasses.dataclass(frozen=True)
class ContextPlan:
  """One shared context of a dataset and the questions scored against it (None: all)."""

  context_ids: list[int]
  questions: frozenset[tuple[str, str]] | None = None  # (split, id)


def plan_contexts(name: str, dataset: records.Dataset, condition: str, tokenizer: Any,
                  fmt: prompts.PromptFormat, subsample: int, seed: int, max_len: int,
                  shards: bool) -> tuple[list[ContextPlan], int]:
  """(contexts, longest prompt + choice): one context, or ICL shards when the set does not fit.

  With `shards` (ICL, subsample 1) a training set too long for the context is split into
  shards (`plan_shards`), each question scored against one that states its facts;
  otherwise an overflow is the ContextTooLongError of `check_budget`.
  """
  try:
    ids, longest = check_budget(name, dataset, condition, tokenizer, fmt, subsample, seed, max_len)
    return [ContextPlan(ids)], longest
  except prefill.ContextTooLongError as e:
    if not (shards and uses_documents(condition) and subsample == 1):
      raise
    longest = e.question_tokens
  questions = [q for qs in dataset.tests.values() for q in qs]
  planned = plan_shards(dataset.train, questions, tokenizer, fmt,
                                       max_len - longest, name=f"dataset {name}")
  return [ContextPlan(list(p.context_ids), frozenset(p.questions)) for p in planned], longest


def shard_count(plans: Sequence[ContextPlan]) -> int:
  """How many shards `plans` are (0: one unsharded context)."""
  return 0 if len(plans) == 1 and plans[0].questions is None else len(plans)
