"""The pretraining corpus of the tiny default model: episodes over the reserved word pool.

Evaluation knowledge must be absent from pretraining, so every content word comes from
`words.pool("pretraining")` (disjoint from every evaluation namespace) and people get nonsense
names from the same pool (the celebrity sets use Faker's English names). The *formats* are the
evaluation datasets' own: each episode is a small dataset made by one of the four generators
(`simple_reversals`, `syllogisms`, `celebrities`, `semantic_structure`) given the pretraining
pool as its word source (`vocabulary`) or its people (`people_source=make_people`), so the
statement styles, the question prompts and the held-out question templates are exactly the ones
the study scores.

Each episode is one training document (format `document` of `icl_ft.pipeline`), of a *kind*:

- `article`: the episode's documents joined by a blank line (plain text);
- `icl`: the exact ICL prompt of `icl_ft.evaluation.prompts.context_text(docs)` followed by questions
  answered from the documents (`prompt + correct choice`, blank-line separated: the first one
  is exactly what the scorer sees), of every split the generator makes (forward, reversal,
  syllogism, rephrase, multi-hop chains, category-holdout inheritance);
- `local`: `icl_ft.augment.templates.local_prompt(sentence)` + bullets of restatements and
  reversals of that sentence;
- `global`: `templates.global_context(docs) + global_suffix(doc)` + bullets of inferences
  linking the document to the others (the test statements whose premises it states).

`generate(params, seed)` returns a `records.Dataset` (train = episodes; no tests) whose card
records the mix. `heldout_episodes` gives new-seed episodes as (documents, questions) for the
in-context evaluation of a pretrained model.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import multiprocessing
import random
import re
from collections.abc import Sequence
from typing import Any

import tqdm

from icl_ft.augment import templates
from icl_ft.datasets import celebrities
from icl_ft.datasets import celebrity_descriptions
from icl_ft.datasets import records
from icl_ft.datasets import semantic_structure
from icl_ft.datasets import simple_reversals
from icl_ft.datasets import syllogisms
from icl_ft.datasets import words
from icl_ft.evaluation import prompts

NAME = "pretraining"
POOL = "pretraining"
FAMILIES: tuple[str, ...] = ("simple_reversals", "syllogisms", "celebrities", "semantic_structure")
KINDS: tuple[str, ...] = ("icl", "article", "local", "global")
_MODULES = {m.NAME: m for m in (simple_reversals, syllogisms, celebrities, semantic_structure)}
# Held-out evaluation episodes use generator seeds from here on; the corpus uses seeds below.
HELDOUT_SEED_BASE = 1_000_000_000
# Celebrity descriptions of the evaluation sets (these generator seeds, every scale) are
# never given to a pretraining person.
RESERVED_CELEBRITY_SEEDS = tuple(range(10))


@dataclasses.dataclass(frozen=True)
class Params:
  """Corpus size and mix (weights are normalized)."""

  num_episodes: int = 40_000
  max_chars: int = 2400  # upper bound on an episode's characters (its documents are cut to fit)
  max_questions: int = 12  # per ICL episode
  max_bullets: int = 6  # per augmentation episode
  episodes_per_dataset: int = 3  # episodes cut from each generated dataset (other documents)
  # Multiplies each episode dataset's sampled size (facts, examples, people, categories): with a
  # larger `max_chars`, episodes as long as the study's own ICL contexts.
  dataset_scale: float = 1.0
  family_weights: tuple[tuple[str, float], ...] = (
      ("simple_reversals", 0.3), ("syllogisms", 0.15), ("celebrities", 0.3),
      ("semantic_structure", 0.25))
  kind_weights: tuple[tuple[str, float], ...] = (
      ("icl", 0.6), ("article", 0.08), ("local", 0.14), ("global", 0.18))


SCALES: dict[str, Params] = {
    "default": Params(),
    "small": Params(num_episodes=400),
}


def check(params: Params) -> None:
  """Raises ValueError naming the first bad field of `params`."""
  for name, weights, valid in (("family_weights", params.family_weights, FAMILIES),
                               ("kind_weights", params.kind_weights, KINDS)):
    for key, w in weights:
      if key not in valid:
        raise ValueError(f"{name}: unknown entry {key!r}; valid: {', '.join(valid)}")
      if w < 0:
        raise ValueError(f"{name}: weight of {key!r} is negative ({w})")
    if sum(w for _, w in weights) <= 0:
      raise ValueError(f"{name}: weights sum to zero")
  if params.num_episodes < 1:
    raise ValueError(f"num_episodes={params.num_episodes}: must be >= 1")
  if params.episodes_per_dataset < 1:
    raise ValueError(f"episodes_per_dataset={params.episodes_per_dataset}: must be >= 1")
  if not params.dataset_scale > 0:
    raise ValueError(f"dataset_scale={params.dataset_scale}: must be > 0")
  if params.max_chars < 200:
    raise ValueError(f"max_chars={params.max_chars}: must be >= 200")


# Evaluation generators over the pretraining pool.


@functools.cache
def _reserved_descriptions() -> frozenset[str]:
  """Descriptions of the evaluation celebrity sets for the reserved seeds."""
  return frozenset(person.description for seed in RESERVED_CELEBRITY_SEEDS
                   for person in celebrities.make_people(celebrities.MAX_PEOPLE, seed))


def make_people(count: int, seed: int) -> list[celebrities.Person]:
  """`count` people with nonsense names (pretraining pool) and unreserved invented descriptions."""
  rng = random.Random(f"{NAME}/{seed}/people")
  pool = words.pool(POOL)
  reserved = _reserved_descriptions()
  people, names, keys = [], set(), set()
  while len(people) < count:
    first, last = rng.sample(pool, 2)
    name = f"{first.capitalize()} {last.capitalize()}"
    description, key = celebrity_descriptions.invent(rng)
    if name in names or key in keys or description in reserved:
      continue
    names.add(name)
    keys.add(key)
    people.append(celebrities.Person(name, description, ""))
  return people


def _generate(family: str, params: Any, seed: int) -> records.Dataset:
  """A dataset of `family` by its evaluation generator, over the pretraining pool."""
  if family == celebrities.NAME:
    return celebrities.generate(params, seed=seed, people_source=make_people)
  return _MODULES[family].generate(params, seed=seed, vocabulary=words.pool(POOL))


def _sample_params(family: str, rng: random.Random, scale: float = 1.0) -> Any:
  """Small random sizes of one episode's dataset (`scale` multiplies them)."""
  def r(low: int, high: int) -> int:
    return rng.randint(round(low * scale), round(high * scale))
  if family == "simple_reversals":
    return simple_reversals.Params(num_facts=r(3, 14), articles_per_fact=r(1, 2))
  if family == "syllogisms":
    return syllogisms.Params(num_examples=r(2, 10))
  if family == "celebrities":
    return celebrities.Params(num_p2d_people=r(4, 8), num_both_people=r(0, 3), num_d2p_people=0,
                              num_train_paraphrases=r(1, 2), num_test_paraphrases=r(1, 3))
  n = r(8, 14)
  return semantic_structure.Params(
      num_categories=n, num_documents=2 * n, min_sentences=4, max_sentences=6,
      num_holdout_categories=r(0, 1), num_rephrase_questions=4, num_reversal_questions=4,
      num_syllogism_questions=4)


