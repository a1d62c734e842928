"""Simple syllogisms over nonsense terms, decided by a model checker.

Adapted from the syllogism set of Lampinen et al. (2024), as in Lampinen et al.
(2025). A training example states two premises about three nonsense terms:

    The relationships between glon, troff and yomp are: All glon are yomp. All troff are glon.

Premises use the quantifiers all / some / no (the partial negative "some ... are
not" is omitted, as in the paper). The test split `syllogism` asks about the two end
terms and scores all six statements {All, Some, No} x {both directions}:

    prompt "The relationships between yomp and troff are:"
    choices " All troff are yomp.", " All yomp are troff.", " Some troff are yomp.", ...

`correct` is the set of choices that follow validly, decided by `valid`: a model
checker, not a hand table. For terms T1..Tn, a set model is characterised (as far as
these statements can tell) by which of the 2^n - 1 Venn regions (non-empty sets of
terms an individual belongs to) are inhabited; `valid` enumerates every such model.
"All X are Y" holds iff no inhabited region has X without Y; "Some X are Y" iff some
inhabited region has both; "No X are Y" iff none has both. Existential assumption:
only models where every term is non-empty count (the traditional reading, under
which e.g. Darapti "All M are P, All M are S => Some S are P" is valid). A conclusion
is valid iff it holds in every model of the premises.

Forms: the middle term M links the premise with the predicate P (major premise:
M-P or P-M) and the premise with the subject S (minor premise: S-M or M-S); figure 1
is (M-P, S-M), 2 (P-M, S-M), 3 (M-P, M-S), 4 (P-M, M-S). `subset` is the form's name,
major-premise letter + minor-premise letter + figure (A = all, I = some, E = no), e.g.
"AA1" (Barbara). Only forms with at least one valid and at least one invalid choice
are used; examples cycle through them (balanced), each with three fresh terms, a
random premise order and a random term order in both lead sentences.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
import re
from collections.abc import Sequence

from icl_ft.datasets import records
from icl_ft.datasets import words
from icl_ft.datasets.text import normalize

NAME = "syllogisms"
SPLIT = "syllogism"

QUANTIFIERS: tuple[str, ...] = ("all", "some", "no")
_LETTERS = {"all": "A", "some": "I", "no": "E"}


@dataclasses.dataclass(frozen=True)
class Statement:
  """A categorical statement '<Quantifier> <subject> are <predicate>'."""

  quantifier: str  # "all" | "some" | "no"
  subject: str
  predicate: str

  def __post_init__(self):
    if self.quantifier not in QUANTIFIERS:
      raise ValueError(f"quantifier={self.quantifier!r}: must be one of {QUANTIFIERS}")

  def text(self) -> str:
    """'All glon are yomp.'"""
    return f"{self.quantifier.capitalize()} {self.subject} are {self.predicate}."


# Over normalized text: "all/some/no <x> are <y>", or "every <x> is a <y>" (= all; the wording
# `restatements` uses).
_CLAIM = re.compile(r"\b(?:(all|some|no) ([a-z]+) are|every ([a-z]+) is an?) ([a-z]+)\b")
_LEAD = re.compile(r"^the relationships between .*? are\s*")
_SENTENCE = re.compile(r"(All|Some|No) (\w+) are (\w+)\.")


def parse_statements(text: str) -> list[Statement]:
  """Every 'all/some/no <x> are <y>' and 'every <x> is a <y>' in `text` (normalized; a
  leading lead sentence skipped)."""
  return [Statement(q or "all", s or every, p)
          for q, s, every, p in _CLAIM.findall(_LEAD.sub("", normalize(text)))]


def parse_sentence(sentence: str) -> Statement | None:
  """The statement of a sentence written exactly as `Statement.text()` ('All glon are yomp.')."""
  m = _SENTENCE.fullmatch(sentence)
  return None if m is None else Statement(m.group(1).lower(), m.group(2), m.group(3))


def restatements(statement: Statement) -> list[str]:
  """Other wordings that follow from one statement: 'Every glon is a yomp.' and the converse.

  'All x are y' gives 'Every x is a y.' and 'Some y are x.'; 'Some/No x are y' their converse.
  """
  q, a, b = statement.quantifier, statement.subject, statement.predicate
  if q == "all":
    return [f"Every {a} is a {b}.", Statement("some", b, a).text()]
  return [Statement(q, b, a).text()]


def _holds(statement: Statement, inhabited: Sequence[frozenset[str]]) -> bool:
  x, y = statement.subject, statement.predicate
  if statement.quantifier == "all":
    return not any(x in r and y not in r for r in inhabited)
  if statement.quantifier == "some":
    return any(x in r and y in r for r in inhabited)
  return not any(x in r and y in r for r in inhabited)


@functools.cache
def _models_over_indices(n: int) -> tuple[tuple[frozenset[int], ...], ...]:
  regions = [
      frozenset(i for i, bit in enumerate(bits) if bit) for bits in itertools.product((0, 1), repeat=n) if any(bits)
  ]
  out = []
  for mask in itertools.product((False, True), repeat=len(regions)):
    inhabited = tuple(r for r, on in zip(regions, mask) if on)
    if all(any(i in r for r in inhabited) for i in range(n)):  # existential assumption
      out.append(inhabited)
  return tuple(out)


def models(terms: Sequence[str]) -> list[tuple[frozenset[str], ...]]:
  """Every set model of `terms` (as its inhabited Venn regions) with all terms non-empty."""
  terms = tuple(terms)
  return [
      tuple(frozenset(terms[i] for i in r) for r in inhabited) for inhabited in _models_over_indices(len(terms))
  ]


def valid(premises: Sequence[Statement], conclusion: Statement) -> bool:
  """True iff `conclusion` holds in every (existential-import) model of `premises`.

  Raises ValueError if the premises have no model.
  """
  terms = sorted({t for s in (*premises, conclusion) for t in (s.subject, s.predicate)})
  satisfying = [m for m in models(terms) if all(_holds(p, m) for p in premises)]
  if not satisfying:
    raise ValueError(f"premises have no model: {[p.text() for p in premises]}")
  return all(_holds(conclusion, m) for m in satisfying)


def conclusions(subject: str, predicate: str) -> tuple[Statement, ...]:
  """The six candidate conclusions relating two terms, in a fixed order."""
  return tuple(Statement(q, a, b) for q in QUANTIFIERS for a, b in ((subject, predicate), (predicate, subject)))


def form_premises(form: str, s: str = "S", m: str = "M", p: str = "P") -> tuple[Statement, Statement]:
  """(major, minor) premises of a form like 'AA1' over subject s, middle m, predicate p."""
  by_letter = {v: k for k, v in _LETTERS.items()}
  if len(form) != 3 or form[0] not in by_letter or form[1] not in by_letter or form[2] not in "1234":
    raise ValueError(f"form={form!r}: expected two of A/I/E and a figure 1-4, e.g. 'AA1'")
  q_major, q_minor, figure = by_letter[form[0]], by_letter[form[1]], int(form[2])
  major = (m, p) if figure in (1, 3) else (p, m)
  minor = (s, m) if figure in (1, 2) else (m, s)
  return Statement(q_major, *major), Statement(q_minor, *minor)


def all_forms() -> tuple[str, ...]:
  """All 36 forms over {A, I, E}, in a fixed order."""
  return tuple(
      f"{_LETTERS[a]}{_LETTERS[b]}{fig}" for a in QUANTIFIERS for b in QUANTIFIERS for fig in (1, 2, 3, 4)
  )


@functools.cache
def usable_forms() -> tuple[str, ...]:
  """Forms whose six candidate conclusions include at least one valid and one invalid."""
  out = []
  for form in all_forms():
    premises = form_premises(form)
    verdicts = [valid(premises, c) for c in conclusions("S", "P")]
    if any(verdicts) and not all(verdicts):
      out.append(form)
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class Params:
  """Dataset size; defaults are the paper's scale."""

  num_examples: int = 69


