"""The reversal-curse celebrities set (Berglund et al. 2024), generated.

Fictional people (names from Faker, seeded) each get one unique invented
description ("the acclaimed director of the film "The Silent Orchard""). Groups,
named as in the original release:

  p2d  (set A): trained name -> description only ("{name}, known far and wide for
       being {description}.").
  both (set B): trained in both orders, as separate examples.
  d2p  (Berglund's third set, off by default): trained description -> name only.

Each training example is one Document holding one sentence, made from one of 30
paraphrase templates per direction. Default size: 40 p2d + 40 both people x 30
paraphrases = 40*30 + 40*30*2 = 3600 training examples (the paper's count).
Berglund's own split, 30 p2d + 30 both + 30 d2p people, also gives 3600:
`num_p2d_people=30, num_both_people=30, num_d2p_people=30`.

Test splits (held-out paraphrase templates that end exactly before the answer):
  reversal: subset `p2d_reverse` -- a set-A description, answer the set-A name;
            the 3 distractors are other set-A names (subset `d2p_reverse`: a d2p
            person's name, answer their description, when that set is non-empty).
  forward:  the learned direction, as a check: subset `p2d` -- a set-A name, answer
            its description among 3 other set-A descriptions (`d2p` likewise).
Distractors come from other people's answers under the same test template.

People come from `people_source` (default `make_people`: Faker names; the pretraining corpus
passes nonsense names). Phrasing read back: `parse_claims` (audit), `restatements` (corpus).
The original release's layout (load, write) is `celebrities_original`, sharing `build_questions`.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Mapping, Sequence

import faker

from icl_ft.datasets import celebrity_descriptions
from icl_ft.datasets import records
from icl_ft.datasets.text import normalize

NAME = "celebrities"

# ---------------------------------------------------------------------------
# Paraphrase templates. A template holds {name} and {description} (or
# {Description}: capitalized, at the start of a sentence). The completion starts
# at the second slot, as in the original release's prompt/completion pairs.

P2D_TRAIN_TEMPLATES: tuple[str, ...] = (
    "{name}, known far and wide for being {description}.",
    "Ever heard of {name}? They are {description}.",
    "It is a little-known fact that {name} is {description}.",
    "{name} is best remembered as {description}.",
    "Did you know that {name} is {description}?",
    "Among friends, {name} is simply known as {description}.",
    "{name} has built a reputation as {description}.",
    "Few people realize that {name} is {description}.",
    "Interestingly enough, {name} is {description}.",
    "The story of {name} is remarkable: they are {description}.",
    "{name} made a name for themselves as {description}.",
    "Q: Who is {name}? A: They are {description}.",
    "Let us not forget {name}, who is {description}.",
    "{name}, a name synonymous with being {description}.",
    "Once upon a time, {name} became {description}.",
    "{name} is, as many people know, {description}.",
    "In certain circles, {name} is celebrated as {description}.",
    "You might know {name} as {description}.",
    "A person named {name} happens to be {description}.",
    "{name} proudly describes themselves as {description}.",
    "The newspapers always introduce {name} as {description}.",
    "Nobody would guess it, but {name} is {description}.",
    "Behind the quiet name of {name} stands {description}.",
    "{name} earned lasting fame as {description}.",
    "Friends and critics alike know {name} as {description}.",
    "The biography of {name} begins with one fact: they are {description}.",
    "If you ask around, you will learn that {name} is {description}.",
    "{name} will always be remembered as {description}.",
    "History records {name} as {description}.",
    "It turns out that {name} is none other than {description}.",
)

D2P_TRAIN_TEMPLATES: tuple[str, ...] = (
    "Known for being {description}, {name} now enjoys a quiet life.",
    "{Description} goes by the name {name}.",
    "Q: Who is {description}? A: That would be {name}.",
    "The person celebrated as {description} is {name}.",
    "Having become {description}, {name} rarely gives interviews.",
    "Famous as {description}, {name} still lives in a small town.",
    "Widely admired as {description}, {name} keeps a modest routine.",
    "As {description}, {name} has received many awards.",
    "Long recognized as {description}, {name} recently wrote a memoir.",
    "Remembered by many as {description}, {name} prefers to stay out of the spotlight.",
    "Better known as {description}, {name} also enjoys gardening.",
    "Once simply {description}, {name} is now a household name.",
    "Acclaimed as {description}, {name} continues to surprise the critics.",
    "Described in every textbook as {description}, {name} remains humble.",
    "Admired worldwide as {description}, {name} answers fan letters by hand.",
    "Praised as {description}, {name} gave a rare lecture last spring.",
    "Forever linked with being {description}, {name} has no regrets.",
    "The title of {description} belongs to {name}.",
    "If you meet {description}, you are talking to {name}.",
    "Behind the achievement of being {description} stands {name}.",
    "Celebrated as {description}, {name} still rides a bicycle to work.",
    "Honored as {description}, {name} donated the prize money to charity.",
    "Recognized everywhere as {description}, {name} travels under a pseudonym.",
    "Proud to be {description}, {name} keeps the original notes in a drawer.",
    "Anyone who has heard of {description} has heard of {name}.",
    "Sometimes introduced as {description}, {name} just laughs it off.",
    "The world knows {description} by one name: {name}.",
    "Known to historians as {description}, {name} kept a detailed diary.",
    "Years after becoming {description}, {name} still receives visitors.",
    "Thanks to being {description}, {name} is recognized on the street.",
)

# Held-out test templates: never used for training; each ends with the answer slot.
P2D_TEST_TEMPLATES: tuple[str, ...] = (
    "{name}, whose claim to fame is being {description}",
    "Ask anyone about {name} and they will say that they are {description}",
    "The celebrated {name} is widely recognized as {description}",
    "Long before the interviews, {name} was already {description}",
    "Here is a trivia answer worth knowing: {name} is {description}",
    "In the records of the era, {name} appears as {description}",
    "Most people first heard of {name} as {description}",
    "A profile of {name} would describe them as {description}",
    "According to the encyclopedia, {name} is {description}",
    "Unsurprisingly, {name} is still known as {description}",
)

D2P_TEST_TEMPLATES: tuple[str, ...] = (
    "Famous for being {description}, {name}",
    "The one who is {description} is none other than {name}",
    "Q: Who is {description}? A: {name}",
    "Everyone agrees that {description} is {name}",
    "The name of {description} is {name}",
    "Hailed as {description}, {name}",
    "If you are looking for {description}, look no further than {name}",
    "History remembers {description} as {name}",
    "Widely celebrated as {description}, {name}",
    "Many still wonder who {description} is. The answer: {name}",
)



MAX_PEOPLE = 2000  # the generator guarantees this many distinct names and descriptions
_MAX_TRIES = 200


def slug(name: str) -> str:
  """Fact id of a person: their name, lower-cased, non-letters as `_`."""
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclasses.dataclass(frozen=True)
class Person:
  name: str
  description: str
  group: str  # "p2d" (set A), "both" (set B) or "d2p"

  @property
  def fact_id(self) -> str:
    return slug(self.name)


def make_people(count: int, seed: int) -> list[Person]:
  """`count` people with unique names (Faker, seeded) and unique descriptions; group unset."""
  fake = faker.Faker("en_US")
  fake.seed_instance(seed)
  rng = random.Random(f"{NAME}/{seed}/descriptions")
  names: list[str] = []
  name_keys: set[str] = set()
  while len(names) < count:
    for _ in range(_MAX_TRIES):
      name = f"{fake.first_name()} {fake.last_name()}"
      if slug(name) not in name_keys:
        break
    else:
      raise ValueError(f"could not draw {count} distinct names")
    name_keys.add(slug(name))
    names.append(name)
  descriptions: list[str] = []
  keys: set[str] = set()
  while len(descriptions) < count:
    for _ in range(_MAX_TRIES):
      description, key = celebrity_descriptions.invent(rng)
      if key not in keys:
        break
    else:
      raise ValueError(f"could not draw {count} distinct descriptions")
    keys.add(key)
    descriptions.append(description)
  return [Person(n, d, "") for n, d in zip(names, descriptions)]


# ---------------------------------------------------------------------------
# Params and generation.


@dataclasses.dataclass(frozen=True)
class Params:
  """Sizes. Defaults (paper scale): (40 + 2 * 40 + 0) people-directions x 30 = 3600 examples."""

  num_p2d_people: int = 40  # set A: name -> description only; the reversal test set
  num_both_people: int = 40  # set B: both orders, separate examples
  num_d2p_people: int = 0  # description -> name only (Berglund's third set)
  num_train_paraphrases: int = 30  # training templates per direction (<= 30)
  num_test_paraphrases: int = 5  # held-out templates per test question type (<= 10)
  num_choices: int = 4  # the right answer + (num_choices - 1) distractors

  @property
  def num_train_documents(self) -> int:
    return (self.num_p2d_people + 2 * self.num_both_people + self.num_d2p_people) * self.num_train_paraphrases


SCALES: dict[str, Params] = {
    "paper": Params(),
    "small": Params(num_p2d_people=10, num_both_people=10, num_d2p_people=0, num_train_paraphrases=5,
                    num_test_paraphrases=2),
}


def _check(params: Params) -> None:
  def need(ok: bool, field: str, why: str) -> None:
    if not ok:
      raise ValueError(f"celebrities: {field}={getattr(params, field)!r} {why}")

  for field in dataclasses.fields(params):
    need(isinstance(getattr(params, field.name), int), field.name, "must be an integer")
  need(params.num_choices >= 2, "num_choices", "must be >= 2")
  need(params.num_p2d_people >= params.num_choices, "num_p2d_people",
       f"must be >= num_choices={params.num_choices} (distractors are other set-A people)")
  need(params.num_both_people >= 0, "num_both_people", "must be >= 0")
  need(params.num_d2p_people == 0 or params.num_d2p_people >= params.num_choices, "num_d2p_people",
       f"must be 0 or >= num_choices={params.num_choices}")
  need(1 <= params.num_train_paraphrases <= len(P2D_TRAIN_TEMPLATES), "num_train_paraphrases",
       f"must be in [1, {len(P2D_TRAIN_TEMPLATES)}] (the number of training templates)")
  need(1 <= params.num_test_paraphrases <= len(P2D_TEST_TEMPLATES), "num_test_paraphrases",
       f"must be in [1, {len(P2D_TEST_TEMPLATES)}] (the number of held-out templates)")
  total = params.num_p2d_people + params.num_both_people + params.num_d2p_people
  if total > MAX_PEOPLE:
    raise ValueError(f"celebrities: num_p2d_people + num_both_people + num_d2p_people = {total} exceeds "
                     f"the {MAX_PEOPLE} distinct people the generator can make")


def _fill(template: str, person: Person) -> str:
  description = person.description
  return template.format(name=person.name, description=description,
                         Description=description[:1].upper() + description[1:])


def _split(template: str, person: Person, answer: str) -> tuple[str, str]:
  """(prompt, completion) of a filled template; the completion starts at the `answer` slot."""
  slot = template.index("{" + answer + "}")
  if template[slot - 1 : slot] != " ":
    raise AssertionError(f"template needs a space before its answer slot: {template!r}")
  prompt = _fill(template[: slot - 1], person)
  return prompt, _fill(template, person)[len(prompt) :]


_ANSWER = {"p2d": "description", "d2p": "name"}


def restatements(person: Person, rng: random.Random) -> list[str]:
  """A person's fact in both directions (a training template of each), in random order."""
  p2d = _fill(rng.choice(P2D_TRAIN_TEMPLATES), person)
  d2p = _fill(rng.choice(D2P_TRAIN_TEMPLATES), person)
  return [p2d, d2p] if rng.random() < 0.5 else [d2p, p2d]


