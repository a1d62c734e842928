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
with their correct choices) and the generators' public functions:

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

from icl_ft.datasets import records
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
  """simple_reversals: '<x> are <comparison> than <y>'."""

  def __init__(self, dataset: records.Dataset):
    features = dataset.card.get("features") or []
    self.antonym: dict[str, str] = {}
    for form, anti, *_ in features:
      self.antonym[normalize(form)] = normalize(anti)
      self.antonym[normalize(anti)] = normalize(form)
    comps = sorted(self.antonym, key=len, reverse=True) or [r"\w+er", r"more \w+", r"less \w+"]
    self._re = re.compile(r"\b([a-z]+) are (" + "|".join(comps) + r") than ([a-z]+)\b")
    self.true: set[tuple[str, str, str]] = set()
    for doc in dataset.train:
      for s in doc.sentences:
        for x, comp, y in self._re.findall(normalize(s)):
          self.true.add((x, comp, y))
          if comp in self.antonym:
            self.true.add((y, self.antonym[comp], x))

  def claims(self, statement: str) -> list[Claim] | None:
    found = self._re.findall(normalize(statement))
    return [Claim((x, c, y), (x, c, y) in self.true) for x, c, y in found] or None


class SyllogismParser(Parser):
  """syllogisms: 'all/some/no <x> are <y>' over one example's terms."""

  _RE = re.compile(r"\b(all|some|no) ([a-z]+) are ([a-z]+)\b")
  _LEAD = re.compile(r"^the relationships between .*? are\s*")

  def __init__(self, dataset: records.Dataset):
    from icl_ft.datasets import syllogisms  # pylint: disable=g-import-not-at-top

    self._syl = syllogisms
    self.premises: dict[str, tuple[Any, ...]] = {}  # term -> its example's premises
    for doc in dataset.train:
      prem = [self._syl.Statement(q, s, p) for sent in doc.sentences[1:]
              for q, s, p in self._RE.findall(normalize(sent))]
      for st in prem:
        for term in (st.subject, st.predicate):
          self.premises[term] = tuple(prem)

  def claims(self, statement: str) -> list[Claim] | None:
    text = self._LEAD.sub("", normalize(statement))
    out = []
    for q, s, p in self._RE.findall(text):
      st = self._syl.Statement(q, s, p)
      prem = self.premises.get(s)
      ok = bool(prem) and self.premises.get(p) == prem and s != p and self._syl.valid(prem, st)
      out.append(Claim(st, ok))
    return out or None


class CelebrityParser(Parser):
  """celebrities: a full name and a full description; direction = which comes first."""

  def __init__(self, dataset: records.Dataset):
    self.people: list[tuple[str, str, str]] = []  # (fact_id, name, description), normalized
    for group in (dataset.card.get("people") or {}).values():
      for p in group:
        self.people.append((p["fact_id"], normalize(p["name"]), normalize(p["description"])))

  def claims(self, statement: str) -> list[Claim] | None:
    text = f" {normalize(statement)} "
    names = [(text.index(f" {n} "), fid) for fid, n, _ in self.people if f" {n} " in text]
    descs = [(text.index(f" {d} "), fid) for fid, _, d in self.people if f" {d} " in text]
    if len(names) != 1 or not descs:
      return None
    (npos, who), = names
    return [Claim((who, "p2d" if npos < dpos else "d2p"), owner == who) for dpos, owner in descs]


class SemanticParser(Parser):
  """semantic_structure: nonsense words back to the world's lexemes; isa/property/relation."""

  _REVERSED_START = ("one kind of ", "one type of ", "kinds of ", "things that ", "one thing that ")
  _NEGATION = {"not", "cannot", "never", "no", "isn't", "aren't", "can't"}

  def __init__(self, dataset: records.Dataset):
    from icl_ft.datasets import semantic_hierarchy as h  # pylint: disable=g-import-not-at-top

    card = dataset.card
    self.world = h.World(card["categories"], card.get("holdout_categories", ()), card["lexicon"])
    self._h = h
    self.lexeme: dict[str, str] = {}  # nonsense word (and its plural) -> lexeme key
    for key, word in self.world.lexicon.items():
      self.lexeme.setdefault(word.lower(), key)
    for key, word in self.world.lexicon.items():
      self.lexeme.setdefault(word.lower() + "s", key)

  _PIVOTS = frozenset({"are", "is", "can", "have", "has"})

  def _clause(self, clause: str) -> list[Claim] | None:
    """Claims of one normalized clause; [] = no claim in it; None = unreadable."""
    words = clause.split()
    items = [self.lexeme[w] for w in words if w in self.lexeme]
    if not items:
      return []
    negated = any(w in self._NEGATION for w in words)
    reversed_ = clause.startswith(self._REVERSED_START) or " include " in f" {clause} "
    cats = [k.split(":", 1)[1] for k in items if k.startswith("category:")]
    if reversed_:  # object first, then the subjects
      head = items[0]
      kind, _, obj = head.partition(":")
      subjects = cats[1:] if kind == "category" else cats
      if kind == "verb":  # "things that blick telks include gruds"
        if len(cats) < 2:
          return None
        obj, subjects = cats[0], cats[1:]
        rel = head.split(":", 1)[1]
      else:
        rel = "isa" if kind == "category" else kind
      if not subjects:
        return None
      statements = [(rel, s, obj) for s in subjects]
    else:
      pivot = next((i for i, w in enumerate(words)
                    if w in self._PIVOTS or self.lexeme.get(w, "").startswith("verb:")), None)
      if pivot is None:  # "prafs fall into the category of boures": after the first word
        if len(items) < 2:
          return []  # a heading such as "facts about wipses"
        pivot = next(i for i, w in enumerate(words) if w in self.lexeme) + 1
      subjects = [self.lexeme[w].split(":", 1)[1] for w in words[:pivot]
                  if self.lexeme.get(w, "").startswith("category:")]
      if not subjects:
        return None  # e.g. a pronoun subject: nothing to check it against
      statements, relation = [], "isa"
      for w in words[pivot:]:
        key = self.lexeme.get(w)
        if key is None:
          continue
        kind, _, name = key.partition(":")
        if kind == "verb":
          relation = name
        else:
          rel = relation if kind == "category" else kind
          statements.extend((rel, s, name) for s in subjects)
    out = []
    for rel, s, o in statements:
      try:
        st = self._h.Statement(rel, s, o)
        true = self.world.holds(st)
      except (ValueError, KeyError):
        return None
      out.append(Claim((st, "reversed" if reversed_ else "forward", negated), true != negated))
    return out

  def claims(self, statement: str) -> list[Claim] | None:
    out = []
    for sentence in re.split(r"(?<=[.?!:])\s+|\n+", statement):
      if sentence.strip().endswith("?"):
        continue  # a question states nothing
      text = normalize(sentence)
      for clause in re.split(r"\b(?:while|whereas|but)\b", text):
        got = self._clause(clause.strip())
        if got is None:
          return None
        out.extend(got)
    return out or None

  def trained_keys(self, dataset: records.Dataset) -> set[Any]:
    """The facts of the training documents, keyed by the direction each is stated in."""
    keys = set()
    for doc in dataset.train:
      rev = set(doc.metadata.get("reversed_fact_ids", ()))
      for fid in doc.fact_ids:
        fact = self.world.fact_by_id.get(fid)
        if fact is not None:
          keys.add((fact.statement, "reversed" if fid in rev else "forward", False))
    return keys


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
