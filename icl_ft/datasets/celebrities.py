"""The reversal-curse celebrities set (Berglund et al. 2024), generated and loaded.

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

`load_original(directory)` reads the original release's JSONL layout into the
same Dataset type; `write_original_layout(dataset, directory)` writes that layout.
Both share the question builder, so a round trip gives identical questions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from icl_ft.datasets import records

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

# ---------------------------------------------------------------------------
# Invented descriptions: a role plus a unique invented work or achievement.

_TITLE_ADJECTIVES = (
    "Silent", "Golden", "Forgotten", "Crimson", "Hidden", "Endless", "Shattered", "Velvet", "Distant",
    "Burning", "Hollow", "Silver", "Restless", "Frozen", "Wandering", "Midnight", "Luminous", "Broken",
    "Quiet", "Emerald", "Scarlet", "Ancient", "Painted", "Sleeping", "Secret", "Fading", "Copper",
    "Northern", "Last", "Invisible", "Paper", "Glass", "Iron", "Patient", "Crooked", "Lonely",
)
_TITLE_NOUNS = (
    "Orchard", "Glacier", "Harbor", "Meridian", "Ember", "Horizon", "Cathedral", "Compass", "Labyrinth",
    "Canyon", "Archive", "Lighthouse", "Monsoon", "Citadel", "Garden", "River", "Mirror", "Thunder",
    "Willow", "Solstice", "Nebula", "Prairie", "Sparrow", "Voyage", "Echo", "Carousel", "Eclipse",
    "Quarry", "Raven", "Tapestry", "Tundra", "Valley", "Lantern", "Kingdom", "Island", "Comet",
    "Station", "Bridge", "Forest", "Tide", "Winter", "Clockmaker", "Orchestra", "Mountain", "Harvest",
    "Empire", "Ocean", "Storm", "Desert", "Signal",
)
_TITLE_PATTERNS = (
    "The {adj} {noun}",
    "A Journey Through the {adj} {noun}",
    "Whispers of the {noun}",
    "Beyond the {adj} {noun}",
    "The {noun} and the {noun2}",
    "Songs of the {adj} {noun}",
    "Return to the {noun}",
    "Letters from the {adj} {noun}",
    "The Last Days of the {noun}",
    "Under a {adj} {noun}",
)
# (role, kind of work): "the acclaimed director of the documentary "X""
_CREATIVE_ROLES = (
    ("director", "film"), ("director", "documentary"), ("director", "virtual reality masterpiece"),
    ("author", "novel"), ("author", "memoir"), ("author", "poetry collection"),
    ("composer", "symphony"), ("composer", "opera"), ("composer", "musical"),
    ("choreographer", "ballet"), ("playwright", "play"), ("designer", "video game"),
    ("painter", "mural"), ("photographer", "exhibition"), ("host", "radio show"),
    ("creator", "television series"), ("illustrator", "graphic novel"), ("producer", "podcast"),
)
_ROLE_ADJECTIVES = (
    "acclaimed", "renowned", "celebrated", "visionary", "award-winning", "reclusive", "legendary",
    "controversial", "pioneering", "beloved",
)
# "the first ... on Mars": (maker, thing, verb)
_FIRST_DEEDS = (
    ("composer", "opera", "performed"), ("choreographer", "ballet", "staged"),
    ("chef", "banquet", "served"), ("architect", "hotel", "built"), ("director", "film", "shot"),
    ("author", "novel", "written"), ("painter", "mural", "painted"), ("gardener", "garden", "grown"),
    ("conductor", "concert", "held"), ("engineer", "railway", "laid"), ("sculptor", "statue", "carved"),
    ("brewer", "beer", "brewed"), ("tailor", "wedding dress", "sewn"), ("teacher", "school", "opened"),
)
_FIRST_PLACES = (
    "on Mars", "on the Moon", "at the bottom of the Atlantic", "in zero gravity", "at the South Pole",
    "inside an active volcano", "aboard a submarine", "on a floating island", "on Europa",
    "on a passing comet", "in orbit around Jupiter", "beneath the Greenland ice sheet",
    "on top of Mount Everest", "inside a diamond mine", "on a glacier in Patagonia",
    "in the Mariana Trench", "on the rings of Saturn", "inside a hot-air balloon",
)
# "the ... who discovered ...": (discoverer, discovery)
_DISCOVERIES = (
    ("marine biologist", "a glowing species of deep-sea squid"), ("astronomer", "a sixth ring around Neptune"),
    ("archaeologist", "the lost library of a desert kingdom"), ("geologist", "a crystal that stores sunlight"),
    ("botanist", "a flower that blooms only in snow"), ("mathematician", "a proof of the twin prime conjecture"),
    ("linguist", "the grammar of humpback whale songs"), ("physicist", "a new state of matter"),
    ("explorer", "the source of a river that flows uphill"), ("entomologist", "a beetle that glows in the dark"),
    ("chemist", "a metal lighter than air"), ("cartographer", "the forgotten map of a sunken city"),
    ("glaciologist", "a frozen forest under Antarctica"), ("astronomer", "a comet made of pure ice"),
    ("geologist", "a cave of singing stones"), ("archaeologist", "the oldest shipwreck in the Baltic"),
    ("botanist", "a moss that cleans polluted rivers"), ("chemist", "a formula for bread that never goes stale"),
    ("explorer", "a hidden valley in the Himalayas"), ("mineralogist", "a mineral that changes color with music"),
    ("zoologist", "a bird that sings in two voices at once"), ("oceanographer", "an underwater waterfall in the Pacific"),
)

MAX_PEOPLE = 2000  # the generator guarantees this many distinct names and descriptions
_MAX_TRIES = 200


def _title(rng: random.Random) -> str:
  pattern = rng.choice(_TITLE_PATTERNS)
  noun, noun2 = rng.sample(_TITLE_NOUNS, 2)
  return pattern.format(adj=rng.choice(_TITLE_ADJECTIVES), noun=noun, noun2=noun2)


def _description(rng: random.Random) -> tuple[str, str]:
  """One invented description and its uniqueness key (the invented work or deed)."""
  kind = rng.random()
  if kind < 0.6:
    role, work = rng.choice(_CREATIVE_ROLES)
    title = _title(rng)
    return f'the {rng.choice(_ROLE_ADJECTIVES)} {role} of the {work} "{title}"', title
  if kind < 0.8:
    maker, thing, verb = rng.choice(_FIRST_DEEDS)
    place = rng.choice(_FIRST_PLACES)
    return f"the {rng.choice(_ROLE_ADJECTIVES)} {maker} of the first {thing} {verb} {place}", f"{thing} {place}"
  who, what = rng.choice(_DISCOVERIES)
  return f"the {rng.choice(_ROLE_ADJECTIVES)} {who} who discovered {what}", what


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
  from faker import Faker  # pylint: disable=g-import-not-at-top

  fake = Faker("en_US")
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
      description, key = _description(rng)
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


def generate(params: Params = Params(), seed: int = 0) -> records.Dataset:
  """The celebrities dataset for `params` (deterministic in `seed` and the Faker version)."""
  import faker  # pylint: disable=g-import-not-at-top

  _check(params)
  sizes = {"p2d": params.num_p2d_people, "both": params.num_both_people, "d2p": params.num_d2p_people}
  people = make_people(sum(sizes.values()), seed)
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


# ---------------------------------------------------------------------------
# The original release's JSONL layout (Berglund et al.'s `name_description_dataset/`).

TRAIN_FILES = {"p2d": "p2d_prompts_train.jsonl", "d2p": "d2p_prompts_train.jsonl",
               "both": "both_prompts_train.jsonl"}


class _TestFile(NamedTuple):
  split: str
  subset: str
  answer: str  # the kind of every completion: "name", "first_name", "description" or "mixed"
  required: bool


TEST_FILES = {
    # description -> name of a set-A (p2d) person: the reversal test.
    "p2d_reverse_prompts_test.jsonl": _TestFile("reversal", "p2d_reverse", "name", True),
    # name -> description of a d2p person: the other reversal.
    "d2p_reverse_prompts_test.jsonl": _TestFile("reversal", "d2p_reverse", "description", True),
    "p2d_prompts_test.jsonl": _TestFile("forward", "p2d", "description", False),
    "d2p_prompts_test.jsonl": _TestFile("forward", "d2p", "name", False),
    # Both orders of the set-B people, one after the other: subsets both_p2d / both_d2p.
    "both_prompts_test.jsonl": _TestFile("forward", "both", "mixed", False),
    # p2d_reverse with the first name as the answer.
    "validation_prompts.jsonl": _TestFile("validation", "validation", "first_name", False),
}
# Files of the release that repeat others line for line: checked equal, not read twice.
COPIES = {
    "all_prompts_train.jsonl": tuple(TRAIN_FILES[g] for g in ("p2d", "d2p", "both")),
    "all.jsonl": tuple(TRAIN_FILES[g] for g in ("p2d", "d2p", "both")),
    "unrealized_examples.jsonl": ("p2d_reverse_prompts_test.jsonl",),
}
# Controls: a reversal file's prompts with another person's answer. Not questions (their
# completion is not the answer); checked to hold the same prompts.
CONTROLS = {
    "p2d_reverse_prompts_test_randomized.jsonl": "p2d_reverse_prompts_test.jsonl",
    "d2p_reverse_prompts_test_randomized.jsonl": "d2p_reverse_prompts_test.jsonl",
}
ORIGINAL_FILES = (*TRAIN_FILES.values(), *TEST_FILES, *COPIES, *CONTROLS)
_NAME_TOKEN = re.compile(r"^[A-Z][\w'\-.]*$")


def _read_pairs(path: Path) -> list[tuple[str, str]]:
  pairs = []
  with open(path, encoding="utf-8") as f:
    for lineno, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        obj = json.loads(raw)
        prompt, completion = obj["prompt"], obj["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
          raise TypeError("prompt and completion must be strings")
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise records.DatasetFormatError(f"{path}:{lineno}: malformed prompt/completion line: {e}") from e
      pairs.append(_canonical(prompt, completion))
  return pairs


def _canonical(prompt: str, completion: str) -> tuple[str, str]:
  """Moves the separating whitespace into the completion (choices start with it)."""
  if prompt[-1:].isspace():
    return prompt.rstrip(), " " + completion.lstrip()
  if completion[:1].isalnum() or completion[:1] in "\"'":
    return prompt, " " + completion
  return prompt, completion


def _as_name(text: str) -> str | None:
  """`text` as a full name if it looks like one ("Daphne Barrington."), else None."""
  words = text.strip().rstrip(".").split()
  if 2 <= len(words) <= 5 and all(_NAME_TOKEN.match(w) for w in words):
    return " ".join(words)
  return None


class _NameFinder:
  """Finds known names in text (the leftmost one; the longest among those starting there)."""

  def __init__(self, names: Iterable[str]):
    names = sorted(set(names), key=lambda n: (-len(n), n))
    self.names = tuple(names)
    self._pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, names)) + r")(?!\w)") if names else None

  def __call__(self, text: str) -> str | None:
    match = self._pattern.search(text) if self._pattern else None
    return match.group(1) if match else None


class _People:
  """Who a line of the release is about, and what kind of answer its completion is."""

  def __init__(self, files: dict[str, list[tuple[str, str]]]):
    self.find = _NameFinder(n for pairs in files.values() for _, c in pairs if (n := _as_name(c)))
    self.by_first_name: dict[str, list[str]] = {}
    for name in self.find.names:
      self.by_first_name.setdefault(name.split()[0], []).append(name)
    # Prompts answered by a full name (validation_prompts.jsonl repeats p2d_reverse's prompts).
    self.by_prompt = {p: n for pairs in files.values() for p, c in pairs
                      if (n := _as_name(c)) is not None}

  def answer(self, prompt: str, completion: str) -> tuple[str | None, str]:
    """(person, kind): a completion that is a known name answers with it ("name"); a lone
    first name with the known person of that first name, or of the same prompt elsewhere when
    two share it ("first_name"); any other completion describes the person the prompt names
    ("description")."""
    name = _as_name(completion)
    if name is not None and name in self.find.names:
      return name, "name"
    first = completion.strip().rstrip(".")
    named = self.by_first_name.get(first, ()) if " " not in first else ()
    if len(named) == 1:
      return named[0], "first_name"
    if named and self.by_prompt.get(prompt) in named:
      return self.by_prompt[prompt], "first_name"
    return self.find(prompt), "description"


def _check_copies(directory: Path, files: dict[str, list[tuple[str, str]]], present: set[str]) -> None:
  """The release's repeated files hold exactly the lines of the files they repeat."""
  for copy, sources in COPIES.items():
    if copy in present and all(s in files for s in sources):
      lines = _read_pairs(directory / copy)
      if sorted(lines) != sorted(pair for s in sources for pair in files[s]):
        raise records.DatasetFormatError(f"{directory / copy}: expected the lines of {' + '.join(sources)}")
  for control, source in CONTROLS.items():
    if control in present and source in files:
      prompts = [p for p, _ in _read_pairs(directory / control)]
      if sorted(prompts) != sorted(p for p, _ in files[source]):
        raise records.DatasetFormatError(f"{directory / control}: expected the prompts of {source}")