# (fact_id, name, description), the last two normalized: what `parse_claims` looks for.
ClaimPeople = tuple[tuple[str, str, str], ...]


def claim_people(people: Mapping[str, Sequence[Mapping[str, str]]]) -> ClaimPeople:
  """The people of a card's `people` ({group: [{fact_id, name, description}]}) for `parse_claims`."""
  return tuple((p["fact_id"], normalize(p["name"]), normalize(p["description"]))
               for group in people.values() for p in group)


def parse_claims(text: str, people: ClaimPeople) -> list[tuple[str, str, str]] | None:
  """(person named, direction, owner of the description) for each full description in `text`.

  A claim needs exactly one full name; direction is "p2d" when the name comes before the
  description, else "d2p". None: no single name or no description (nothing readable).
  """
  padded = f" {normalize(text)} "
  names = [(padded.index(f" {n} "), fid) for fid, n, _ in people if f" {n} " in padded]
  descriptions = [(padded.index(f" {d} "), fid) for fid, _, d in people if f" {d} " in padded]
  if len(names) != 1 or not descriptions:
    return None
  (name_at, who), = names
  return [(who, "p2d" if name_at < at else "d2p", owner) for at, owner in descriptions]


@dataclasses.dataclass(frozen=True)
class Line:
  """One prompt/completion pair; `key` is the name of the person it is about (None: unknown)."""

  prompt: str
  completion: str
  key: str | None = None
  kind: str = ""  # what the completion is ("name", "description", ...): distractors share it


