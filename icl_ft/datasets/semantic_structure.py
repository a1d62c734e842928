"""Semantic structure: a hierarchy of categories with properties and relations, in nonsense words.

The paper's new dataset (Lampinen et al., 2025). The world (`semantic_hierarchy`) is a
real-world hierarchy of 110 categories (dog -> mammal -> animal -> living thing; car ->
vehicle -> object; ...) with 1-6 own properties each ("is red", "has wings", "can fly"),
inherited by subcategories, and relations between categories (eats, chases, lives in,
grows in, is kept in). Every noun, adjective and verb is replaced by a nonsense word
from `words.pool("semantic_structure")` by a seeded mapping (`card["lexicon"]`).

Training: short, vaguely encyclopedic documents about a focus category in five formats
(`semantic_documents.FORMATS`): prose, bulleted lists, field-guide entries ("Name: ...
Type: ... Traits: ..."), comparisons of two categories, and Q/A pairs. Documents state
base facts only (a category's parent, its own properties and relations), never an
inherited one. Each document's `metadata` holds its `format`, `focus` (English),
`sentence_fact_ids` (the facts of each unit of `sentences`) and `reversed_fact_ids`
(facts it states object-first).

Test splits (multiple choice, `num_choices` choices, one correct; the choices are
never in context):

- `rephrase`: a trained fact in the trained direction, in a held-out phrasing
  ("Gruds are able to" -> " zarp."); subsets `{category,property,relation}_rephrase`.
- `reversal`: a trained fact asked object-first ("Abmes include" -> " gruds.",
  "One thing that can zarp is the" -> " grud."). Those facts are stated forward only
  in training. Subsets `{category,property,relation}_reversal`.
- `syllogism`: an inherited statement ("gruds are abmes; abmes can zarp" => "Gruds
  can" -> " zarp."), never stated in training; subset `chain{k}_{kind}` with k the
  number of premises (2, 3, or `4plus`).
- `category_holdout`: held-out categories (leaves) whose only training fact is their
  parent; every inference is asked: inherited properties (`holdout_property`) and
  relations (`holdout_relation`), ancestors beyond the parent (`holdout_category`), and
  the parent fact reversed (`holdout_reversal`).

Distractors are hard: each is the answer the same relation has for some other category
in the knowledge base (for "Gruds can ___", a verb that some other category can do), is
false of the question's category (`World.definitely_false`: also not true of any of its
subcategories, nor, for relations, of an object related in the hierarchy), and is
preferred close in the hierarchy to the question's category.

`build_world(params, seed)` rebuilds the knowledge base (base facts with ids, holdouts,
lexicon) and `World.holds(Statement)` decides the truth of any statement.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import random
from collections.abc import Mapping, Sequence

from icl_ft.datasets import records
from icl_ft.datasets import semantic_documents as docs
from icl_ft.datasets import semantic_hierarchy as hierarchy
from icl_ft.datasets import semantic_phrasing as phrasing
from icl_ft.datasets import words
from icl_ft.datasets.semantic_hierarchy import ISA, Statement, World

NAME = "semantic_structure"
SPLITS: tuple[str, ...] = ("rephrase", "reversal", "syllogism", "category_holdout")
MIN_CATEGORIES = 8
# At most this fraction of a subset's facts is kept forward-only for the reversal split,
# so every kind of reverse phrasing still occurs in training (for other facts).
MAX_REVERSED_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class Params:
  """Dataset size; defaults are the paper's scale."""

  num_categories: int = 110
  num_documents: int = 2200
  min_sentences: int = 4
  max_sentences: int = 20
  num_holdout_categories: int = 20
  num_rephrase_questions: int = 300
  num_reversal_questions: int = 300
  num_syllogism_questions: int = 300
  num_choices: int = 4


SCALES: dict[str, Params] = {
    "paper": Params(),
    "small": Params(
        num_categories=24,
        num_documents=64,
        min_sentences=4,
        max_sentences=5,
        num_holdout_categories=3,
        num_rephrase_questions=40,
        num_reversal_questions=40,
        num_syllogism_questions=40,
    ),
}


