"""The `no_knowledge` control: a dataset with every nonsense word replaced by a fresh one.

`pretrained` scores a dataset's questions with the untouched model and no context. Above chance
it may mean the model knows the facts (contamination) or only that it prefers some answers (a
bias of the templates and choices). `no_knowledge` separates the two: the same questions, the
same templates, choices and correct indices, with every nonsense word (and every fictional
celebrity's name) replaced by fresh words that no document has ever contained, so the model
cannot know anything about them. Several seeded mappings (`relabel_many`) show how far the
choice of words alone moves the accuracy; `pretrained` within that spread of `no_knowledge`
means the model knows nothing about the evaluation facts beyond that bias.

What is replaced:
- nonsense words: any word (letters only, any case; a trailing plural "s" kept) in one of the
  datasets' or the pretraining corpus' word pools (`icl_ft.datasets.words`);
- celebrity names: the dataset card's `people` (generated celebrities), else every choice or
  training completion that looks like a full name (the original release); each name's words
  are replaced one by one, so "Daphne Barrington" becomes e.g. "Uvelt Glorn".

Fresh words come from the word file's `no_knowledge` namespace, disjoint from every other
namespace (and so from every document of every dataset and of the pretraining corpus; tests
check it). The mapping is one word -> one fresh word for the whole dataset (injective, so
distinct choices stay distinct, and a word shared by two facts stays shared), seeded, and keeps
whether a word starts with a vowel (so "an abart" stays "an" + a vowel word). Case and a
plural "s" follow the original token ("Peangs" -> "Ablaxs" when "peang" maps to "ablax").
Pure Python: no JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from icl_ft.datasets import celebrities
from icl_ft.datasets import celebrities_original
from icl_ft.datasets import records
from icl_ft.datasets import words

FRESH_NAMESPACE = "no_knowledge"
CONTROL = "no_knowledge"
_WORD = re.compile(r"[A-Za-z]+")
_VOWELS = "aeiou"  # an article is "an" before these (semantic_phrasing.article)


def source_namespaces() -> tuple[str, ...]:
  """The namespaces whose words count as nonsense words (all but the fresh one)."""
  return tuple(n for n in words.NAMESPACES if n != FRESH_NAMESPACE)


@functools.cache
def nonsense_words() -> frozenset[str]:
  """Every word of every dataset's and the pretraining corpus' pool."""
  return frozenset(w for n in source_namespaces() for w in words.pool(n))


def fresh_pool() -> tuple[str, ...]:
  """The fresh words (sorted): never in any dataset or pretraining document."""
  return words.pool(FRESH_NAMESPACE)


def _case_like(template: str, word: str) -> str:
  """`word` in the case of `template` (lower, Capitalized, or UPPER)."""
  if len(template) > 1 and template.isupper():
    return word.upper()
  if template[:1].isupper():
    return word[:1].upper() + word[1:]
  return word


def _stem(token: str, vocabulary: Mapping[str, str] | frozenset[str]) -> tuple[str, str] | None:
  """(nonsense word, suffix) of a token: the word itself, or its plural; None if neither."""
  low = token.lower()
  if low in vocabulary:
    return low, ""
  if low.endswith("s") and low[:-1] in vocabulary:  # no pool word ends in "s"
    return low[:-1], token[-1]
  return None


def celebrity_names(dataset: records.Dataset) -> tuple[str, ...]:
  """The fictional people's full names of a celebrities dataset (none for other datasets)."""
  people = dataset.card.get("people")
  names: set[str] = set()
  if isinstance(people, Mapping):
    names = {str(p["name"]) for group in people.values() for p in group}
  elif dataset.name == celebrities.NAME:  # the original release: names are completions
    texts = [c for qs in dataset.tests.values() for q in qs for c in q.choices]
    for d in dataset.train:
      start = d.metadata.get("completion_start")
      texts.append(d.text[int(start):] if start is not None else d.text)
    names = {n for t in texts if (n := celebrities_original.as_name(t))}
  return tuple(sorted(names))


def _strings(obj: Any) -> Iterable[str]:
  if isinstance(obj, str):
    yield obj
  elif isinstance(obj, Mapping):
    for v in obj.values():
      yield from _strings(v)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      yield from _strings(v)


def _texts(dataset: records.Dataset) -> Iterable[str]:
  """Every text of the dataset: documents, questions, and the card's strings (its lexicon)."""
  yield from _strings(dict(dataset.card))
  for d in dataset.train:
    yield d.text
    yield from d.sentences
  for qs in dataset.tests.values():
    for q in qs:
      yield q.prompt
      yield from q.choices