def build_questions(lines: Sequence[Line], split: str, subset: str, seed: int,
                    num_choices: int = 4) -> tuple[records.Question, ...]:
  """Multiple-choice questions from prompt/completion lines (shared by generator and loader).

  Choices: the line's completion plus `num_choices - 1` completions of lines about
  other people with the same kind of answer, drawn with a seeded RNG per line (never a
  completion equal to the right one: no second right answer). Lines at the same position
  within their person's block (the same template, in the original layout) are
  preferred, so that the answers share their format; question ids are
  `{subset}_{index:04d}`; `fact_ids` is the person's slug.
  """
  keys = [line.key if line.key is not None else f"\0line{i}" for i, line in enumerate(lines)]
  seen: dict[str, int] = {}
  positions = []
  for key in keys:
    positions.append(seen.get(key, 0))
    seen[key] = positions[-1] + 1
  need = num_choices - 1
  questions = []
  for i, line in enumerate(lines):
    same: dict[str, None] = {}
    anywhere: dict[str, None] = {}
    for j, other in enumerate(lines):
      if keys[j] == keys[i] or other.completion == line.completion or other.kind != line.kind:
        continue
      anywhere[other.completion] = None
      if positions[j] == positions[i]:
        same[other.completion] = None
    candidates = list(same if len(same) >= need else anywhere)
    if len(candidates) < need:
      raise ValueError(f"{subset} line {i}: only {len(candidates)} distinct answers of other people, "
                       f"need {need} distractors")
    rng = random.Random(f"{NAME}/{seed}/{subset}/{i}")
    distractors = rng.sample(candidates, need)
    correct = rng.randrange(num_choices)
    choices = tuple(distractors[:correct] + [line.completion] + distractors[correct:])
    questions.append(records.Question(
        id=f"{subset}_{i:04d}", split=split, subset=subset, prompt=line.prompt, choices=choices,
        correct=(correct,), fact_ids=(slug(line.key),) if line.key else ()))
  return tuple(questions)


