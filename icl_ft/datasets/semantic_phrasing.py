"""The phrasing of `semantic_structure`: sentence and question templates, word forms, rendering.

Everything the model reads is phrased here from a `semantic_hierarchy.World`: English
categories, properties and verbs appear only as their nonsense words (nouns take a
plural "-s", verbs a third-person "-s"); the English left in the text is the template
words of this module (`template_words`).

Statements are phrased in one of two directions:

- forward, subject first: "Gruds are a type of abme.", "Gruds can zarp.",
  "Gruds blick telks.";
- reverse, object first: "Abmes include gruds.", "One thing that can zarp is the grud.",
  "Things that blick telks include gruds.".

Training documents (`semantic_documents`) use the `*_FORWARD` / `*_REVERSE` sentence
templates through `Renderer`. Test questions use `QUESTION_*` templates (`question_text`):
the syllogism and holdout splits ask new (inferred) statements in the training phrasings,
the reversal split uses the reverse phrasings, and the rephrase split uses
`QUESTION_REPHRASE`, whose phrasings never occur in training. Reading claims back from
text (the augmentation audit) is `semantic_claims`.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence

from icl_ft.datasets.semantic_hierarchy import ISA, PROPERTY_KINDS, RELATION_VERBS, Fact, Statement, World

# ---- Sentence templates (training). Fields: S/s = subject plural (capitalised / not);
# A = "A grud" / "An abme"; one = subject singular; o = object category singular,
# O/Ocap = object plural; ao = "an abme"; pred_pl / pred_sg = "can zarp" / "has zepts" ...;
# items = a list of plural subjects ("gruds, telks and zorps").
ISA_FORWARD: tuple[str, ...] = (
    "{S} are a type of {o}.",
    "{S} are a kind of {o}.",
    "{A} is a kind of {o}.",
    "{S} belong to the group of {O}.",
    "Every {one} is {ao}.",
    "{S} are {O}.",
)
PRED_FORWARD: tuple[str, ...] = (
    "{S} {pred_pl}.",
    "{S} {pred_pl}.",
    "{A} {pred_sg}.",
    "Each {one} {pred_sg}.",
    "In general, {s} {pred_pl}.",
)
ISA_REVERSE_MANY: tuple[str, ...] = ("{Ocap} include {items}.", "Kinds of {o} include {items}.")
ISA_REVERSE_ONE: tuple[str, ...] = ("One kind of {o} is the {one}.",)
PRED_REVERSE_MANY: tuple[str, ...] = ("Things that {pred_pl} include {items}.",)
PRED_REVERSE_ONE: tuple[str, ...] = ("One thing that {pred_sg} is the {one}.",)
CONNECTIVES: tuple[str, ...] = ("Also, ", "In addition, ", "Moreover, ", "Furthermore, ")

# QA units: (question, answer) for forward claims by relation kind, and for reverse claims.
QA_FORWARD: dict[str, tuple[str, str]] = {
    ISA: ("What are {s}?", "{S} are a type of {o}."),
    "is": ("What are {s} like?", "{S} {pred_pl}."),
    "has": ("What do {s} have?", "{S} {pred_pl}."),
    "can": ("What can {s} do?", "{S} {pred_pl}."),
    "relation": ("What do {s} {verb_pl}?", "{S} {pred_pl}."),
}
QA_REVERSE: dict[str, tuple[str, str]] = {
    ISA: ("What are some kinds of {O}?", "{Ocap} include {items}."),
    "pred": ("What {pred_sg}?", "{Items} {pred_pl}."),
}

# Field-guide entries: "Name: grud" / "Type: abme" / "Traits: ..." (one line per kind).
FIELD_LABELS: dict[str, str] = {ISA: "Type", "is": "Traits", "has": "Parts", "can": "Abilities", "relation": "Behavior"}

COMPARISON_BOTH: str = "{S1} and {s2} are both types of {o}."
COMPARISON_ISA: str = "{S1} are a type of {o1}, while {s2} are a type of {o2}."
COMPARISON_CONTRAST: tuple[str, ...] = ("{S1} {p1}, while {s2} {p2}.", "{S1} {p1}, whereas {s2} {p2}.")
COMPARISON_SECOND: str = "{S}, on the other hand, {pred_pl}."

# ---- Question templates: (prompt, choice); the choice is the answer slot at the end.
# Prompt fields as above (verb_pl / verb_sg = "are" / "is", "can", "blick" / "blicks", ...).
# Choice fields: o / O = object category singular / plural, X = property or relation object
# in its form after the verb, s / one = subject plural / singular.
QUESTION_FORWARD: dict[str, tuple[tuple[str, str], ...]] = {
    ISA: (("{S} are a type of", " {o}."), ("{A} is a kind of", " {o}.")),
    "pred": (("{S} {verb_pl}", " {X}."), ("{A} {verb_sg}", " {X}.")),
}
QUESTION_REVERSE: dict[str, tuple[tuple[str, str], ...]] = {
    ISA: (("{Ocap} include", " {s}."), ("One kind of {o} is the", " {one}.")),
    "pred": (("Things that {pred_pl} include", " {s}."), ("One thing that {pred_sg} is the", " {one}.")),
}
# Held-out phrasings: used by the rephrase split only, never in training.
QUESTION_REPHRASE: dict[str, tuple[tuple[str, str], ...]] = {
    ISA: (("{S} can be classified as", " {O}."), ("{S} fall into the category of", " {O}.")),
    "is": (("{S} tend to be", " {X}."), ("A typical {one} is", " {X}.")),
    "has": (("{S} come with", " {X}."), ("A typical {one} has", " {X}.")),
    "can": (("{S} are able to", " {X}."), ("A typical {one} is able to", " {X}.")),
    "relation": (("{S} are known to {verb_pl}", " {X}."), ("A typical {one} will {verb_pl}", " {X}.")),
}
# Words of the held-out phrasings that no training template uses.
REPHRASE_MARKERS: tuple[str, ...] = ("classified", "category", "tend", "typical", "come with", "able to", "known to", "will")

_WORD = re.compile(r"[A-Za-z]+")
_FIELD = re.compile(r"\{[A-Za-z_0-9]+\}")


def template_words() -> frozenset[str]:
  """Every English word the templates put into documents and questions (lower case)."""
  texts: list[str] = [*ISA_FORWARD, *PRED_FORWARD, *ISA_REVERSE_MANY, *ISA_REVERSE_ONE, *PRED_REVERSE_MANY,
                      *PRED_REVERSE_ONE, *CONNECTIVES, COMPARISON_BOTH, COMPARISON_ISA, *COMPARISON_CONTRAST,
                      COMPARISON_SECOND, *FIELD_LABELS.values(), "Name", "Q", "A", "Facts about", "a an and they"]
  for q, a in (*QA_FORWARD.values(), *QA_REVERSE.values()):
    texts += [q, a]
  for table in (QUESTION_FORWARD, QUESTION_REVERSE, QUESTION_REPHRASE):
    for pairs in table.values():
      for p, c in pairs:
        texts += [p, c]
  texts += [p for p in RELATION_VERBS.values() if p]
  return frozenset(w.lower() for t in texts for w in _WORD.findall(_FIELD.sub(" ", t)))


# ---- Word forms ----


def article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def capitalize(text: str) -> str:
  return text[:1].upper() + text[1:]


def join_list(items: Sequence[str]) -> str:
  """'x', 'x and y', 'x, y and z'."""
  items = list(items)
  if len(items) == 1:
    return items[0]
  return ", ".join(items[:-1]) + " and " + items[-1]


class Forms:
  """Nonsense word forms of a world's categories, properties and relations."""

  def __init__(self, world: World):
    self.world = world

  def sg(self, category: str) -> str:
    return self.world.category_word(category)

  def pl(self, category: str) -> str:
    return self.world.category_word(category) + "s"

  def a(self, category: str) -> str:
    w = self.sg(category)
    return f"{article(w)} {w}"

  def object_form(self, relation: str, obj: str) -> str:
    """The object as it stands after its verb: adjective, plural noun, verb, plural category."""
    if relation == "is":
      return self.world.property_word("is", obj)
    if relation == "has":
      return self.world.property_word("has", obj) + "s"
    if relation == "can":
      return self.world.property_word("can", obj)
    return self.pl(obj)

  def verb(self, relation: str, plural: bool) -> str:
    """'are' / 'is', 'have' / 'has', 'can', 'blick' / 'blicks', 'frobe in' / 'frobes in'."""
    if relation == "is":
      return "are" if plural else "is"
    if relation == "has":
      return "have" if plural else "has"
    if relation == "can":
      return "can"
    word = self.world.verb_word(relation) + ("" if plural else "s")
    prep = RELATION_VERBS[relation]
    return f"{word} {prep}" if prep else word

  def predicate(self, relation: str, objects: Sequence[str], plural: bool) -> str:
    """'can zarp and blick', 'has zepts', 'blick telks and zorps'."""
    return f"{self.verb(relation, plural)} {join_list([self.object_form(relation, o) for o in objects])}"

  def subject_fields(self, category: str, pronoun: bool = False) -> dict[str, str]:
    return {
        "S": "They" if pronoun else capitalize(self.pl(category)),
        "s": self.pl(category),
        "A": capitalize(self.a(category)),
        "one": self.sg(category),
    }

  def object_fields(self, category: str) -> dict[str, str]:
    return {"o": self.sg(category), "O": self.pl(category), "Ocap": capitalize(self.pl(category)),
            "ao": self.a(category)}


