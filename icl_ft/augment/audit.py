"""Audit of generated statements against a dataset's known truth.

Every dataset's knowledge is known, so each generated statement gets one label:

  restatement    every claim in it is true and stated (in the same direction) in training text
  test:<split>   true, and answers a test question of <split> (prompt + correct choice) that
                 the training text does not state: the augmentation wrote a test answer
  inference      true, neither stated in training nor a test answer
  false          some claim in it is false (or it matches a wrong choice of a question)
  unparsed       no claim could be read from it

A statement is parsed into claims `(key, true)`: `key` is the claim together with the
direction it is stated in (a reversal is a different key from its forward form, since
stating it is what the reversal tests measure), `true` is the dataset's truth model on it.
Labels combine claims as false > test > inference > restatement. Knowledge per dataset,
derived from the Dataset itself (training documents, their metadata, the card, questions
with their correct choices); each dataset reads its own claims from text (its module's
`parse_claims` / `parse_statements`, `semantic_claims.ClaimReader`):

- simple_reversals: "<x> are <comparison> than <y>" with the card's feature pairs; true iff
  a trained comparison or its reversal (antonym, swapped).
- syllogisms: every "all/some/no <x> are <y>" over one example's terms; true iff
  `syllogisms.valid(premises, statement)`.
- celebrities: a person's full name and a full description in one statement; true iff the
  description is theirs; the direction is which comes first (p2d / d2p).
- semantic_structure: the card's world (`World(categories, holdouts, lexicon)`); nonsense
  words are mapped back to categories / properties / relation verbs, clauses read as
  isa / property / relation claims (object-first forms such as "Abmes include gruds" or
  "Things that can zarp include gruds" are reversed), truth is `World.holds`.
- anything else: exact (normalized) string match against training sentences and question
  statements only.

Statements the parser cannot read fall back to that string match too. Pure Python.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from icl_ft.datasets import celebrities
from icl_ft.datasets import records
from icl_ft.datasets import semantic_claims
from icl_ft.datasets import simple_reversals
from icl_ft.datasets import syllogisms
from icl_ft.datasets.text import normalize

RESTATEMENT = "restatement"
INFERENCE = "inference"
FALSE = "false"
UNPARSED = "unparsed"
TEST_PREFIX = "test:"
CORRECT = (RESTATEMENT, INFERENCE)  # plus every test:<split>


class Claim(NamedTuple):
  key: Any  # hashable: the claim and the direction it is stated in
  true: bool


def is_correct(label: str) -> bool:
  """True for labels of true statements (restatement, inference, test:<split>)."""
  return label in CORRECT or label.startswith(TEST_PREFIX)


def _sentences(text: str) -> list[str]:
  return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


# ---------------------------------------------------------------------------
# Per-dataset parsers
# ---------------------------------------------------------------------------


class Parser:
  """Reads claims from a statement; None = nothing readable. The base reads nothing."""

  def claims(self, statement: str) -> list[Claim] | None:
    del statement
    return None


class ComparisonParser(Parser):
  """simple_reversals: comparisons read by `simple_reversals.parse_claims`."""

  def __init__(self, dataset: records.Dataset):
    self.features = dataset.card.get("features") or []
    self.true: set[simple_reversals.Claim] = set()
    for doc in dataset.train:
      for s in doc.sentences:
        for claim in simple_reversals.parse_claims(s, self.features):
          self.true.add(claim)
          reverse = simple_reversals.reversal(claim, self.features)
          if reverse is not None:
            self.true.add(reverse)

  def claims(self, statement: str) -> list[Claim] | None:
    found = simple_reversals.parse_claims(statement, self.features)
    return [Claim(c, c in self.true) for c in found] or None


class SyllogismParser(Parser):
  """syllogisms: statements read by `syllogisms.parse_statements`, over one example's terms."""

  def __init__(self, dataset: records.Dataset):
    self.premises: dict[str, tuple[syllogisms.Statement, ...]] = {}  # term -> its example's premises
    for doc in dataset.train:
      prem = [st for sent in doc.sentences[1:] for st in syllogisms.parse_statements(sent)]
      for st in prem:
        for term in (st.subject, st.predicate):
          self.premises[term] = tuple(prem)

  def claims(self, statement: str) -> list[Claim] | None:
    out = []
    for st in syllogisms.parse_statements(statement):
      s, p = st.subject, st.predicate
      prem = self.premises.get(s)
      ok = bool(prem) and self.premises.get(p) == prem and s != p and syllogisms.valid(prem, st)
      out.append(Claim(st, ok))
    return out or None