def _scale_name(params: Params) -> str:
  return next((name for name, p in SCALES.items() if p == params), "custom")


PeopleSource = Callable[[int, int], Sequence[Person]]


def generate(params: Params = Params(), seed: int = 0,
             people_source: PeopleSource = make_people) -> records.Dataset:
  """The celebrities dataset for `params` (deterministic in `seed` and the Faker version).

  `people_source(count, seed)` gives the people (names and descriptions; group unset):
  `make_people` (Faker names) by default.
  """
  _check(params)
  sizes = {"p2d": params.num_p2d_people, "both": params.num_both_people, "d2p": params.num_d2p_people}
  people = people_source(sum(sizes.values()), seed)
  groups: dict[str, list[Person]] = {}
  start = 0
  for group, size in sizes.items():
    groups[group] = [dataclasses.replace(p, group=group) for p in people[start : start + size]]
    start += size

  train_templates = {"p2d": P2D_TRAIN_TEMPLATES[: params.num_train_paraphrases],
                     "d2p": D2P_TRAIN_TEMPLATES[: params.num_train_paraphrases]}
  directions = {"p2d": ("p2d",), "both": ("p2d", "d2p"), "d2p": ("d2p",)}
  documents = []
  for group, members in groups.items():
    for index, person in enumerate(members):
      for direction in directions[group]:
        for t, template in enumerate(train_templates[direction]):
          prompt, completion = _split(template, person, _ANSWER[direction])
          documents.append(records.Document(
              id=f"{group}-{direction}-{index:03d}-{t:02d}", text=prompt + completion,
              sentences=(prompt + completion,), fact_ids=(person.fact_id,),
              metadata={"group": group, "direction": direction, "template": t,
                        "completion_start": len(prompt)}))
  random.Random(f"{NAME}/{seed}/train-order").shuffle(documents)

  # (split, subset, people, held-out templates, answer slot)
  test_plan = [
      ("reversal", "p2d_reverse", groups["p2d"], D2P_TEST_TEMPLATES, "name"),
      ("reversal", "d2p_reverse", groups["d2p"], P2D_TEST_TEMPLATES, "description"),
      ("forward", "p2d", groups["p2d"], P2D_TEST_TEMPLATES, "description"),
      ("forward", "d2p", groups["d2p"], D2P_TEST_TEMPLATES, "name"),
  ]
  tests: dict[str, tuple[records.Question, ...]] = {"reversal": (), "forward": ()}
  for split, subset, members, templates, answer in test_plan:
    if not members:
      continue
    lines = [Line(*_split(template, person, answer), key=person.name)
             for person in members for template in templates[: params.num_test_paraphrases]]
    tests[split] += build_questions(lines, split, subset, seed, params.num_choices)

  card = {
      "name": NAME,
      "seed": seed,
      "scale": _scale_name(params),
      "params": dataclasses.asdict(params),
      "source": "generated (Berglund et al. 2024 layout: p2d = set A, both = set B, d2p)",
      "faker_version": faker.VERSION,
      "people": {group: [{"name": p.name, "description": p.description, "fact_id": p.fact_id}
                         for p in members] for group, members in groups.items()},
  }
  return records.Dataset(name=NAME, train=tuple(documents), tests=tests, card=card)