# ---- Claims: what one sentence unit states ----


@dataclasses.dataclass(frozen=True)
class Claim:
  """Base facts stated together: one subject, one relation, several objects (forward), or
  one object, one relation, several subjects (`reverse`)."""

  facts: tuple[Fact, ...]
  reverse: bool = False

  @property
  def relation(self) -> str:
    return self.facts[0].statement.relation

  @property
  def subjects(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.statement.subject for f in self.facts))

  @property
  def objects(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.statement.object for f in self.facts))

  @property
  def fact_ids(self) -> tuple[str, ...]:
    return tuple(f.id for f in self.facts)


@dataclasses.dataclass(frozen=True)
class Unit:
  """One sentence-level unit of a document and the facts it states."""

  text: str
  claims: tuple[Claim, ...]

  @property
  def fact_ids(self) -> tuple[str, ...]:
    return tuple(fid for c in self.claims for fid in c.fact_ids)

  @property
  def reversed_fact_ids(self) -> tuple[str, ...]:
    return tuple(fid for c in self.claims if c.reverse for fid in c.fact_ids)


def kind_key(relation: str) -> str:
  """The template key of a relation: isa, is, has, can, or relation."""
  return relation if relation in (ISA, *PROPERTY_KINDS) else "relation"


class Renderer:
  """Renders claims in each document format."""

  def __init__(self, world: World, rng: random.Random):
    self.f = Forms(world)
    self.rng = rng

  def sentence(self, claim: Claim, pronoun: bool = False) -> str:
    """A prose sentence for the claim (pronoun: 'They ...' for a forward claim)."""
    f, rng = self.f, self.rng
    rel = claim.relation
    if not claim.reverse:
      (subject,) = claim.subjects
      if rel == ISA:
        (obj,) = claim.objects
        templates = [t for t in ISA_FORWARD if not pronoun or t.startswith("{S}")]
        return rng.choice(templates).format(**f.subject_fields(subject, pronoun), **f.object_fields(obj))
      templates = [t for t in PRED_FORWARD if not pronoun or t.startswith("{S}")]
      return rng.choice(templates).format(
          **f.subject_fields(subject, pronoun),
          pred_pl=f.predicate(rel, claim.objects, True),
          pred_sg=f.predicate(rel, claim.objects, False),
      )
    (obj,) = claim.objects
    subjects = claim.subjects
    items = join_list([f.pl(s) for s in subjects])
    if rel == ISA:
      templates = ISA_REVERSE_MANY if len(subjects) > 1 else ISA_REVERSE_MANY + ISA_REVERSE_ONE
      return rng.choice(templates).format(items=items, one=f.sg(subjects[0]), **f.object_fields(obj))
    templates = PRED_REVERSE_MANY if len(subjects) > 1 else PRED_REVERSE_MANY + PRED_REVERSE_ONE
    return rng.choice(templates).format(
        items=items, one=f.sg(subjects[0]), pred_pl=f.predicate(rel, (obj,), True),
        pred_sg=f.predicate(rel, (obj,), False))

  def qa(self, claim: Claim) -> str:
    f = self.f
    rel = claim.relation
    if not claim.reverse:
      (subject,) = claim.subjects
      q, a = QA_FORWARD[kind_key(rel)]
      fields = dict(**f.subject_fields(subject), verb_pl=f.verb(rel, True) if rel != ISA else "")
      if rel == ISA:
        fields.update(f.object_fields(claim.objects[0]))
      else:
        fields.update(pred_pl=f.predicate(rel, claim.objects, True))
      return f"Q: {q.format(**fields)} A: {a.format(**fields)}"
    (obj,) = claim.objects
    items = join_list([f.pl(s) for s in claim.subjects])
    if rel == ISA:
      q, a = QA_REVERSE[ISA]
      fields = dict(items=items, **f.object_fields(obj))
    else:
      q, a = QA_REVERSE["pred"]
      fields = dict(Items=capitalize(items), pred_pl=f.predicate(rel, (obj,), True),
                    pred_sg=f.predicate(rel, (obj,), False))
    return f"Q: {q.format(**fields)} A: {a.format(**fields)}"

  def field_line(self, claims: Sequence[Claim]) -> str:
    """'Type: abme', 'Traits: zept, rony', ..., 'Behavior: blicks telks; frobes in zorps'."""
    f = self.f
    rel = claims[0].relation
    label = FIELD_LABELS[kind_key(rel)]
    if rel == ISA:
      return f"{label}: {f.sg(claims[0].objects[0])}"
    if rel in PROPERTY_KINDS:
      return f"{label}: {', '.join(f.object_form(rel, o) for o in claims[0].objects)}"
    return f"{label}: {'; '.join(f.predicate(c.relation, c.objects, False) for c in claims)}"