def _scale_name(params: Params) -> str:
  return next((name for name, p in SCALES.items() if p == params), "custom")


def _rng(seed: int, stream: str) -> random.Random:
  return random.Random(f"{NAME}:{seed}:{stream}")


def _holdout_candidates(world: World) -> list[str]:
  targets = {f.statement.object for f in world.facts if f.statement.kind == "relation"}
  return [c for c in world.categories if world.is_leaf(c) and c not in targets and world.parent[c] is not None]


def build_world(params: Params, seed: int = 0, vocabulary: Sequence[str] | None = None) -> World:
  """The knowledge base of the dataset generated from (params, seed).

  Chooses the categories (all 110 at paper scale), the held-out categories (their own
  properties and relations are dropped: all that is true of them follows from their
  parent) and the English -> nonsense lexicon over `vocabulary` (default: the dataset's own
  pool, `words.pool(NAME)`).
  """
  total = len(hierarchy.english_categories())
  if not MIN_CATEGORIES <= params.num_categories <= total:
    raise ValueError(f"num_categories={params.num_categories}: must be in [{MIN_CATEGORIES}, {total}]")
  rng = _rng(seed, "world")
  categories = hierarchy.select_categories(params.num_categories, rng)
  full = World(categories)
  eligible = _holdout_candidates(full)
  rng.shuffle(eligible)
  if not 0 <= params.num_holdout_categories <= len(eligible):
    raise ValueError(
        f"num_holdout_categories={params.num_holdout_categories}: must be in [0, {len(eligible)}] for "
        f"num_categories={params.num_categories} (held-out categories are non-root leaves that no relation "
        f"points to)"
    )
  # Spread over parents (first at most one holdout per parent), preferring holdouts whose
  # every inference has num_choices - 1 wrong answers in the resulting world (in small
  # worlds some inherited relations have too few objects; those inferences are skipped).
  k = max(params.num_choices - 1, 1)
  holdouts: list[str] = []
  for strict, one_per_parent in ((True, True), (True, False), (False, True), (False, False)):
    for c in eligible:
      if len(holdouts) == params.num_holdout_categories:
        break
      if c in holdouts or (one_per_parent and any(full.parent[h] == full.parent[c] for h in holdouts)):
        continue
      if strict:
        trial = World(categories, holdouts=[*holdouts, c])
        if not all(_holdout_answerable(trial, h, k) for h in trial.holdouts):
          continue
      holdouts.append(c)
  lexicon = hierarchy.make_lexicon(words.pool(NAME) if vocabulary is None else tuple(vocabulary), seed)
  return World(categories, holdouts=holdouts, lexicon=lexicon)


# ---- Questions ----


@dataclasses.dataclass(frozen=True)
class QuestionPlan:
  """A question before rendering: the statement asked, its answer slot and distractors."""

  split: str
  subset: str
  statement: Statement
  style: str  # "forward" | "reverse" | "rephrase" (semantic_phrasing.question_text)
  fact_ids: tuple[str, ...]
  distractors: tuple[Statement, ...] = ()

  @property
  def slot(self) -> str:
    return "subject" if self.style == "reverse" else "object"


def _distractor_candidates(world: World, statement: Statement, slot: str,
                           limit: int | None = None) -> list[tuple[int, Statement]]:
  """Valid wrong answers for the slot (all, or the first `limit`), with their hierarchy
  distance to the question's category."""
  rel, subject, obj = statement.relation, statement.subject, statement.object
  holders = world.holders.get(rel, {})
  out: list[tuple[int, Statement]] = []
  if slot == "object":
    for o, subjects in holders.items():  # sorted by object
      others = [x for x in subjects if x != subject]
      if o == obj or not others:
        continue
      cand = Statement(rel, subject, o)
      if world.definitely_false(cand):
        out.append((0 if limit else min(world.distance(subject, x) for x in others), cand))
        if limit and len(out) >= limit:
          break
  elif slot == "subject":
    for s in sorted({x for subjects in holders.values() for x in subjects}):
      cand = Statement(rel, s, obj)
      if s != subject and world.definitely_false(cand):
        out.append((0 if limit else world.distance(subject, s), cand))
        if limit and len(out) >= limit:
          break
  else:
    raise ValueError(f"slot={slot!r}: must be 'object' or 'subject'")
  return out


