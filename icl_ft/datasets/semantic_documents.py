"""Training-document assembly for `semantic_structure`: formats, focus categories, coverage.

`DocumentBuilder` turns a `semantic_hierarchy.World`'s base facts into training documents
in the formats below (prose, bulleted lists, field-guide entries, comparisons, Q&A), each
around a focus category, phrased by `semantic_phrasing` (its templates and `Renderer`);
reverse sentences only for facts the caller allows (`DocumentBuilder(no_reverse=...)`).
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Iterable, Iterator, Sequence

from icl_ft.datasets.semantic_hierarchy import ISA, Fact, World
from icl_ft.datasets.semantic_phrasing import (COMPARISON_BOTH, COMPARISON_CONTRAST, COMPARISON_ISA,
                                               COMPARISON_SECOND, CONNECTIVES, Claim, Forms, Renderer,
                                               Unit, capitalize, kind_key)

FORMATS: tuple[str, ...] = ("prose", "list", "field_guide", "comparison", "qa")
FORMAT_WEIGHTS: tuple[float, ...] = (0.3, 0.15, 0.15, 0.25, 0.15)


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
      if kind_key(claim.relation) == "relation":
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