def _file_roles(present: set[str], used: dict[str, str]) -> dict[str, str]:
  """What the conversion did with each file of the directory (recorded in the card)."""
  roles = {}
  for f in sorted(present):
    if f in used:
      roles[f] = used[f]
    elif f in COPIES:
      roles[f] = f"not read: the lines of {' + '.join(COPIES[f])} (checked)"
    elif f in CONTROLS:
      roles[f] = f"not read: control, the prompts of {CONTROLS[f]} with another person's answer (checked)"
  return roles


def load_original(directory: str | os.PathLike[str], seed: int = 0, num_choices: int = 4) -> records.Dataset:
  """Reads the original reversal-curse release's JSONL files into a Dataset.

  Every file of the release (`ORIGINAL_FILES`) is handled; any other `.jsonl` file in
  `directory` is an error. Train documents: prompt + completion of each line of
  `p2d_prompts_train.jsonl`, `d2p_prompts_train.jsonl` and `both_prompts_train.jsonl` (in
  that order). Test splits: `reversal` from `p2d_reverse_prompts_test.jsonl` (subset
  `p2d_reverse`; `unrealized_examples.jsonl` holds the same lines and stands in for it) and
  `d2p_reverse_prompts_test.jsonl` (`d2p_reverse`); `forward` from the optional
  `p2d_prompts_test.jsonl` (`p2d`), `d2p_prompts_test.jsonl` (`d2p`) and
  `both_prompts_test.jsonl` (both orders: `both_p2d` and `both_d2p`); `validation` from the
  optional `validation_prompts.jsonl` (first names as answers). `all_prompts_train.jsonl` and
  `all.jsonl` (the three train files together) are checked and not read twice; the
  `*_randomized.jsonl` controls (a reversal file's prompts with another person's answer) hold
  no questions and are checked to match their file.

  People are identified by name: completions that look like a name ("Daphne Barrington.")
  anywhere in the files give the known names. A question whose completion is a known name (or
  the first name of one known person) is about that person; any other is about the person its
  prompt names. Every question must have its person (DatasetFormatError naming the line).
  Choices: the true completion plus `num_choices - 1` completions of other people of the same
  kind (names for name questions, descriptions for description questions) from the same file
  (`build_questions`).
  """
  directory = Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"{directory}: not a directory (the original reversal-curse release)")
  present = {p.name for p in directory.glob("*.jsonl")}
  unknown = sorted(present - set(ORIGINAL_FILES))
  if unknown:
    raise records.DatasetFormatError(f"{directory}: {unknown} are not files of the original reversal-curse "
                                     f"release (known: {list(ORIGINAL_FILES)})")
  reverse = "p2d_reverse_prompts_test.jsonl"
  stand_in = "unrealized_examples.jsonl" if reverse not in present and "unrealized_examples.jsonl" in present else None
  required = list(TRAIN_FILES.values()) + [f for f, spec in TEST_FILES.items() if spec.required]
  missing = [f for f in required if f not in present and not (f == reverse and stand_in)]
  if missing:
    raise FileNotFoundError(f"{directory}: missing {missing} of the original reversal-curse layout")
  source = {f: f for f in [*TRAIN_FILES.values(), *TEST_FILES] if f in present}
  if stand_in:
    source[reverse] = stand_in
  files = {f: _read_pairs(directory / path) for f, path in source.items()}
  _check_copies(directory, files, present - set(source.values()))
  people = _People(files)
  used = {path: f"train documents, group {g}" for g, path in TRAIN_FILES.items()}

  documents = []
  for group, filename in TRAIN_FILES.items():
    for i, (prompt, completion) in enumerate(files[filename]):
      text = prompt + completion
      name = people.find(text)
      # d2p lines answer with the name ("... Daphne Barrington now enjoys a quiet life.").
      direction = "d2p" if name and completion.lstrip().startswith(name) else "p2d"
      documents.append(records.Document(
          id=f"{group}-{i:05d}", text=text, sentences=(text,), fact_ids=(slug(name),) if name else (),
          metadata={"group": group, "direction": direction, "source": filename, "line": i,
                    "completion_start": len(prompt)}))

  tests: dict[str, tuple[records.Question, ...]] = {"reversal": (), "forward": ()}
  for filename, spec in TEST_FILES.items():
    if filename not in files:
      continue
    by_subset: dict[str, list[Line]] = {}
    for lineno, (prompt, completion) in enumerate(files[filename], start=1):
      key, kind = people.answer(prompt, completion)
      where = f"{directory / source[filename]}:{lineno}"
      if key is None:
        raise records.DatasetFormatError(f"{where}: no known person in this question ({prompt!r})")
      if spec.answer != "mixed" and kind != spec.answer:
        raise records.DatasetFormatError(f"{where}: answer {completion!r} is a {kind}, expected a "
                                         f"{spec.answer} in {filename}")
      subset = spec.subset if spec.answer != "mixed" else (
          f"{spec.subset}_d2p" if kind == "name" else f"{spec.subset}_p2d")
      by_subset.setdefault(subset, []).append(Line(prompt, completion, key, kind))
    for subset, lines in by_subset.items():
      tests[spec.split] = tests.get(spec.split, ()) + build_questions(lines, spec.split, subset, seed,
                                                                      num_choices)
    used[source[filename]] = f"split {spec.split}, subset(s) {', '.join(by_subset)}"

  card = {"name": NAME, "seed": seed, "scale": "original", "source": f"original layout: {directory.name}",
          "params": {"num_choices": num_choices}, "files": _file_roles(present, used),
          "people": len(people.find.names)}
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