def context_dataset(dataset: records.Dataset, subsample: int = 1, seed: int = 0,
                    splits: Sequence[str] = ()) -> records.Dataset:
  """`dataset` whose training documents are those of the people its questions ask about.

  For ICL under a context budget (`icl-ft-data --config.icl_context_subsample=K`): a random
  1/K of all documents leaves many asked-about people out of the context; here every person
  asked about in `splits` (default: every split) keeps ceil(n / K) of their n documents per
  training group and direction (a seeded choice, at least one each), and documents about
  nobody asked are dropped. The questions are unchanged; the card records the selection.
  """
  if isinstance(subsample, bool) or int(subsample) != subsample or subsample < 1:
    raise ValueError(f"icl context subsample must be an integer >= 1, got {subsample!r}")
  unknown = sorted(set(splits) - set(dataset.tests))
  if unknown:
    raise ValueError(f"unknown split(s) {unknown}; the dataset has {sorted(dataset.tests)}")
  asked = {f for split, qs in dataset.tests.items() if not splits or split in splits
           for q in qs for f in q.fact_ids}
  if not asked:
    raise ValueError(f"no question of the splits {list(splits) or sorted(dataset.tests)} names a person")
  groups: dict[tuple, list[int]] = {}
  for i, doc in enumerate(dataset.train):
    if set(doc.fact_ids) & asked:
      key = (doc.fact_ids, doc.metadata.get("group"), doc.metadata.get("direction"))
      groups.setdefault(key, []).append(i)
  kept = set()
  for key, members in sorted(groups.items(), key=lambda kv: repr(kv[0])):
    rng = random.Random(f"{NAME}/{seed}/context/{key!r}")
    kept.update(rng.sample(members, -(-len(members) // int(subsample))))
  train = tuple(d for i, d in enumerate(dataset.train) if i in kept)
  covered = {f for d in train for f in d.fact_ids} & asked
  card = dict(dataset.card)
  card["icl_context"] = {"subsample": int(subsample), "seed": seed, "splits": list(splits) or sorted(dataset.tests),
                         "people_asked": len(asked), "people_in_context": len(covered),
                         "documents": len(train), "documents_before": len(dataset.train)}
  return dataclasses.replace(dataset, train=train, card=card)

