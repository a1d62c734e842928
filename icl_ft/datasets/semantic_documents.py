"""Phrasing templates and training-document assembly for `semantic_structure`.

Everything the model reads is built here from a `semantic_hierarchy.World`: English
categories, properties and verbs appear only as their nonsense words (nouns take a
plural "-s", verbs a third-person "-s"); the English left in the text is the template
words of this module (`template_words`).

Statements are phrased in one of two directions:

- forward, subject first: "Gruds are a type of abme.", "Gruds can zarp.",
  "Gruds blick telks.";
- reverse, object first: "Abmes include gruds.", "One thing that can zarp is the grud.",
  "Things that blick telks include gruds.".

Training documents use the `*_FORWARD` / `*_REVERSE` sentence templates and the
document formats below; reverse sentences only for facts the caller allows
(`DocumentBuilder(no_reverse=...)`). Test questions use `QUESTION_*` templates: the
syllogism and holdout splits ask new (inferred) statements in the training phrasings,
the reversal split uses the reverse phrasings, and the rephrase split uses
`QUESTION_REPHRASE`, whose phrasings never occur in training.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import re
from collections.abc import Iterable, Iterator, Sequence

from icl_ft.datasets.semantic_hierarchy import ISA, PROPERTY_KINDS, RELATION_VERBS, Fact, Statement, World

FORMATS: tuple[str, ...] = ("prose", "list", "field_guide", "comparison", "qa")
FORMAT_WEIGHTS: tuple[float, ...] = (0.3, 0.15, 0.15, 0.25, 0.15)

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


def _kind_key(relation: str) -> str:
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
      q, a = QA_FORWARD[_kind_key(rel)]
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
    label = FIELD_LABELS[_kind_key(rel)]
    if rel == ISA:
      return f"{label}: {f.sg(claims[0].objects[0])}"
    if rel in PROPERTY_KINDS:
      return f"{label}: {', '.join(f.object_form(rel, o) for o in claims[0].objects)}"
    return f"{label}: {'; '.join(f.predicate(c.relation, c.objects, False) for c in claims)}"


# ---- Documents ----


@dataclasses.dataclass(frozen=True)
class DocumentPlan:
  """A rendered document before it becomes a records.Document."""

  format: str
  focus: str
  units: tuple[Unit, ...]
  separators: tuple[str, ...]  # separators[i] goes between units i and i + 1

  @property
  def text(self) -> str:
    parts = [self.units[0].text]
    for sep, unit in zip(self.separators, self.units[1:]):
      parts += [sep, unit.text]
    return "".join(parts)


def _plan(fmt: str, focus: str, units: Sequence[Unit], separator: str) -> DocumentPlan:
  return DocumentPlan(fmt, focus, tuple(units), (separator,) * (len(units) - 1))


class DocumentBuilder:
  """Assembles training documents around focus categories.

  Args:
    world: the knowledge base; every base fact may be stated.
    no_reverse: ids of facts that are only ever stated forward.
    rng: the random source (all choices are drawn from it, in a fixed order).
    min_sentences, max_sentences: range of units per document.
  """

  def __init__(self, world: World, no_reverse: Iterable[str], rng: random.Random, min_sentences: int,
               max_sentences: int):
    self.world = world
    self.no_reverse = frozenset(no_reverse)
    self.rng = rng
    self.min_sentences = min_sentences
    self.max_sentences = max_sentences
    self.render = Renderer(world, rng)
    self.coverage: collections.Counter[str] = collections.Counter()
    self.own: dict[str, list[Fact]] = {c: [] for c in world.categories}
    for fact in world.facts:
      self.own[fact.statement.subject].append(fact)
    self.holders: dict[tuple[str, str], list[Fact]] = collections.defaultdict(list)
    for fact in world.facts:
      self.holders[(fact.statement.relation, fact.statement.object)].append(fact)
    self._layers: dict[str, list[list[str]]] = {}
    self.neighbors: dict[str, set[str]] = {c: set() for c in world.categories}
    for fact in world.facts:
      if fact.statement.kind != "property":
        a, b = fact.statement.subject, fact.statement.object
        self.neighbors[a].add(b)
        self.neighbors[b].add(a)

  # -- claims --

  def _groups(self, category: str) -> list[list[Fact]]:
    """The category's own facts grouped by relation (isa first), least-stated groups first."""
    by_rel: dict[str, list[Fact]] = collections.defaultdict(list)
    for fact in self.own[category]:
      by_rel[fact.statement.relation].append(fact)
    groups = [by_rel.pop(ISA)] if ISA in by_rel else []
    rest = [by_rel[r] for r in sorted(by_rel)]
    keyed = [(min(self.coverage[f.id] for f in g), self.rng.random(), i) for i, g in enumerate(rest)]
    return groups + [rest[i] for *_, i in sorted(keyed)]

  def _chunk(self, facts: list[Fact], combine: bool) -> list[Claim]:
    facts = sorted(facts, key=lambda f: (self.coverage[f.id], self.rng.random()))
    if combine or len(facts) == 1:
      size = len(facts) if len(facts) <= 3 else self.rng.randint(2, 3)
    else:
      size = self.rng.choice((1, 1, 2))
    return [Claim(tuple(facts[i : i + size])) for i in range(0, len(facts), size)]

  def forward_claims(self, category: str, limit: int) -> list[Claim]:
    """Forward claims about the category, at most `limit` (isa first, then least-stated)."""
    groups = self._groups(category)
    claims = [c for g in groups for c in self._chunk(g, combine=self.rng.random() < 0.5)]
    if len(claims) > limit:
      claims = [c for g in groups for c in self._chunk(g, combine=True)]
    if len(claims) > limit:
      head = claims[:1] if claims and claims[0].relation == ISA else []
      claims = head + claims[len(head) : limit]
    return claims[:limit]

  def reverse_claim(self, category: str) -> Claim | None:
    """A reverse claim around the category (its subcategories, or holders of one of its
    properties/relations), using only reversible facts; None if there is none."""
    options: list[list[Fact]] = []
    kids = [f for c in self.world.children[category] for f in self.own[c]
            if f.statement.relation == ISA and f.id not in self.no_reverse]
    if kids:
      options.append(kids)
    for fact in self.own[category]:
      if fact.statement.relation != ISA and fact.id not in self.no_reverse:
        key = (fact.statement.relation, fact.statement.object)
        others = [f for f in self.holders[key] if f.id not in self.no_reverse and f.id != fact.id]
        options.append([fact, *others])
    if not options:
      return None
    facts = self.rng.choice(options)
    if facts[0].statement.relation == ISA:
      facts = self.rng.sample(facts, min(len(facts), self.rng.randint(1, 3)))
    else:
      rest = facts[1:]
      facts = [facts[0], *self.rng.sample(rest, min(len(rest), self.rng.randint(0, 2)))]
      self.rng.shuffle(facts)
    return Claim(tuple(facts), reverse=True)

  def neighborhood(self, focus: str) -> Iterator[str]:
    """Other categories by hierarchy/relation distance from the focus (random order within a
    distance), then the unconnected rest; lazily."""
    if focus not in self._layers:
      seen = {focus}
      frontier = [focus]
      layers = []
      while frontier:
        nxt = sorted({n for c in frontier for n in self.neighbors[c]} - seen)
        seen.update(nxt)
        if nxt:
          layers.append(nxt)
        frontier = nxt
      rest = [c for c in self.world.categories if c not in seen]
      if rest:
        layers.append(rest)
      self._layers[focus] = layers
    for layer in self._layers[focus]:
      layer = list(layer)
      self.rng.shuffle(layer)
      yield from layer

  def _fill(self, claims: list[Claim], focus: str, n: int, exclude: Iterable[str] = ()) -> list[Claim]:
    used = {fid for c in claims for fid in c.fact_ids}
    skip = set(exclude) | {focus}
    for other in self.neighborhood(focus):
      if len(claims) >= n:
        break
      if other in skip:
        continue
      for claim in self.forward_claims(other, n - len(claims)):
        if not used.intersection(claim.fact_ids):
          claims.append(claim)
          used.update(claim.fact_ids)
    return claims[:n]

  def _count(self, units: Sequence[Unit]) -> None:
    for u in units:
      self.coverage.update(u.fact_ids)

  # -- formats --

  def document(self, focus: str, fmt: str) -> DocumentPlan:
    """One document about `focus` in format `fmt` (comparison falls back to prose when the
    focus is held out or a root)."""
    n = self.rng.randint(self.min_sentences, self.max_sentences)
    if fmt == "comparison" and (focus in self.world.holdouts or self.world.parent[focus] is None):
      fmt = "prose"
    if fmt == "comparison":
      plan = self._comparison(focus, n)
    elif fmt == "field_guide":
      plan = self._field_guide(focus, n)
    else:
      plan = self._claims_document(focus, n, fmt)
    self._count(plan.units)
    return plan

  def _claims_document(self, focus: str, n: int, fmt: str) -> DocumentPlan:
    claims = self.forward_claims(focus, n)
    if len(claims) < n and self.rng.random() < 0.5 and focus not in self.world.holdouts:
      rev = self.reverse_claim(focus)
      if rev is not None:
        claims.append(rev)
    claims = self._fill(claims, focus, n)
    units: list[Unit] = []
    if fmt == "qa":
      units = [Unit(self.render.qa(c), (c,)) for c in claims]
      return _plan(fmt, focus, units, "\n")
    prev_plural = None  # the subject of the previous sentence if it began with it in the plural
    for i, c in enumerate(claims):
      subject = None if c.reverse else c.subjects[0]
      pronoun = fmt == "prose" and subject is not None and subject == prev_plural and self.rng.random() < 0.2
      text = self.render.sentence(c, pronoun=pronoun)
      plural = subject is not None and (pronoun or text.startswith(capitalize(Forms(self.world).pl(subject)) + " "))
      prev_plural = subject if plural else None
      if fmt == "prose" and i > 0 and not pronoun and not text.startswith("In ") and self.rng.random() < 0.15:
        text = self.rng.choice(CONNECTIVES) + text[0].lower() + text[1:]
      units.append(Unit(text, (c,)))
    if fmt == "list":
      header = f"Facts about {Forms(self.world).pl(focus)}:"
      units = [Unit(f"{header}\n- {units[0].text}", units[0].claims)] + [Unit(f"- {u.text}", u.claims) for u in units[1:]]
      return _plan(fmt, focus, units, "\n")
    return _plan(fmt, focus, units, " ")

  def _entry(self, category: str, limit: int) -> list[Unit]:
    """A field-guide entry: 'Name: x' joined to its first line, then one line per kind."""
    line_claims: list[list[Claim]] = []
    behavior: list[Claim] = []  # all relations share one "Behavior:" line
    for g in self._groups(category):
      claim = Claim(tuple(g))
      if _kind_key(claim.relation) == "relation":
        if not behavior:
          line_claims.append(behavior)
        behavior.append(claim)
      else:
        line_claims.append([claim])
    lines = [Unit(self.render.field_line(cs), tuple(cs)) for cs in line_claims[:limit]]
    if not lines:
      return []
    name = f"Name: {Forms(self.world).sg(category)}"
    return [Unit(f"{name}\n{lines[0].text}", lines[0].claims), *lines[1:]]

  def _field_guide(self, focus: str, n: int) -> DocumentPlan:
    entries = [self._entry(focus, n)]
    total = len(entries[0])
    for other in self.neighborhood(focus):
      if total >= n:
        break
      room = n - total
      entry = self._entry(other, room)
      if entry:
        entries.append(entry)
        total += len(entry)
    units = [u for e in entries for u in e]
    # Lines of an entry are separated by a newline, entries by a blank line.
    seps = tuple("\n\n" if u_i == 0 else "\n" for e in entries for u_i, _ in enumerate(e))[1:]
    return DocumentPlan("field_guide", focus, tuple(units), seps)

  def _partner(self, focus: str) -> str | None:
    world = self.world
    related = {focus, *world.ancestors(focus), *world.descendants(focus)}
    ok = [c for c in world.categories if c not in related and c not in world.holdouts and world.parent[c] is not None]
    sibs = [c for c in ok if world.parent[c] == world.parent[focus]]
    if sibs:
      return self.rng.choice(sibs)
    near = sorted(ok, key=lambda c: (world.distance(focus, c), c))
    if not near:
      return None
    best = world.distance(focus, near[0])
    return self.rng.choice([c for c in near if world.distance(focus, c) == best])

  def _comparison(self, focus: str, n: int) -> DocumentPlan:
    partner = self._partner(focus)
    if partner is None:
      return self._claims_document(focus, n, "prose")
    f = Forms(self.world)
    a_groups, b_groups = self._groups(focus), self._groups(partner)
    a_isa, b_isa = a_groups[0], b_groups[0]
    p_a, p_b = a_isa[0].statement.object, b_isa[0].statement.object
    s1, s2 = capitalize(f.pl(focus)), f.pl(partner)
    isa_claims = (Claim(tuple(a_isa)), Claim(tuple(b_isa)))
    if p_a == p_b:
      first = COMPARISON_BOTH.format(S1=s1, s2=s2, o=f.sg(p_a))
    else:
      first = COMPARISON_ISA.format(S1=s1, s2=s2, o1=f.sg(p_a), o2=f.sg(p_b))
    units = [Unit(first, isa_claims)]
    a_claims = [c for g in a_groups[1:] for c in self._chunk(g, combine=True)]
    b_claims = [c for g in b_groups[1:] for c in self._chunk(g, combine=True)]
    pred = lambda c: f.predicate(c.relation, c.objects, True)  # noqa: E731
    while (a_claims or b_claims) and len(units) < n:
      if a_claims and b_claims and (self.rng.random() < 0.5 or len(units) + 2 > n):
        ca, cb = a_claims.pop(0), b_claims.pop(0)
        text = self.rng.choice(COMPARISON_CONTRAST).format(S1=s1, s2=s2, p1=pred(ca), p2=pred(cb))
        units.append(Unit(text, (ca, cb)))
      elif a_claims and b_claims:
        ca, cb = a_claims.pop(0), b_claims.pop(0)
        units.append(Unit(self.render.sentence(ca), (ca,)))
        units.append(Unit(COMPARISON_SECOND.format(S=capitalize(s2), pred_pl=pred(cb)), (cb,)))
      else:
        c = (a_claims or b_claims).pop(0)
        units.append(Unit(self.render.sentence(c), (c,)))
    if len(units) < n:
      used = {fid for u in units for fid in u.fact_ids}
      extra = self._fill([], focus, n - len(units) + 8, exclude=(partner,))
      for c in extra:
        if len(units) >= n:
          break
        if not used.intersection(c.fact_ids):
          units.append(Unit(self.render.sentence(c), (c,)))
          used.update(c.fact_ids)
    return _plan("comparison", focus, units, " ")


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
    table = QUESTION_REPHRASE[_kind_key(rel)]
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