def write_original_layout(dataset: records.Dataset, directory: str | os.PathLike[str]) -> Path:
  """Writes a generated celebrities Dataset as the original release's JSONL files.

  Train documents go to the file of their `group` (split at `completion_start`);
  questions to the test file of their subset, as prompt + correct completion.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  by_file: dict[str, list[tuple[str, str]]] = {f: [] for f in TRAIN_FILES.values()}
  for doc in dataset.train:
    try:
      group, start = doc.metadata["group"], int(doc.metadata["completion_start"])
      filename = TRAIN_FILES[group]
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"document {doc.id!r}: needs metadata group and completion_start") from e
    by_file[filename].append((doc.text[:start], doc.text[start:]))
  subset_file = {spec.subset: f for f, spec in TEST_FILES.items()}
  for f, spec in TEST_FILES.items():
    if spec.required:
      by_file[f] = []
  for questions in dataset.tests.values():
    for q in questions:
      filename = subset_file.get(q.subset)
      if filename is None:
        raise ValueError(f"question {q.id!r}: subset {q.subset!r} has no file in the original layout")
      by_file.setdefault(filename, []).append((q.prompt, q.choices[q.correct[0]]))
  for filename, pairs in by_file.items():
    with open(directory / filename, "w", encoding="utf-8") as f:
      for prompt, completion in pairs:
        f.write(json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False) + "\n")
  return directory