def distractors(world: World, statement: Statement, slot: str, k: int, rng: random.Random) -> tuple[Statement, ...] | None:
  """`k` hard wrong answers for the statement's `slot` ("object" or "subject"), or None.

  Each candidate fills the slot of the same relation in some other base fact, makes the
  statement `definitely_false`, and is ranked by hierarchy distance to the question's
  category (ties broken at random); the k are drawn from the 2k nearest.
  """
  ranked = [(d, rng.random(), c) for d, c in _distractor_candidates(world, statement, slot)]
  if len(ranked) < k:
    return None
  ranked.sort()
  return tuple(rng.sample([c for *_, c in ranked[: 2 * k]], k))


def _holdout_answerable(world: World, holdout: str, k: int) -> bool:
  """True if every inference about the held-out category has k wrong answers."""
  parent = Statement(ISA, holdout, world.parent[holdout])
  return len(_distractor_candidates(world, parent, "subject", k)) >= k and all(
      len(_distractor_candidates(world, st, "object", k)) >= k for st in world.true_statements(holdout) if st != parent)


def _chain_subset(n_premises: int, kind: str) -> str:
  return f"chain{n_premises if n_premises < 4 else '4plus'}_{kind}"


def _with_distractors(world: World, plans: Sequence[QuestionPlan], k: int, rng: random.Random) -> list[QuestionPlan]:
  out = []
  for plan in plans:
    ds = distractors(world, plan.statement, plan.slot, k, rng)
    if ds is not None:
      out.append(dataclasses.replace(plan, distractors=ds))
  return out