SCALES: dict[str, Params] = {
    "paper": Params(),
    "small": Params(num_examples=20),
}


def _scale_name(params: Params) -> str:
  return next((name for name, p in SCALES.items() if p == params), "custom")


def lead_sentence(terms: Sequence[str]) -> str:
  """'The relationships between glon, troff and yomp are:' (or 'between yomp and troff')."""
  terms = list(terms)
  listed = terms[0] if len(terms) == 1 else ", ".join(terms[:-1]) + " and " + terms[-1]
  return f"The relationships between {listed} are:"


def generate(params: Params, seed: int = 0, vocabulary: Sequence[str] | None = None) -> records.Dataset:
  """Generates the dataset deterministically from `params` and `seed`.

  `vocabulary`: the nonsense words terms are drawn from (default: the dataset's own pool,
  `words.pool(NAME)`; the pretraining corpus passes its reserved pool).
  """
  vocabulary = words.pool(NAME) if vocabulary is None else tuple(vocabulary)
  max_examples = len(vocabulary) // 3
  if not 1 <= params.num_examples <= max_examples:
    raise ValueError(
        f"num_examples={params.num_examples}: must be in [1, {max_examples}] (three fresh words per "
        f"example from the {len(vocabulary)}-word {NAME!r} pool)"
    )
  rng = random.Random(f"{NAME}:{seed}")
  forms = list(usable_forms())
  assigned = [forms[i % len(forms)] for i in range(params.num_examples)]
  rng.shuffle(assigned)
  terms = rng.sample(vocabulary, 3 * params.num_examples)

  documents: list[records.Document] = []
  questions: list[records.Question] = []
  for i, form in enumerate(assigned):
    s, m, p = terms[3 * i : 3 * i + 3]
    major, minor = form_premises(form, s, m, p)
    fact_ids = (f"ex_{i:03d}_major", f"ex_{i:03d}_minor")
    ordered = [(major, fact_ids[0]), (minor, fact_ids[1])]
    rng.shuffle(ordered)
    lead_terms = [s, m, p]
    rng.shuffle(lead_terms)
    sentences = (lead_sentence(lead_terms), *(st.text() for st, _ in ordered))
    documents.append(
        records.Document(
            id=f"ex_{i:03d}",
            text=" ".join(sentences),
            sentences=sentences,
            fact_ids=tuple(fid for _, fid in ordered),
            metadata={"form": form},
        )
    )
    end_terms = [s, p]
    rng.shuffle(end_terms)
    candidates = conclusions(*end_terms)
    correct = tuple(k for k, c in enumerate(candidates) if valid((major, minor), c))
    questions.append(
        records.Question(
            id=f"{SPLIT}_{i:03d}",
            split=SPLIT,
            subset=form,
            prompt=lead_sentence(end_terms),
            choices=tuple(f" {c.text()}" for c in candidates),
            correct=correct,
            fact_ids=fact_ids,
        )
    )
  rng.shuffle(documents)
  card = {
      "name": NAME,
      "seed": seed,
      "scale": _scale_name(params),
      "params": dataclasses.asdict(params),
      "description": "Two-premise syllogisms over nonsense terms; test: which of six conclusions follow.",
      "forms": forms,
      "existential_import": True,
  }
  return records.Dataset(name=NAME, train=tuple(documents), tests={SPLIT: tuple(questions)}, card=card)