def episode_dataset(family: str, seed: int, rng: random.Random,
                    scale: float = 1.0) -> records.Dataset:
  """One small dataset of `family` made by its evaluation generator over the pretraining pool."""
  for _ in range(20):
    params = _sample_params(family, rng, scale)
    try:
      return _generate(family, params, seed)
    except ValueError:  # a random size the generator cannot fill (e.g. too few holdouts)
      continue
  raise RuntimeError(f"could not generate a {family} episode for seed {seed}")


# Episodes.


def statement(question: records.Question, choice: int | None = None) -> str:
  """A question's prompt + (correct) choice as one sentence."""
  c = question.correct[0] if choice is None else choice
  text = (question.prompt + question.choices[c]).strip()
  text = text[:1].upper() + text[1:]
  return text if text[-1:] in ".!?" else text + "."


def _questions(dataset: records.Dataset) -> list[records.Question]:
  return [q for split in sorted(dataset.tests) for q in dataset.tests[split]]


def _answerable(question: records.Question, facts: set[str]) -> bool:
  return bool(question.fact_ids) and set(question.fact_ids) <= facts


def _fit_documents(docs: Sequence[records.Document], budget: int,
                   rng: random.Random) -> list[records.Document]:
  """A random subset of `docs` (kept in order) whose ICL block fits `budget` characters."""
  order = list(range(len(docs)))
  rng.shuffle(order)
  kept, size = [], len(prompts.ICL_INSTRUCTION) + 4
  for i in order:
    cost = len(docs[i].text) + 2
    if size + cost > budget:
      continue
    kept.append(i)
    size += cost
  return [docs[i] for i in sorted(kept)]