def _allocate(total: int, capacity: Mapping[str, int]) -> dict[str, int]:
  """Spreads `total` over subsets as evenly as their capacities allow (sorted-key order)."""
  alloc = {k: 0 for k in sorted(capacity)}
  remaining = total
  open_ = [k for k in alloc if capacity[k] > 0]
  while remaining > 0 and open_:
    share = max(1, remaining // len(open_))
    for key in list(open_):
      give = min(share, capacity[key] - alloc[key], remaining)
      alloc[key] += give
      remaining -= give
      if alloc[key] >= capacity[key]:
        open_.remove(key)
      if remaining == 0:
        break
  return alloc


def _sample_balanced(plans: Sequence[QuestionPlan], total: int, param: str, rng: random.Random,
                     capacity_fraction: float = 1.0) -> list[QuestionPlan]:
  by_subset: dict[str, list[QuestionPlan]] = collections.defaultdict(list)
  for p in plans:
    by_subset[p.subset].append(p)
  capacity = {s: math.floor(len(ps) * capacity_fraction) for s, ps in by_subset.items()}
  available = sum(capacity.values())
  if not 0 <= total <= available:
    raise ValueError(f"{param}={total}: must be in [0, {available}] for this world and num_choices "
                     f"(candidates with enough wrong answers, by subset: { {s: capacity[s] for s in sorted(capacity)} })")
  chosen = []
  for subset, n in _allocate(total, capacity).items():
    chosen.extend(rng.sample(by_subset[subset], n))
  return chosen


def plan_questions(world: World, params: Params, seed: int) -> dict[str, list[QuestionPlan]]:
  """The questions of every split (before rendering), deterministic in (world, params, seed)."""
  k = params.num_choices - 1
  trained = [f for f in world.facts if f.statement.subject not in world.holdouts]
  plans: dict[str, list[QuestionPlan]] = {}

  rng = _rng(seed, "rephrase")
  cands = [QuestionPlan("rephrase", f"{f.statement.kind}_rephrase", f.statement, "rephrase", (f.id,)) for f in trained]
  plans["rephrase"] = _sample_balanced(_with_distractors(world, cands, k, rng), params.num_rephrase_questions,
                                       "num_rephrase_questions", rng)

  rng = _rng(seed, "reversal")
  cands = [QuestionPlan("reversal", f"{f.statement.kind}_reversal", f.statement, "reverse", (f.id,)) for f in trained]
  plans["reversal"] = _sample_balanced(_with_distractors(world, cands, k, rng), params.num_reversal_questions,
                                       "num_reversal_questions", rng, MAX_REVERSED_FRACTION)

  rng = _rng(seed, "syllogism")
  base = {f.statement for f in world.facts}
  cands = []
  for c in world.categories:
    if c in world.holdouts:
      continue
    for st in world.true_statements(c):
      if st not in base:
        premises = world.derivation(st)
        cands.append(QuestionPlan("syllogism", _chain_subset(len(premises), st.kind), st, "forward", premises))
  plans["syllogism"] = _sample_balanced(_with_distractors(world, cands, k, rng), params.num_syllogism_questions,
                                        "num_syllogism_questions", rng)

  rng = _rng(seed, "category_holdout")
  cands = []
  for h in sorted(world.holdouts, key=world.categories.index):
    parent_fact = Statement(ISA, h, world.parent[h])
    cands.append(QuestionPlan("category_holdout", "holdout_reversal", parent_fact, "reverse",
                              world.derivation(parent_fact)))
    for st in world.true_statements(h):
      if st != parent_fact:
        cands.append(QuestionPlan("category_holdout", f"holdout_{st.kind}", st, "forward", world.derivation(st)))
  plans["category_holdout"] = _with_distractors(world, cands, k, rng)
  return plans


def _holdout_inferences(world: World) -> int:
  return sum(len(world.true_statements(h)) for h in world.holdouts)  # forward inferences + the reversal


def render_questions(world: World, plans: Mapping[str, Sequence[QuestionPlan]], seed: int
                     ) -> tuple[dict[str, tuple[records.Question, ...]], dict[str, tuple[Statement, ...]]]:
  """Renders question plans: ({split: questions}, {question id: the statement of each choice})."""
  tests: dict[str, tuple[records.Question, ...]] = {}
  statements: dict[str, tuple[Statement, ...]] = {}
  for split in SPLITS:
    rng = _rng(seed, f"render:{split}")
    out = []
    for i, plan in enumerate(plans[split]):
      options = [plan.statement, *plan.distractors]
      rng.shuffle(options)
      prompt, choices = phrasing.question_text(world, options, plan.style, rng)
      qid = f"{split}_{i:04d}"
      out.append(records.Question(
          id=qid,
          split=split,
          subset=plan.subset,
          prompt=prompt,
          choices=choices,
          correct=(options.index(plan.statement),),
          fact_ids=plan.fact_ids,
      ))
      statements[qid] = tuple(options)
    tests[split] = tuple(out)
  return tests, statements


# ---- Documents ----


def write_documents(world: World, params: Params, no_reverse: frozenset[str], seed: int) -> list[records.Document]:
  """The training documents: each category is the focus of about num_documents / num_categories."""
  if params.num_documents < len(world.categories):
    raise ValueError(f"num_documents={params.num_documents}: must be >= num_categories={len(world.categories)} "
                     "(every category is the focus of at least one document)")
  if not 1 <= params.min_sentences <= params.max_sentences:
    raise ValueError(f"min_sentences={params.min_sentences}, max_sentences={params.max_sentences}: "
                     "need 1 <= min_sentences <= max_sentences")
  rng = _rng(seed, "documents")
  builder = docs.DocumentBuilder(world, no_reverse, rng, params.min_sentences, params.max_sentences)
  focus: list[str] = []
  while len(focus) < params.num_documents:
    cycle = list(world.categories)
    rng.shuffle(cycle)
    focus.extend(cycle)
  out = []
  for i, c in enumerate(focus[: params.num_documents]):
    fmt = rng.choices(docs.FORMATS, weights=docs.FORMAT_WEIGHTS)[0]
    plan = builder.document(c, fmt)
    if len(plan.units) < params.min_sentences:
      raise ValueError(f"min_sentences={params.min_sentences}: a document about {c!r} has only "
                       f"{len(plan.units)} units in a world of num_categories={len(world.categories)}")
    out.append(records.Document(
        id=f"doc_{i:04d}",
        text=plan.text,
        sentences=tuple(u.text for u in plan.units),
        fact_ids=tuple(dict.fromkeys(fid for u in plan.units for fid in u.fact_ids)),
        metadata={
            "format": plan.format,
            "focus": plan.focus,
            "sentence_fact_ids": [list(u.fact_ids) for u in plan.units],
            "reversed_fact_ids": sorted({fid for u in plan.units for fid in u.reversed_fact_ids}),
        },
    ))
  missing = [f.id for f in world.facts if builder.coverage[f.id] == 0]
  if missing:
    raise ValueError(f"num_documents={params.num_documents}: too few documents to state every fact "
                     f"({len(missing)} never stated, e.g. {missing[:3]})")
  return out


@dataclasses.dataclass(frozen=True)
class Generated:
  """A generated dataset with its knowledge base and the statement behind every choice."""

  dataset: records.Dataset
  world: World
  choice_statements: Mapping[str, tuple[Statement, ...]]
  no_reverse: frozenset[str]


def generate_with_world(params: Params, seed: int = 0, vocabulary: Sequence[str] | None = None
                        ) -> Generated:
  """Generates the dataset and returns it with its world (`vocabulary`: as `build_world`)."""
  if params.num_choices < 2:
    raise ValueError(f"num_choices={params.num_choices}: must be >= 2")
  for name in ("num_rephrase_questions", "num_reversal_questions", "num_syllogism_questions"):
    if getattr(params, name) < 0:
      raise ValueError(f"{name}={getattr(params, name)}: must be >= 0")
  world = build_world(params, seed, vocabulary)
  plans = plan_questions(world, params, seed)
  # Forward only: the reversal split's facts and the held-out categories' parent facts.
  no_reverse = frozenset(p.fact_ids[0] for p in plans["reversal"]) | frozenset(
      hierarchy.fact_id(Statement(ISA, h, world.parent[h])) for h in world.holdouts)
  train = write_documents(world, params, no_reverse, seed)
  tests, choice_statements = render_questions(world, plans, seed)
  train_text = "\n\n".join(d.text for d in train)
  card = {
      "name": NAME,
      "seed": seed,
      "scale": _scale_name(params),
      "params": dataclasses.asdict(params),
      "description": (
          "A hierarchy of real-world categories with properties and relations, every content word a nonsense "
          "word; training articles state base facts only; tests: rephrasings, reversals, syllogisms (inherited "
          "facts) and held-out categories."
      ),
      "num_choices": params.num_choices,
      "num_facts": len(world.facts),
      "categories": list(world.categories),
      "holdout_categories": [c for c in world.categories if c in world.holdouts],
      # Inferences about held-out categories left out for lack of num_choices - 1 wrong answers.
      "holdout_inferences_skipped": _holdout_inferences(world) - len(tests["category_holdout"]),
      "lexicon": dict(sorted(world.lexicon.items())),
      "formats": dict(sorted(collections.Counter(d.metadata["format"] for d in train).items())),
      "subsets": {s: dict(sorted(collections.Counter(q.subset for q in qs).items())) for s, qs in tests.items()},
      "train_characters": len(train_text),
      "train_words": len(train_text.split()),
  }
  dataset = records.Dataset(name=NAME, train=tuple(train), tests=tests, card=card)
  return Generated(dataset=dataset, world=world, choice_statements=choice_statements, no_reverse=no_reverse)


def generate(params: Params, seed: int = 0, vocabulary: Sequence[str] | None = None) -> records.Dataset:
  """Generates the dataset deterministically from `params` and `seed` (over `vocabulary`)."""
  return generate_with_world(params, seed, vocabulary).dataset
