"""Simple reversals: comparisons between nonsense entities, tested in reverse.

Adapted from the nonsense NLI set of Lampinen et al. (2024), as in Lampinen et al.
(2025). Each fact compares two nonsense entities along one of 28 features:

    femp are more dangerous than glon.

Each feature has a form and its antonym form (more dangerous / less dangerous,
brighter / dimmer); a fact uses either, chosen at random, so the reversed answer is
not always the antonym side. Training: every fact appears in `articles_per_fact`
articles, each a brief context statement ("Did you know that", "Scientists say
that", ...) followed by the fact (distinct contexts within a fact). Test split
`reversal`: a forced choice between the correct reversal and the contradictory one:

    prompt "glon are", choices " less dangerous than femp." / " more dangerous than femp."

Every entity occurs in exactly one fact, so no reversal (nor its contradiction) is in
the training text and no other fact offers an associative shortcut. `subset` is the
feature's group: `suffix` (brighter/dimmer: the reversal swaps the word) or
`more_less` (more/less dangerous: the reversal swaps the quantifier).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Sequence

from icl_ft.datasets import records
from icl_ft.datasets import words
from icl_ft.datasets.text import normalize

NAME = "simple_reversals"
SPLIT = "reversal"

# (form, antonym form, group); a fact states either form, its reversal the other.
FEATURES: tuple[tuple[str, str, str], ...] = (
    ("brighter", "dimmer", "suffix"),
    ("heavier", "lighter", "suffix"),
    ("more dangerous", "less dangerous", "more_less"),
    ("larger", "smaller", "suffix"),
    ("faster", "slower", "suffix"),
    ("taller", "shorter", "suffix"),
    ("hotter", "colder", "suffix"),
    ("more intelligent", "less intelligent", "more_less"),
    ("older", "younger", "suffix"),
    ("stronger", "weaker", "suffix"),
    ("louder", "quieter", "suffix"),
    ("more valuable", "less valuable", "more_less"),
    ("softer", "harder", "suffix"),
    ("wetter", "drier", "suffix"),
    ("richer", "poorer", "suffix"),
    ("more popular", "less popular", "more_less"),
    ("wider", "narrower", "suffix"),
    ("thicker", "thinner", "suffix"),
    ("more aggressive", "less aggressive", "more_less"),
    ("deeper", "shallower", "suffix"),
    ("smoother", "rougher", "suffix"),
    ("more expensive", "less expensive", "more_less"),
    ("sweeter", "sourer", "suffix"),
    ("happier", "sadder", "suffix"),
    ("more colorful", "less colorful", "more_less"),
    ("cleaner", "dirtier", "suffix"),
    ("sharper", "duller", "suffix"),
    ("more common", "less common", "more_less"),
)

# Brief context statements that introduce a fact; "{fact}" is the bare fact (no final period).
CONTEXTS: tuple[str, ...] = (
    "Did you know that {fact}?",
    "It is a fact that {fact}.",
    "Scientists say that {fact}.",
    "It is well known that {fact}.",
    "Researchers have found that {fact}.",
    "Everyone knows that {fact}.",
    "According to experts, {fact}.",
    "Recent studies show that {fact}.",
    "As it turns out, {fact}.",
    "Interestingly, {fact}.",
    "It has been observed that {fact}.",
    "Field guides note that {fact}.",
    "Surveys confirm that {fact}.",
    "It is widely reported that {fact}.",
    "Observers agree that {fact}.",
    "Records show that {fact}.",
    "In fact, {fact}.",
    "Remarkably, {fact}.",
    "Experts agree that {fact}.",
    "Here is a fun fact: {fact}.",
)


@dataclasses.dataclass(frozen=True)
class Params:
  """Dataset size; defaults are the paper's scale."""

  num_facts: int = 100
  articles_per_fact: int = 10
  num_features: int = 28  # the first `num_features` of FEATURES are used.


SCALES: dict[str, Params] = {
    "paper": Params(),
    "small": Params(num_facts=20, articles_per_fact=3),
}


def _scale_name(params: Params) -> str:
  return next((name for name, p in SCALES.items() if p == params), "custom")


def _validate(params: Params, pool_size: int) -> None:
  max_facts = pool_size // 2
  if not 1 <= params.num_facts <= max_facts:
    raise ValueError(
        f"num_facts={params.num_facts}: must be in [1, {max_facts}] (two fresh words per fact from the "
        f"{pool_size}-word {NAME!r} pool)"
    )
  if not 1 <= params.articles_per_fact <= len(CONTEXTS):
    raise ValueError(
        f"articles_per_fact={params.articles_per_fact}: must be in [1, {len(CONTEXTS)}] "
        "(one distinct context statement per article)"
    )
  if not 1 <= params.num_features <= len(FEATURES):
    raise ValueError(f"num_features={params.num_features}: must be in [1, {len(FEATURES)}]")