def _facts(docs: Sequence[records.Document]) -> set[str]:
  return {f for d in docs for f in d.fact_ids}


def icl_episode(dataset: records.Dataset, params: Params, rng: random.Random) -> tuple[str, dict[str, int]] | None:
  """Documents in the exact ICL format, then answered questions; None if nothing is answerable."""
  reserve = min(600, params.max_chars // 3)
  docs = _fit_documents(dataset.train, params.max_chars - reserve, rng)
  facts = _facts(docs)
  qs = [q for q in _questions(dataset) if _answerable(q, facts)]
  if not docs or not qs:
    return None
  rng.shuffle(qs)
  text = prompts.context_text(docs)
  answered: dict[str, int] = collections.Counter()
  for q in qs[: params.max_questions]:
    line = q.prompt + q.choices[rng.choice(q.correct)]
    if answered and len(text) + len(line) + 2 > params.max_chars:
      break
    text += ("\n\n" if answered else "") + line
    answered[q.split] += 1
  return text, dict(answered)


def article_episode(dataset: records.Dataset, params: Params, rng: random.Random) -> str | None:
  docs = _fit_documents(dataset.train, params.max_chars, rng)
  return prompts.DOCUMENT_SEPARATOR.join(d.text for d in docs) if docs else None


def _celebrity_restatements(dataset: records.Dataset, doc: records.Document,
                            rng: random.Random) -> list[str]:
  people = {p["fact_id"]: p for group in dataset.card["people"].values() for p in group}
  person = people[doc.fact_ids[0]]
  return celebrities.restatements(celebrities.Person(person["name"], person["description"], ""), rng)


def _sentence_restatements(dataset: records.Dataset, doc: records.Document, index: int,
                           rng: random.Random) -> list[str]:
  """Rephrasings and reversals of sentence `index` of `doc`."""
  sentence = doc.sentences[index]
  if dataset.name == "simple_reversals":
    q = next(q for q in _questions(dataset) if q.fact_ids == doc.fact_ids)
    return [simple_reversals.restatement(sentence, dataset.card["features"]), statement(q)]
  if dataset.name == "syllogisms":
    parsed = syllogisms.parse_sentence(sentence)
    return [] if parsed is None else syllogisms.restatements(parsed)
  if dataset.name == "celebrities":
    return _celebrity_restatements(dataset, doc, rng)
  sentence_facts = set(doc.metadata["sentence_fact_ids"][index])
  return [statement(q) for q in _questions(dataset)
          if q.split in ("rephrase", "reversal") and q.fact_ids and set(q.fact_ids) <= sentence_facts]


def local_episode(dataset: records.Dataset, params: Params, rng: random.Random) -> str | None:
  """A local-augmentation prompt for one sentence, answered with its restatements."""
  candidates = [(d, i) for d in dataset.train for i in range(len(d.sentences))]
  rng.shuffle(candidates)
  for doc, i in candidates[:20]:
    restated = _sentence_restatements(dataset, doc, i, rng)
    if restated:
      sentence = doc.sentences[i].strip().lstrip("- ").strip()
      return (templates.local_prompt(sentence)[: -len(templates.BULLET_OPEN)]
              + templates.bullets(restated[: params.max_bullets]) + "\n")
  return None


def global_episode(dataset: records.Dataset, params: Params, rng: random.Random) -> str | None:
  """A global-augmentation prompt for one document, answered with inferences linking it."""
  docs = _fit_documents(dataset.train, params.max_chars * 3 // 4, rng)
  facts = _facts(docs)
  qs = [q for q in _questions(dataset) if _answerable(q, facts)]
  order = list(docs)
  rng.shuffle(order)
  for doc in order:
    linked = [statement(q, rng.choice(q.correct)) for q in qs if set(q.fact_ids) & set(doc.fact_ids)]
    linked = list(dict.fromkeys(linked))
    if linked:
      rng.shuffle(linked)
      return (templates.global_context([d.text for d in docs])
              + templates.global_suffix(doc.text)[: -len(templates.BULLET_OPEN)]
              + templates.bullets(linked[: params.max_bullets]) + "\n")
  return None


def _weighted(weights: Sequence[tuple[str, float]], rng: random.Random) -> str:
  keys = [k for k, _ in weights]
  return rng.choices(keys, weights=[w for _, w in weights])[0]


def _episode_text(kind: str, dataset: records.Dataset, params: Params,
                  rng: random.Random) -> tuple[str | None, dict[str, int]]:
  if kind == "icl":
    out = icl_episode(dataset, params, rng)
    return (None, {}) if out is None else out
  if kind == "article":
    return article_episode(dataset, params, rng), {}
  if kind == "local":
    return local_episode(dataset, params, rng), {}
  return global_episode(dataset, params, rng), {}


def make_group(index: int, params: Params, seed: int) -> list[records.Document]:
  """Group `index` of the corpus of `seed`: `episodes_per_dataset` episodes of one dataset."""
  rng = random.Random(f"{NAME}/{seed}/{index}")
  family = _weighted(params.family_weights, rng)
  gen_seed = seed * 10_000_000 + index
  if gen_seed >= HELDOUT_SEED_BASE or index >= 10_000_000:
    raise ValueError(f"seed={seed}, index={index}: generator seeds would reach the held-out range")
  dataset = episode_dataset(family, gen_seed, rng, params.dataset_scale)
  out = []
  for k in range(params.episodes_per_dataset):
    for _ in range(10):
      kind = _weighted(params.kind_weights, rng)
      text, answered = _episode_text(kind, dataset, params, rng)
      if text:
        out.append(records.Document(
            id=f"episode_{index:07d}_{k}", text=text, sentences=(text,), fact_ids=(),
            metadata={"family": family, "kind": kind, "generator_seed": gen_seed,
                      "questions": answered}))
        break
  return out


def _make_group_star(args: tuple[int, Params, int]) -> list[records.Document]:
  return make_group(*args)


def generate(params: Params = Params(), seed: int = 0, progress: bool = False,
             workers: int = 1) -> records.Dataset:
  """The corpus: `params.num_episodes` episodes (train documents) and a card with the mix.

  `workers > 1` generates groups in that many processes (same result: each group is seeded
  by its index alone).
  """
  check(params)
  num_groups = -(-params.num_episodes // params.episodes_per_dataset)
  jobs = [(i, params, seed) for i in range(num_groups)]
  bar = None
  if progress:
    bar = tqdm.tqdm(total=num_groups, desc="corpus", unit="dataset")
  groups: list[list[records.Document]] = []
  if workers > 1:
    _reserved_descriptions()  # computed once, inherited by forked workers
    with multiprocessing.get_context("fork").Pool(workers) as pool:
      for g in pool.imap(_make_group_star, jobs, chunksize=16):
        groups.append(g)
        if bar is not None:
          bar.update()
  else:
    for job in jobs:
      groups.append(make_group(*job))
      if bar is not None:
        bar.update()
  if bar is not None:
    bar.close()
  docs = tuple(d for g in groups for d in g)[: params.num_episodes]
  mix = collections.Counter((d.metadata["family"], d.metadata["kind"]) for d in docs)
  chars = collections.Counter()
  questions = collections.Counter()
  for d in docs:
    chars[d.metadata["kind"]] += len(d.text)
    for split, n in d.metadata["questions"].items():
      questions[f"{d.metadata['family']}/{split}"] += n
  card = {
      "name": NAME,
      "seed": seed,
      "params": dataclasses.asdict(params),
      "word_pool": POOL,
      "pool_size": len(words.pool(POOL)),
      "people_names": "two capitalized pretraining-pool words (disjoint from Faker's English names)",
      "reserved_celebrity_seeds": list(RESERVED_CELEBRITY_SEEDS),
      "num_datasets": num_groups,
      "episodes": {f"{f}/{k}": n for (f, k), n in sorted(mix.items())},
      "characters_by_kind": dict(sorted(chars.items())),
      "characters": sum(chars.values()),
      "icl_questions": dict(sorted(questions.items())),
  }
  return records.Dataset(name=NAME, train=docs, tests={}, card=card)


def heldout_episodes(family: str, count: int, params: Params = Params(), seed: int = 0,
                     context_chars: int = 0
                     ) -> list[tuple[list[records.Document], list[records.Question]]]:
  """`count` new-seed episodes of `family` as (context documents, answerable questions).

  With `context_chars`, each episode's documents are scattered among distractor documents of
  other new-seed episodes of the family until the ICL block is about that long, so the held-out
  contexts are as long as the study's (the facts anywhere in them, not next to the question).
  """
  if family not in FAMILIES:
    raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
  out = []
  for i in range(count):
    rng = random.Random(f"{NAME}/heldout/{seed}/{family}/{i}")
    dataset = episode_dataset(family, HELDOUT_SEED_BASE + seed * 100_000 + i, rng)
    reserve = min(600, params.max_chars // 3)
    docs = _fit_documents(dataset.train, params.max_chars - reserve, rng)
    facts = _facts(docs)
    qs = [q for q in _questions(dataset) if _answerable(q, facts)]
    if docs and qs:
      if context_chars:
        docs = _with_distractors(family, docs, qs, context_chars, rng,
                                 HELDOUT_SEED_BASE + seed * 100_000 + DISTRACTOR_SEED_OFFSET + i * 200)
      out.append((docs, qs))
  return out


# Distractor episodes of held-out episode i use generator seeds from
# HELDOUT_SEED_BASE + seed * 100_000 + DISTRACTOR_SEED_OFFSET + i * 200 on (held-out ones: below).
DISTRACTOR_SEED_OFFSET = 50_000


def _pool_words(texts: Sequence[str], pool: frozenset[str]) -> set[str]:
  return {w for t in texts for w in re.findall(r"[a-z]+", t.lower()) if w in pool}


def _with_distractors(family: str, docs: Sequence[records.Document],
                      questions: Sequence[records.Question], target_chars: int,
                      rng: random.Random, first_seed: int) -> list[records.Document]:
  """`docs` with other episodes' documents inserted at random places up to `target_chars`.

  A distractor that shares a pool word with the episode (its documents or questions) is skipped,
  so no distractor states anything about what the questions ask.
  """
  pool = frozenset(words.pool(POOL))
  taken = _pool_words([d.text for d in docs] + [q.prompt + " " + " ".join(q.choices)
                                                for q in questions], pool)
  out = list(docs)
  size = len(prompts.ICL_INSTRUCTION) + 4 + sum(len(d.text) + 2 for d in docs)
  for k in range(200):
    if size >= target_chars:
      break
    other = episode_dataset(family, first_seed + k, rng)
    for d in other.train:
      cost = len(d.text) + 2
      own = _pool_words([d.text], pool)
      if size + cost > target_chars or own & taken:
        continue
      out.insert(rng.randint(0, len(out)), d)
      taken |= own
      size += cost
  return out