# ---- Questions ----

QUESTION_STYLES: tuple[str, ...] = ("forward", "reverse", "rephrase")


def question_text(world: World, statements: Sequence[Statement], style: str, rng: random.Random) -> tuple[str, tuple[str, ...]]:
  """(prompt, choices) asking the statements, which differ only in the answer slot.

  style "forward" / "rephrase": the object is the answer (training / held-out phrasings);
  "reverse": the subject is the answer.
  """
  f = Forms(world)
  first = statements[0]
  rel = first.relation
  if style == "rephrase":
    table = QUESTION_REPHRASE[kind_key(rel)]
  elif style == "forward":
    table = QUESTION_FORWARD[ISA if rel == ISA else "pred"]
  elif style == "reverse":
    table = QUESTION_REVERSE[ISA if rel == ISA else "pred"]
  else:
    raise ValueError(f"style={style!r}: must be one of {QUESTION_STYLES}")
  prompt_t, choice_t = rng.choice(table)
  fields: dict[str, str] = {}
  choices = []
  if style == "reverse":
    if rel == ISA:
      fields.update(f.object_fields(first.object))
    else:
      fields.update(pred_pl=f.predicate(rel, (first.object,), True), pred_sg=f.predicate(rel, (first.object,), False))
    for st in statements:
      choices.append(choice_t.format(s=f.pl(st.subject), one=f.sg(st.subject)))
  else:
    fields.update(f.subject_fields(first.subject))
    if rel != ISA:
      fields.update(verb_pl=f.verb(rel, True), verb_sg=f.verb(rel, False))
    for st in statements:
      if rel == ISA:
        choices.append(choice_t.format(o=f.sg(st.object), O=f.pl(st.object)))
      else:
        choices.append(choice_t.format(X=f.object_form(rel, st.object)))
  return prompt_t.format(**fields), tuple(choices)