def fact_sentence(subject: str, comparison: str, obj: str) -> str:
  """'femp are more dangerous than glon' (no final period)."""
  return f"{subject} are {comparison} than {obj}"


Claim = tuple[str, str, str]  # (subject, comparison, object), normalized: ("femp", "more dangerous", "glon")


@functools.cache
def _reader(features: tuple[tuple[str, str], ...]) -> tuple[dict[str, str], re.Pattern[str]]:
  """(comparison -> antonym form, the claim pattern) of feature pairs, normalized."""
  antonym: dict[str, str] = {}
  for form, anti in features:
    antonym[normalize(form)] = normalize(anti)
    antonym[normalize(anti)] = normalize(form)
  # Longest first, so "more dangerous" is read whole; without features, any comparative.
  comparisons = sorted(antonym, key=len, reverse=True) or [r"\w+er", r"more \w+", r"less \w+"]
  return antonym, re.compile(r"\b([a-z]+) are (" + "|".join(comparisons) + r") than ([a-z]+)\b")


def _pairs(features: Sequence[Sequence[str]]) -> tuple[tuple[str, str], ...]:
  return tuple((f[0], f[1]) for f in features)


def parse_claims(text: str, features: Sequence[Sequence[str]] = FEATURES) -> list[Claim]:
  """Every comparison '<x> are <comparison> than <y>' in `text` (normalized) over `features`.

  `features`: (form, antonym form, ...) rows, e.g. a dataset card's `features`.
  """
  return _reader(_pairs(features))[1].findall(normalize(text))


def reversal(claim: Claim, features: Sequence[Sequence[str]] = FEATURES) -> Claim | None:
  """The same fact stated the other way round ('glon are less dangerous than femp'), if known."""
  x, comparison, y = claim
  antonym = _reader(_pairs(features))[0].get(comparison)
  return None if antonym is None else (y, antonym, x)


def restatement(sentence: str, features: Sequence[Sequence[str]] = FEATURES) -> str | None:
  """The comparison of a training sentence on its own: 'Femp are more dangerous than glon.'"""
  found = parse_claims(sentence, features)
  if not found:
    return None
  x, comparison, y = found[0]
  return fact_sentence(x.capitalize(), comparison, y) + "."


def generate(params: Params, seed: int = 0, vocabulary: Sequence[str] | None = None) -> records.Dataset:
  """Generates the dataset deterministically from `params` and `seed`.

  `vocabulary`: the nonsense words entities are drawn from (default: the dataset's own pool,
  `words.pool(NAME)`; the pretraining corpus passes its reserved pool).
  """
  vocabulary = words.pool(NAME) if vocabulary is None else tuple(vocabulary)
  _validate(params, len(vocabulary))
  rng = random.Random(f"{NAME}:{seed}")
  entities = rng.sample(vocabulary, 2 * params.num_facts)
  features = list(FEATURES[: params.num_features])
  # Balanced: features cycle over the facts, then the assignment is shuffled.
  assigned = [features[i % len(features)] for i in range(params.num_facts)]
  rng.shuffle(assigned)

  documents: list[records.Document] = []
  questions: list[records.Question] = []
  for i, (form, antonym, group) in enumerate(assigned):
    subject, obj = entities[2 * i], entities[2 * i + 1]
    stated, reversed_form = (form, antonym) if rng.random() < 0.5 else (antonym, form)
    fact_id = f"fact_{i:03d}"
    fact = fact_sentence(subject, stated, obj)
    for j, c in enumerate(rng.sample(range(len(CONTEXTS)), params.articles_per_fact)):
      text = CONTEXTS[c].format(fact=fact)
      documents.append(
          records.Document(
              id=f"{fact_id}_article_{j:02d}",
              text=text,
              sentences=(text,),
              fact_ids=(fact_id,),
              metadata={"context": c, "feature": form},
          )
      )
    correct_choice = f" {reversed_form} than {subject}."
    wrong_choice = f" {stated} than {subject}."
    choices = [correct_choice, wrong_choice]
    rng.shuffle(choices)
    questions.append(
        records.Question(
            id=f"{SPLIT}_{i:03d}",
            split=SPLIT,
            subset=group,
            prompt=f"{obj} are",
            choices=tuple(choices),
            correct=(choices.index(correct_choice),),
            fact_ids=(fact_id,),
        )
    )
  rng.shuffle(documents)
  card = {
      "name": NAME,
      "seed": seed,
      "scale": _scale_name(params),
      "params": dataclasses.asdict(params),
      "description": "Comparisons between nonsense entities; test: forced choice on the reversal.",
      "features": [list(f) for f in features],
  }
  return records.Dataset(name=NAME, train=tuple(documents), tests={SPLIT: tuple(questions)}, card=card)
