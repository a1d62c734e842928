"""The English world behind the `semantic_structure` dataset, and its truth model.

A hierarchy of 110 real-world categories (animals, plants, objects, places, food; in
the spirit of Rogers & McClelland, 2008), each with 1-6 own properties of three kinds,

    is <adjective>    "robins are brown"
    has <noun>        "birds have feathers"
    can <verb>        "birds can fly" (given to the birds that do: no exceptions)

and relations between categories (`RELATION_VERBS`: eats, chases, lives in, grows in,
is kept in). Everything is named in English here; the dataset replaces every noun,
adjective and verb by a nonsense word (`make_lexicon`).

Truth (`World.holds`) is strict inheritance without exceptions, under a closed-world
reading:

- `isa(c, a)` holds iff `a` is a proper ancestor of `c` (transitive);
- a property or relation holds of `c` iff `c` or one of its ancestors owns it;
- a relation's object is matched exactly (if "owls eat rodents", "owls eat mice" does
  not *hold*; `World.definitely_false` treats such hierarchy-related objects, and
  properties owned below the subject, as undecided, so they are never used as wrong
  answers).

The table is written so that every inherited statement is also true of the real
category (e.g. "can fly" belongs to songbirds, birds of prey, ducks and parrots, not
to "bird", since penguins and ostriches are birds), and no category owns a property
or relation that an ancestor already owns (`_check_table`). The tables themselves are
`semantic_tables` (data only).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence

from icl_ft.datasets.semantic_tables import CATEGORY_TABLE, MAX_OWN_PROPERTIES, RELATION_TABLE

PROPERTY_KINDS: tuple[str, ...] = ("is", "has", "can")
# Relation name -> the English preposition kept after its nonsense verb ("" = none).
RELATION_VERBS: dict[str, str] = {
    "eats": "",
    "chases": "",
    "lives in": "in",
    "grows in": "in",
    "is kept in": "in",
}
ISA = "isa"
_RELATIONS = frozenset((ISA, *PROPERTY_KINDS, *RELATION_VERBS))



def relation_kind(relation: str) -> str:
  """'category' (isa), 'property' (is/has/can) or 'relation' (a verb of RELATION_VERBS)."""
  if relation == ISA:
    return "category"
  if relation in PROPERTY_KINDS:
    return "property"
  if relation in RELATION_VERBS:
    return "relation"
  raise ValueError(f"relation={relation!r}: not 'isa', a property kind {PROPERTY_KINDS} or a verb {sorted(RELATION_VERBS)}")


@dataclasses.dataclass(frozen=True, order=True)
class Statement:
  """A statement about the world: `subject` <relation> `object`, all in English.

  relation: "isa" (object = a category), "is"/"has"/"can" (object = a property, e.g.
  "red", "wings", "fly") or a relation verb of RELATION_VERBS (object = a category).
  """

  relation: str
  subject: str
  object: str

  def __post_init__(self):
    if self.relation not in _RELATIONS:
      relation_kind(self.relation)  # raises, naming the valid relations

  @property
  def kind(self) -> str:
    return relation_kind(self.relation)


def fact_id(statement: Statement) -> str:
  """Readable id of a base fact: 'isa:dog:mammal', 'can:duck:fly', 'lives_in:whale:ocean'."""
  slug = lambda s: s.replace(" ", "_")  # noqa: E731
  return f"{slug(statement.relation)}:{slug(statement.subject)}:{slug(statement.object)}"


@dataclasses.dataclass(frozen=True)
class Fact:
  """A base fact of the knowledge base (stated in training unless its category is held out)."""

  id: str
  statement: Statement


def parse_property(text: str) -> tuple[str, str]:
  """'has a tail' -> ('has', 'a tail')."""
  kind, _, prop = text.partition(" ")
  if kind not in PROPERTY_KINDS or not prop:
    raise ValueError(f"property {text!r}: must be '<is|has|can> <property>'")
  return kind, prop


def _check_table() -> None:
  names = [c for c, _, _ in CATEGORY_TABLE]
  if len(set(names)) != len(names):
    raise AssertionError("duplicate category names")
  parents = {c: p for c, p, _ in CATEGORY_TABLE}
  for c, p, props in CATEGORY_TABLE:
    if p is not None and p not in parents:
      raise AssertionError(f"{c}: unknown parent {p}")
    if not 1 <= len(props) <= MAX_OWN_PROPERTIES or len(set(props)) != len(props):
      raise AssertionError(f"{c}: needs 1-{MAX_OWN_PROPERTIES} distinct properties, has {props}")
    for prop in props:
      parse_property(prop)
  own = {c: set(props) for c, _, props in CATEGORY_TABLE}
  for s, r, o in RELATION_TABLE:
    if s not in parents or o not in parents or r not in RELATION_VERBS:
      raise AssertionError(f"bad relation {(s, r, o)}")
    own[s].add(f"{r} -> {o}")
  for c in names:
    a = parents[c]
    while a is not None:
      overlap = own[c] & own[a]
      if overlap:
        raise AssertionError(f"{c} owns {sorted(overlap)}, already owned by its ancestor {a}")
      a = parents[a]


_check_table()


def english_categories() -> tuple[str, ...]:
  """All categories of the full English hierarchy, in table order."""
  return tuple(c for c, _, _ in CATEGORY_TABLE)


def lexemes() -> tuple[str, ...]:
  """Every content word of the full English world, as sorted lexeme keys.

  'category:<name>', '<kind>:<property>' (kind in is/has/can), 'verb:<relation>'.
  """
  keys = {f"category:{c}" for c, _, _ in CATEGORY_TABLE}
  for _, _, props in CATEGORY_TABLE:
    keys.update("{}:{}".format(*parse_property(p)) for p in props)
  keys.update(f"verb:{r}" for r in RELATION_VERBS)
  return tuple(sorted(keys))


def make_lexicon(pool: Sequence[str], seed: int) -> dict[str, str]:
  """Deterministic lexeme -> nonsense word mapping (distinct words drawn from `pool` by seed)."""
  keys = lexemes()
  if len(pool) < len(keys):
    raise ValueError(f"word pool has {len(pool)} words; the world needs {len(keys)}")
  rng = random.Random(f"semantic_structure:{seed}:lexicon")
  return dict(zip(keys, rng.sample(sorted(pool), len(keys))))


def select_categories(num_categories: int, rng: random.Random) -> tuple[str, ...]:
  """An upward-closed subset of `num_categories` English categories (table order).

  Leaves are visited in random order and added with their missing ancestors while
  they fit, each followed (when they fit) by the objects of its relations, so small
  worlds keep some relations; remaining room goes to categories whose parent is in.
  """
  table = english_categories()
  if not 1 <= num_categories <= len(table):
    raise ValueError(f"num_categories={num_categories}: must be in [1, {len(table)}]")
  parents = {c: p for c, p, _ in CATEGORY_TABLE}
  has_child = {p for p in parents.values() if p is not None}
  leaves = [c for c in table if c not in has_child]
  rng.shuffle(leaves)
  chosen: set[str] = set()

  def add(category: str) -> bool:
    missing = []
    c: str | None = category
    while c is not None and c not in chosen:
      missing.append(c)
      c = parents[c]
    if len(chosen) + len(missing) > num_categories:
      return False
    chosen.update(missing)
    return True

  for leaf in leaves:
    if add(leaf):
      lineage = {leaf}
      c = parents[leaf]
      while c is not None:
        lineage.add(c)
        c = parents[c]
      objects = sorted({o for s, _, o in RELATION_TABLE if s in lineage})
      rng.shuffle(objects)
      for o in objects:
        add(o)
  while len(chosen) < num_categories:
    frontier = [c for c in table if c not in chosen and (parents[c] is None or parents[c] in chosen)]
    chosen.add(rng.choice(frontier))
  return tuple(c for c in table if c in chosen)


class World:
  """A knowledge base over a subset of the English categories, and its truth model.

  Attributes:
    categories: the categories, in table order.
    parent: category -> parent (None for roots).
    holdouts: held-out categories: their own properties and relations are removed,
      so all that is true of them is inherited from their parent.
    facts: the base facts (direct isa facts, own properties, own relations), in a
      fixed order; everything `holds` is a base fact or follows from them.
    lexicon: lexeme -> nonsense word (see `lexemes`).
  """

  def __init__(
      self,
      categories: Iterable[str],
      holdouts: Iterable[str] = (),
      lexicon: Mapping[str, str] | None = None,
  ):
    chosen = set(categories)
    table_parent = {c: p for c, p, _ in CATEGORY_TABLE}
    unknown = sorted(chosen - set(table_parent))
    if unknown:
      raise ValueError(f"unknown categories {unknown}")
    self.categories = tuple(c for c in english_categories() if c in chosen)
    self.parent: dict[str, str | None] = {}
    for c in self.categories:
      p = table_parent[c]
      if p is not None and p not in chosen:
        raise ValueError(f"category {c!r} without its parent {p!r}")
      self.parent[c] = p
    self._ancestors: dict[str, tuple[str, ...]] = {}
    for c in self.categories:
      chain = []
      p = self.parent[c]
      while p is not None:
        chain.append(p)
        p = self.parent[p]
      self._ancestors[c] = tuple(chain)
    self._descendants: dict[str, tuple[str, ...]] = {
        c: tuple(x for x in self.categories if c in self._ancestors[x]) for c in self.categories
    }
    self._distance: dict[tuple[str, str], int] = {}
    self.children: dict[str, tuple[str, ...]] = {
        c: tuple(x for x in self.categories if self.parent[x] == c) for c in self.categories
    }
    self.holdouts = frozenset(holdouts)
    bad = sorted(self.holdouts - chosen)
    if bad:
      raise ValueError(f"holdouts {bad} are not among the categories")
    self.lexicon = dict(lexicon or {})

    facts: list[Statement] = []
    for c, _, props in CATEGORY_TABLE:
      if c not in chosen:
        continue
      if self.parent[c] is not None:
        facts.append(Statement(ISA, c, self.parent[c]))
      if c in self.holdouts:
        continue
      for prop in props:
        kind, name = parse_property(prop)
        facts.append(Statement(kind, c, name))
      facts.extend(Statement(r, s, o) for s, r, o in RELATION_TABLE if s == c and o in chosen)
    self.facts: tuple[Fact, ...] = tuple(Fact(fact_id(s), s) for s in facts)
    self.fact_by_id: dict[str, Fact] = {f.id: f for f in self.facts}
    self._own: frozenset[Statement] = frozenset(f.statement for f in self.facts if f.statement.relation != ISA)
    by_relation: dict[str, list[Statement]] = {}
    for f in self.facts:
      by_relation.setdefault(f.statement.relation, []).append(f.statement)
    self.statements_by_relation: dict[str, tuple[Statement, ...]] = {r: tuple(v) for r, v in by_relation.items()}
    # (relation, object) pairs true of each category, and of it or any subcategory.
    own_pairs: dict[str, set[tuple[str, str]]] = {c: set() for c in self.categories}
    for st in self._own:
      own_pairs[st.subject].add((st.relation, st.object))
    self._true: dict[str, frozenset[tuple[str, str]]] = {}
    for c in self.categories:
      chain = (c, *self.ancestors(c))
      self._true[c] = frozenset({(ISA, a) for a in chain[1:]}.union(*(own_pairs[a] for a in chain)))
    # relation -> object -> subjects owning (relation, object), for wrong-answer search.
    self.holders: dict[str, dict[str, tuple[str, ...]]] = {}
    for rel, sts in self.statements_by_relation.items():
      table: dict[str, list[str]] = {}
      for st in sts:
        table.setdefault(st.object, []).append(st.subject)
      self.holders[rel] = {o: tuple(v) for o, v in sorted(table.items())}
    self._true_below: dict[str, frozenset[tuple[str, str]]] = {
        c: self._true[c].union(*(self._true[d] for d in self.descendants(c))) for c in self.categories
    }
    targets = {f.statement.object for f in self.facts if f.statement.kind == "relation"}
    clash = sorted(self.holdouts & targets)
    if clash:
      raise ValueError(f"held-out categories {clash} are objects of relations")

  # ---- hierarchy ----

  def ancestors(self, category: str) -> tuple[str, ...]:
    """Proper ancestors, nearest first."""
    return self._ancestors[category]

  def descendants(self, category: str) -> tuple[str, ...]:
    """Proper descendants, in table order."""
    return self._descendants[category]

  def depth(self, category: str) -> int:
    return len(self._ancestors[category])

  def distance(self, a: str, b: str) -> int:
    """Tree distance (edges); categories under different roots meet at a virtual root."""
    key = (a, b)
    if key not in self._distance:
      pa = (a, *self._ancestors[a])
      pb = (b, *self._ancestors[b])
      common = next((x for x in pa if x in pb), None)
      self._distance[key] = len(pa) + len(pb) if common is None else pa.index(common) + pb.index(common)
    return self._distance[key]

  def is_leaf(self, category: str) -> bool:
    return not self.children[category]

  # ---- truth ----

  def holds(self, statement: Statement) -> bool:
    """True iff the statement is a base fact or follows from them by inheritance."""
    s = statement.subject
    if s not in self._true:
      return False
    return (statement.relation, statement.object) in self._true[s]

  def definitely_false(self, statement: Statement) -> bool:
    """False, and not true of any subcategory of the subject (nor, for relations, of an
    object related to it in the hierarchy): safe as a wrong answer."""
    s, o = statement.subject, statement.object
    if s not in self._true or self.holds(statement):
      return False
    if statement.relation == ISA:
      return s != o and o in self.parent
    objects: tuple[str, ...] = (o,)
    if statement.kind == "relation":
      objects = (o, *self.ancestors(o), *self.descendants(o))
    below = self._true_below[s]
    return not any((statement.relation, y) in below for y in objects)

  def derivation(self, statement: Statement) -> tuple[str, ...]:
    """Ids of the base facts the statement follows from (the isa chain, then the owned fact).

    Raises ValueError if it does not hold.
    """
    if not self.holds(statement):
      raise ValueError(f"{statement} does not hold")
    s, o = statement.subject, statement.object
    chain = (s, *self.ancestors(s))
    if statement.relation == ISA:
      end = chain.index(o)
    else:
      end = next(i for i, a in enumerate(chain) if Statement(statement.relation, a, o) in self._own)
    ids = [fact_id(Statement(ISA, chain[i], chain[i + 1])) for i in range(end)]
    if statement.relation != ISA:
      ids.append(fact_id(Statement(statement.relation, chain[end], o)))
    return tuple(ids)

  def true_statements(self, category: str) -> tuple[Statement, ...]:
    """Everything that holds of `category`: ancestors, then own and inherited properties/relations."""
    out = [Statement(ISA, category, a) for a in self.ancestors(category)]
    for a in (category, *self.ancestors(category)):
      out.extend(Statement(f.statement.relation, category, f.statement.object) for f in self.facts
                 if f.statement.subject == a and f.statement.relation != ISA)
    return tuple(out)

  # ---- words ----

  def word(self, lexeme: str) -> str:
    """The nonsense word of a lexeme key ('category:dog', 'can:fly', 'verb:eats')."""
    return self.lexicon[lexeme]

  def category_word(self, category: str) -> str:
    return self.lexicon[f"category:{category}"]

  def property_word(self, kind: str, prop: str) -> str:
    return self.lexicon[f"{kind}:{prop}"]

  def verb_word(self, relation: str) -> str:
    return self.lexicon[f"verb:{relation}"]

  def object_word(self, statement: Statement) -> str:
    """The nonsense word of the statement's object (a category or a property)."""
    if statement.kind == "property":
      return self.property_word(statement.relation, statement.object)
    return self.category_word(statement.object)

  def english(self) -> dict[str, str]:
    """Nonsense word -> lexeme key (the inverse of the lexicon)."""
    return {w: k for k, w in self.lexicon.items()}