class CelebrityParser(Parser):
  """celebrities: a full name and a full description (`celebrities.parse_claims`)."""

  def __init__(self, dataset: records.Dataset):
    self.people = celebrities.claim_people(dataset.card.get("people") or {})

  def claims(self, statement: str) -> list[Claim] | None:
    found = celebrities.parse_claims(statement, self.people)
    if found is None:
      return None
    return [Claim((who, direction), owner == who) for who, direction, owner in found]


class SemanticParser(Parser):
  """semantic_structure: claims read by `semantic_claims.ClaimReader` over the card's world."""

  def __init__(self, dataset: records.Dataset):
    self.reader = semantic_claims.ClaimReader.from_card(dataset.card)

  def claims(self, statement: str) -> list[Claim] | None:
    found = self.reader.parse(statement)
    if found is None:
      return None
    return [Claim((c.statement, c.direction, c.negated), c.holds != c.negated) for c in found]

  def trained_keys(self, dataset: records.Dataset) -> set[Any]:
    """The facts of the training documents, keyed by the direction each is stated in."""
    return {(st, direction, False) for st, direction in self.reader.stated(dataset.train)}


PARSERS = {
    "simple_reversals": ComparisonParser,
    "syllogisms": SyllogismParser,
    "celebrities": CelebrityParser,
    "semantic_structure": SemanticParser,
}


# ---------------------------------------------------------------------------
# The auditor
# ---------------------------------------------------------------------------


class Auditor:
  """Labels generated statements for one dataset (see the module docstring)."""

  def __init__(self, dataset: records.Dataset):
    name = str(dataset.card.get("name") or dataset.name)
    self.parser: Parser = PARSERS.get(name, Parser)(dataset) if name in PARSERS else Parser()
    self.name = name
    self.train_texts: set[str] = set()
    self.trained: set[Any] = set()
    for doc in dataset.train:
      for s in (*doc.sentences, *_sentences(doc.text)):
        self.train_texts.add(normalize(s.lstrip("- ")))
        for c in self.parser.claims(s) or ():
          self.trained.add(c.key)
    if isinstance(self.parser, SemanticParser):
      self.trained |= self.parser.trained_keys(dataset)
    self.test_keys: dict[Any, str] = {}
    self.test_texts: dict[str, str] = {}  # normalized statement -> split or FALSE
    for split in sorted(dataset.tests):
      for q in dataset.tests[split]:
        for i, st in enumerate(q.statements):
          if i in q.correct:
            self.test_texts.setdefault(normalize(st), split)
            for c in self.parser.claims(st) or ():
              if c.true:
                self.test_keys.setdefault(c.key, split)
          else:
            self.test_texts.setdefault(normalize(st), FALSE)

  def claim_label(self, claim: Claim) -> str:
    if not claim.true:
      return FALSE
    if claim.key in self.trained:
      return RESTATEMENT
    if claim.key in self.test_keys:
      return TEST_PREFIX + self.test_keys[claim.key]
    return INFERENCE

  def label(self, statement: str) -> str:
    """One of restatement, inference, test:<split>, false, unparsed."""
    claims = self.parser.claims(statement)
    if not claims:
      text = normalize(statement)
      if text in self.train_texts:
        return RESTATEMENT
      hit = self.test_texts.get(text)
      if hit is not None:
        return hit if hit == FALSE else TEST_PREFIX + hit
      return UNPARSED
    labels = [self.claim_label(c) for c in claims]
    for wanted in (FALSE, TEST_PREFIX, INFERENCE):
      for lab in labels:
        if lab.startswith(wanted):
          return lab
    return RESTATEMENT


def summarize(labels: Iterable[str]) -> dict[str, Any]:
  """Counts per label, and precision = correct / (correct + false) (unparsed excluded)."""
  counts = collections.Counter(labels)
  correct = sum(n for lab, n in counts.items() if is_correct(lab))
  judged = correct + counts.get(FALSE, 0)
  return {
      "counts": dict(sorted(counts.items())),
      "total": sum(counts.values()),
      "correct": correct,
      "precision": correct / judged if judged else None,
      "parsed_fraction": judged / sum(counts.values()) if counts else None,
  }


def audit(dataset: records.Dataset, statements: Sequence[str]) -> list[str]:
  """Labels of `statements` against `dataset`'s knowledge."""
  auditor = Auditor(dataset)
  return [auditor.label(s) for s in statements]


def label_counts(labels: Mapping[str, int] | Iterable[str]) -> dict[str, int]:
  """Counts per label (sorted)."""
  if isinstance(labels, Mapping):
    return dict(sorted(labels.items()))
  return dict(sorted(collections.Counter(labels).items()))