@dataclasses.dataclass(frozen=True)
class Relabelling:
  """One dataset's word mapping: nonsense word -> fresh word, name word -> fresh word."""

  words: Mapping[str, str]  # lower-case nonsense word -> fresh word
  name_words: Mapping[str, str]  # lower-case word of a celebrity name -> fresh word
  names: tuple[str, ...]  # the full names whose words `name_words` replaces

  @functools.cached_property
  def _names_pattern(self) -> re.Pattern[str] | None:
    if not self.names:
      return None
    alternatives = "|".join(map(re.escape, sorted(self.names, key=lambda n: (-len(n), n))))
    return re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)")

  def _name(self, match: re.Match[str]) -> str:
    return _WORD.sub(lambda m: _case_like(m.group(), self.name_words[m.group().lower()]),
                     match.group())

  def _word(self, match: re.Match[str]) -> str:
    token = match.group()
    found = _stem(token, self.words)
    if found is None:
      return token
    word, suffix = found
    return _case_like(token, self.words[word]) + suffix

  def text(self, text: str) -> str:
    """`text` with every celebrity name, then every nonsense word, replaced."""
    if self._names_pattern is not None:
      text = self._names_pattern.sub(self._name, text)
    return _WORD.sub(self._word, text)

  def value(self, obj: Any) -> Any:
    """Every string inside `obj` (dicts, lists) relabelled; keys and other values kept."""
    if isinstance(obj, str):
      return self.text(obj)
    if isinstance(obj, Mapping):
      return {k: self.value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
      return type(obj)(self.value(v) for v in obj)
    return obj


def make_relabelling(dataset: records.Dataset, fresh: Sequence[str] | None = None,
                     seed: int = 0) -> Relabelling:
  """The mapping for `dataset`: each of its nonsense and name words gets its own fresh word.

  Raises ValueError if `fresh` (default: `fresh_pool()`) holds a nonsense word, or has too few
  words starting (or not starting) with a vowel for the dataset.
  """
  fresh = sorted(set(fresh_pool() if fresh is None else fresh))
  clash = sorted(set(fresh) & nonsense_words())
  if clash:
    raise ValueError(f"fresh words {clash[:5]} are nonsense words of a dataset pool")
  vocabulary = nonsense_words()
  found: set[str] = set()
  for t in _texts(dataset):
    for token in _WORD.findall(t):
      if (stem := _stem(token, vocabulary)) is not None:
        found.add(stem[0])
  names = celebrity_names(dataset)
  name_words = {w.lower() for n in names for w in _WORD.findall(n)}
  rng = random.Random(f"relabel/{dataset.name}/{seed}")
  by_class = {True: [w for w in fresh if w[0] in _VOWELS], False: [w for w in fresh if w[0] not in _VOWELS]}
  for pool in by_class.values():
    rng.shuffle(pool)
  assigned: dict[str, str] = {}
  for key in sorted(found | name_words):
    pool = by_class[key[0] in _VOWELS]
    if not pool:
      need = sum(1 for k in found | name_words if (k[0] in _VOWELS) == (key[0] in _VOWELS))
      raise ValueError(f"dataset {dataset.name}: {need} words {'' if key[0] in _VOWELS else 'not '}"
                       f"starting with a vowel need fresh ones; the fresh pool has too few")
    assigned[key] = pool.pop()
  return Relabelling(words={k: assigned[k] for k in sorted(found)},
                     name_words={k: assigned[k] for k in sorted(name_words)}, names=names)


def _document(doc: records.Document, r: Relabelling) -> records.Document:
  metadata = dict(doc.metadata)
  if "completion_start" in metadata:  # the prompt/completion boundary moves with the names
    metadata["completion_start"] = len(r.text(doc.text[: int(metadata["completion_start"])]))
  return dataclasses.replace(doc, text=r.text(doc.text),
                             sentences=tuple(r.text(s) for s in doc.sentences), metadata=metadata)


def _question(q: records.Question, r: Relabelling) -> records.Question:
  return dataclasses.replace(q, prompt=r.text(q.prompt), choices=tuple(r.text(c) for c in q.choices))


# Question ids of relabelling k in `relabel_many`: "<id>@relabelling<k>".
RELABELLING_MARK = "@relabelling"


def relabelling_index(question_id: str) -> int | None:
  """k of a `relabel_many` question id; None for any other id."""
  head, mark, k = question_id.rpartition(RELABELLING_MARK)
  return int(k) if mark and head and k.isdigit() else None


def relabel_many(dataset: records.Dataset, count: int, seed: int = 0,
                 fresh: Sequence[str] | None = None) -> records.Dataset:
  """`count` relabellings of `dataset` (seeds seed, seed + 1, ...) as one dataset.

  Its documents are the first relabelling's; its tests hold every relabelling's questions,
  relabelling k's ids ending in `RELABELLING_MARK` k (`relabelling_index`). One relabelling is
  `relabel` itself, ids unchanged.
  """
  if count < 1:
    raise ValueError(f"no_knowledge relabellings must be >= 1, got {count}")
  draws = [relabel(dataset, fresh, seed + k) for k in range(count)]
  if count == 1:
    return draws[0]
  card = dict(draws[0].card)
  card["relabelled"] = {**card["relabelled"], "seeds": [seed + k for k in range(count)]}
  tests = {split: tuple(dataclasses.replace(q, id=f"{q.id}{RELABELLING_MARK}{k}")
                        for k, d in enumerate(draws) for q in d.tests[split])
           for split in dataset.tests}
  merged = records.Dataset(name=dataset.name, train=draws[0].train, tests=tests, card=card)
  return dataclasses.replace(merged, card=merged.card_with_counts())  # counts of these tests


def relabel(dataset: records.Dataset, fresh: Sequence[str] | None = None, seed: int = 0
            ) -> records.Dataset:
  """`dataset` with every nonsense word and celebrity name replaced by fresh words.

  Ids, splits, subsets, correct indices and fact ids are unchanged; texts, choices and the
  card's strings are relabelled; `card["relabelled"]` records the control, seed and mapping.
  """
  r = make_relabelling(dataset, fresh, seed)
  card = r.value(dict(dataset.card))
  card["relabelled"] = {"control": CONTROL, "source": dataset.name, "seed": seed,
                        "fresh_namespace": FRESH_NAMESPACE if fresh is None else "custom",
                        "words": dict(r.words), "name_words": dict(r.name_words)}
  return records.Dataset(
      name=dataset.name, train=tuple(_document(d, r) for d in dataset.train),
      tests={s: tuple(_question(q, r) for q in qs) for s, qs in dataset.tests.items()}, card=card)
