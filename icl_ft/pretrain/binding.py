"""Binding probe: celebrity questions with only their choices' documents in context.

    python -m icl_ft.pretrain.binding [--checkpoint default] [--preset tiny_default]
        [--tokenizer default] [--episodes 8] [--counts 1,2,3,4]

Every held-out celebrity question (`corpus.heldout_episodes`, the yardstick of
`recipe.evaluate_in_context`) is asked k times over: the context holds the documents of k
people, the right answer's and the first k - 1 wrong choices', and the choices are those k
people (k = 1: the right one and one whose document is absent). Chance is 1 / max(k, 2).

It separates two failures that a full-length context mixes: a model that cannot find the
right document among many is still right at k = 2, where there is one other; a model that
has not bound a person's facts to the person is at chance from k = 2 on, however short the
context. (At k = 1 a model that only prefers a name standing in the context is right.)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
from collections.abc import Iterator, Sequence
from typing import Any

from icl_ft import sharding
from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.evaluation import prompts
from icl_ft.inference import scoring
from icl_ft.model import loader
from icl_ft.pretrain import corpus as corpus_lib
from icl_ft.pretrain import recipe

FAMILY = "celebrities"
COUNTS = (1, 2, 3, 4)


def probe_items(episodes: Sequence[tuple[list[records.Document], list[records.Question]]],
                counts: Sequence[int] = COUNTS
                ) -> Iterator[tuple[int, list[records.Document], records.Question]]:
  """(k, context documents, question with k choices, the right one first) per question and k.

  A choice's person is the one whose question has it as the answer; a question is skipped at
  a k for which it has fewer than max(k - 1, 1) wrong choices with a person.
  """
  for docs, questions in episodes:
    person_of = {q.choices[i]: q.fact_ids[0] for q in questions for i in q.correct}
    for q in questions:
      right = q.choices[q.correct[0]]
      wrong = [c for i, c in enumerate(q.choices) if i not in q.correct and c in person_of]
      for k in counts:
        if len(wrong) < max(k - 1, 1):
          continue
        people = {q.fact_ids[0], *(person_of[c] for c in wrong[:k - 1])}
        context = [d for d in docs if people & set(d.fact_ids)]  # in the episode's order
        yield k, context, dataclasses.replace(q, choices=(right, *wrong[:max(k - 1, 1)]),
                                              correct=(0,))


def binding_accuracy(model: Any, tokenizer: Any, episodes: int = 8, seed: int = 0,
                     counts: Sequence[int] = COUNTS, batch_size: int = 8
                     ) -> dict[str, dict[str, dict[str, float]]]:
  """{"celebrities/<split>": {"<k>": {accuracy, n, chance}}} over held-out episodes."""
  held_out = corpus_lib.heldout_episodes(FAMILY, episodes, recipe.HELDOUT_PARAMS, seed=seed)
  hits: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
  for k, docs, question in probe_items(held_out, counts):
    score, = scoring.score_questions(model, tokenizer, [question], prompts.context_text(docs),
                                     batch_size=batch_size)
    hits[(question.split, k)].append(int(score.predicted == 0))
  out: dict[str, dict[str, dict[str, float]]] = {}
  for (split, k), h in sorted(hits.items()):
    out.setdefault(f"{FAMILY}/{split}", {})[str(k)] = {
        "accuracy": round(sum(h) / len(h), 4), "n": len(h), "chance": round(1 / max(k, 2), 4)}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", default="default",
                      help="'default', a train checkpoint or an exported params directory")
  parser.add_argument("--preset", default="tiny_default")
  parser.add_argument("--tokenizer", default="default")
  parser.add_argument("--episodes", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--counts", default=",".join(map(str, COUNTS)),
                      help="comma-separated numbers of people in context")
  args = parser.parse_args()
  counts = [int(c) for c in args.counts.split(",")]
  if not counts or min(counts) < 1:
    raise SystemExit(f"error: --counts must be positive integers, got {args.counts!r}")
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  model, tok = loader.load_model(schema.ModelConfig(preset=args.preset, tokenizer=args.tokenizer,
                                                    checkpoint=args.checkpoint), mesh, rules)
  print(json.dumps(binding_accuracy(model, tok, args.episodes, args.seed, counts)))


if __name__ == "__main__":
  main()
