"""Reading `semantic_structure` claims back from text (for the augmentation audit).

Nonsense words are mapped back to the world's lexemes (categories, properties, relation
verbs; a plural "-s" too), and each clause is read as isa / property / relation statements:
subject first ("Gruds are abmes", "Gruds can zarp", "Gruds blick telks"), or object first
when the clause starts like a reverse template of `semantic_phrasing` or has "include"
("Abmes include gruds", "Things that can zarp include gruds"). A clause with a negation word
claims the opposite; questions state nothing. Truth is the world's (`World.holds`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from icl_ft.datasets import records
from icl_ft.datasets.semantic_hierarchy import Statement, World
from icl_ft.datasets.text import normalize

FORWARD = "forward"
REVERSED = "reversed"
_REVERSED_START = ("one kind of ", "one type of ", "kinds of ", "things that ", "one thing that ")
_NEGATION = {"not", "cannot", "never", "no", "isn't", "aren't", "can't"}
_PIVOTS = frozenset({"are", "is", "can", "have", "has"})


class Claim(NamedTuple):
  """One statement read from text, the direction it is stated in, and whether it holds."""

  statement: Statement
  direction: str  # FORWARD | REVERSED
  negated: bool
  holds: bool  # World.holds(statement), before negation


class ClaimReader:
  """Reads claims about one world from normalized text."""

  def __init__(self, world: World):
    self.world = world
    self.lexeme: dict[str, str] = {}  # nonsense word (and its plural) -> lexeme key
    for key, word in world.lexicon.items():
      self.lexeme.setdefault(word.lower(), key)
    for key, word in world.lexicon.items():
      self.lexeme.setdefault(word.lower() + "s", key)

  @classmethod
  def from_card(cls, card: Mapping[str, Any]) -> ClaimReader:
    """The reader of a generated dataset, from its card (categories, holdouts, lexicon)."""
    return cls(World(card["categories"], card.get("holdout_categories", ()), card["lexicon"]))

  def _clause(self, clause: str) -> list[Claim] | None:
    """Claims of one normalized clause; [] = no claim in it; None = unreadable."""
    words = clause.split()
    items = [self.lexeme[w] for w in words if w in self.lexeme]
    if not items:
      return []
    negated = any(w in _NEGATION for w in words)
    reversed_ = clause.startswith(_REVERSED_START) or " include " in f" {clause} "
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
                    if w in _PIVOTS or self.lexeme.get(w, "").startswith("verb:")), None)
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
        st = Statement(rel, s, o)
        holds = self.world.holds(st)
      except (ValueError, KeyError):
        return None
      out.append(Claim(st, REVERSED if reversed_ else FORWARD, negated, holds))
    return out

  def parse(self, text: str) -> list[Claim] | None:
    """Every claim of `text` (sentences, clauses split at while/whereas/but); None if any
    clause is unreadable or nothing is claimed."""
    out = []
    for sentence in re.split(r"(?<=[.?!:])\s+|\n+", text):
      if sentence.strip().endswith("?"):
        continue  # a question states nothing
      clause_text = normalize(sentence)
      for clause in re.split(r"\b(?:while|whereas|but)\b", clause_text):
        got = self._clause(clause.strip())
        if got is None:
          return None
        out.extend(got)
    return out or None

  def stated(self, documents: Iterable[records.Document]) -> set[tuple[Statement, str]]:
    """The base facts the documents state, with the direction each is stated in."""
    out = set()
    for doc in documents:
      rev = set(doc.metadata.get("reversed_fact_ids", ()))
      for fid in doc.fact_ids:
        fact = self.world.fact_by_id.get(fid)
        if fact is not None:
          out.add((fact.statement, REVERSED if fid in rev else FORWARD))
    return out
