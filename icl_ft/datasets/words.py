"""Nonsense vocabulary: pronounceable 4-5 letter non-words, in disjoint namespaces.

Every dataset draws its novel entities, properties and relations from its own
namespace, so no two datasets (and nothing in the tiny model's pretraining corpus)
share a nonsense word, and nothing a test needs can have been seen in pretraining.

The words live in a committed file, `resources/nonsense_words.txt`: blocks of
`# namespace: NAME` followed by one word per line (sorted within a block). It was
made once by `regenerate()` and is what `pool()` reads, so the vocabulary never
changes under a dataset when a dependency is upgraded. `python -m
icl_ft.datasets.words --write` remakes it; the tests check that the file equals a
fresh regeneration (with the wordfreq version recorded in its header) and that every
word passes the filters below.

How the words are made (`regenerate`):

1. A character trigram model (two letters of context, with word-boundary markers) is
   counted over the alphabetic words of wordfreq's 50,000 most frequent English
   words, one count per word type, so it captures English spelling/phonotactics
   rather than the letters of "the" and "and".
2. A seeded `random.Random` samples words from it; a word is kept only if it
   - has 4 or 5 letters and contains a vowel (a, e, i, o, u, y),
   - has no run of three identical letters and no three vowels in a row,
   - does not end in "s" (so a bare plural "femps" is unambiguous), nor in an inflectional
     ending (-ed, -ing, -ly, -ion), nor contains a crude letter string,
   - uses only letter clusters that are common in English words in that position
     (onset, medial or final consonant runs seen in >= 30 word types, vowel runs in
     >= 100), which removes unpronounceable samples like "tdshe",
   - is not English: `is_english_word` is False for the word and for the word + "s"
     (wordfreq frequency 0 in its large English list, and not in the top-n list),
   - is not already taken, and is neither a prefix of a kept word nor has a kept word
     as a prefix (so "glon" and "glonk" never coexist: no confusable pairs when one
     is tokenized as a piece of the other).
3. The accepted stream is cut into consecutive blocks, in the fixed order of
   `NAMESPACE_SIZES`; appending a namespace at the end leaves earlier pools intact.
"""

from __future__ import annotations

import argparse
import collections
import functools
import random
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import wordfreq

# Fixed order: blocks are cut from the generated stream in this order.
NAMESPACE_SIZES: dict[str, int] = {
    "simple_reversals": 400,
    "syllogisms": 400,
    "celebrities": 200,
    "semantic_structure": 2000,
    "pretraining": 5000,
    # Fresh words for the `no_knowledge` control (icl_ft.datasets.relabel): never in any
    # dataset or the pretraining corpus, so a model cannot know anything about them.
    "no_knowledge": 1500,
}
NAMESPACES: tuple[str, ...] = tuple(NAMESPACE_SIZES)

GENERATOR_SEED = 20250505
WORD_FILE = Path(__file__).parent / "resources" / "nonsense_words.txt"
_HEADER_PREFIX = "# "
_NAMESPACE_PREFIX = "# namespace: "

_TRAINING_TOP_N = 50_000  # English word types the letter model is counted over.
_ENGLISH_TOP_N = 200_000  # Words (and inflections) that count as English regardless of frequency.
_ORDER = 3  # Trigram: two letters of context.
_VOWELS = frozenset("aeiouy")
_ALPHA = re.compile(r"^[a-z]+$")
_MIN_LEN, _MAX_LEN = 4, 5
_CLUSTERS = re.compile(r"[aeiouy]+|[^aeiouy]+")
_MIN_CLUSTER_TYPES = 30  # A letter cluster is English-like if this many word types have it there.
_MIN_VOWEL_TYPES = 100
_INFLECTION_ENDINGS = ("ed", "ing", "ly", "ion")
# Letter strings no word may contain (keeps crude or offensive look-alikes out of prompts).
_BLOCKED_SUBSTRINGS = (
    "anal", "anus", "bitch", "cock", "crap", "cum", "cunt", "damn", "dick", "fag", "fuck", "jiz",
    "kkk", "nazi", "nig", "piss", "porn", "rape", "sex", "shit", "slut", "tit", "twat", "whor",
)


@functools.cache
def _english_top_words() -> frozenset[str]:
  return frozenset(wordfreq.top_n_list("en", _ENGLISH_TOP_N, wordlist="best"))


def is_english_word(word: str) -> bool:
  """True if `word` has nonzero English frequency in wordfreq or is in its top-n English list."""
  w = word.lower()
  return w in _english_top_words() or wordfreq.word_frequency(w, "en", wordlist="best") > 0


def _wordfreq_version() -> str:
  return metadata.version("wordfreq")


class _LetterModel:
  """A character n-gram model over English word types (deterministic sampling)."""

  def __init__(self, words: Sequence[str], order: int = _ORDER):
    self.order = order
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for w in words:
      padded = "^" * (order - 1) + w + "$"
      for i in range(order - 1, len(padded)):
        counts[padded[i - order + 1 : i]][padded[i]] += 1
    # Sorted tables: sampling never depends on dict/set iteration order.
    self.table = {
        ctx: (tuple(sorted(c)), tuple(c[k] for k in sorted(c))) for ctx, c in sorted(counts.items())
    }

  def sample(self, rng: random.Random, max_len: int) -> str | None:
    """One word, or None if it runs past `max_len` letters."""
    ctx = "^" * (self.order - 1)
    out = []
    while True:
      letters, weights = self.table[ctx]
      ch = rng.choices(letters, weights=weights)[0]
      if ch == "$":
        return "".join(out)
      out.append(ch)
      if len(out) > max_len:
        return None
      ctx = (ctx + ch)[-(self.order - 1) :]


def _cluster_slots(word: str) -> list[tuple[str, str]]:
  """Splits a word into (slot, cluster): vowel runs, and onset/medial/coda consonant runs."""
  parts = _CLUSTERS.findall(word)
  slots = []
  for i, part in enumerate(parts):
    if part[0] in _VOWELS:
      slot = "vowel"
    elif i == 0:
      slot = "onset"
    elif i == len(parts) - 1:
      slot = "coda"
    else:
      slot = "medial"
    slots.append((slot, part))
  return slots


class _Phonotactics:
  """The letter clusters English words use in each position (counted over word types)."""

  def __init__(self, words: Sequence[str]):
    counts = collections.Counter(sc for w in words for sc in _cluster_slots(w))
    self.allowed = frozenset(
        sc for sc, n in counts.items() if n >= (_MIN_VOWEL_TYPES if sc[0] == "vowel" else _MIN_CLUSTER_TYPES)
    )

  def ok(self, w: str) -> bool:
    """True if `w` passes the shape filters and uses only common English letter clusters."""
    if not _MIN_LEN <= len(w) <= _MAX_LEN or not _ALPHA.match(w):
      return False
    if not _VOWELS & set(w) or w.endswith("s") or w.endswith(_INFLECTION_ENDINGS):
      return False
    if any(b in w for b in _BLOCKED_SUBSTRINGS):
      return False
    for i in range(len(w) - 2):
      tri = w[i : i + 3]
      if tri[0] == tri[1] == tri[2] or all(c in _VOWELS for c in tri):
        return False
    return all(sc in self.allowed for sc in _cluster_slots(w))


def regenerate(seed: int = GENERATOR_SEED, sizes: dict[str, int] | None = None) -> dict[str, tuple[str, ...]]:
  """Generates the namespace pools from scratch (slow-ish: ~seconds; needs wordfreq)."""
  sizes = dict(NAMESPACE_SIZES if sizes is None else sizes)
  training = [w for w in wordfreq.top_n_list("en", _TRAINING_TOP_N) if _ALPHA.match(w) and 3 <= len(w) <= 10]
  model = _LetterModel(training)
  phonotactics = _Phonotactics(training)
  rng = random.Random(seed)
  total = sum(sizes.values())
  accepted: list[str] = []
  taken: set[str] = set()
  prefixes: set[str] = set()  # every proper prefix of a kept word
  attempts = 0
  while len(accepted) < total:
    attempts += 1
    if attempts > 2000 * total:
      raise RuntimeError(f"could only make {len(accepted)} of {total} nonsense words")
    w = model.sample(rng, _MAX_LEN)
    if w is None or not phonotactics.ok(w) or w in taken or w in prefixes:
      continue
    if any(w[:k] in taken for k in range(_MIN_LEN, len(w))):
      continue
    if is_english_word(w) or is_english_word(w + "s"):
      continue
    accepted.append(w)
    taken.add(w)
    prefixes.update(w[:k] for k in range(1, len(w)))
  pools = {}
  start = 0
  for name, n in sizes.items():
    pools[name] = tuple(sorted(accepted[start : start + n]))
    start += n
  return pools


def render(pools: dict[str, tuple[str, ...]], seed: int = GENERATOR_SEED) -> str:
  """The text of the word file for `pools`."""
  lines = [
      "# Nonsense words for icl_ft datasets (made by icl_ft.datasets.words.regenerate; do not edit)",
      f"# seed: {seed}",
      f"# wordfreq: {_wordfreq_version()}",
  ]
  for name, words in pools.items():
    lines.append(f"{_NAMESPACE_PREFIX}{name}")
    lines.extend(words)
  return "\n".join(lines) + "\n"


def parse(text: str) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
  """Parses a word file into (header fields, {namespace: words})."""
  header: dict[str, str] = {}
  pools: dict[str, list[str]] = {}
  current: list[str] | None = None
  for lineno, line in enumerate(text.splitlines(), start=1):
    line = line.strip()
    if not line:
      continue
    if line.startswith(_NAMESPACE_PREFIX):
      name = line[len(_NAMESPACE_PREFIX) :].strip()
      if name in pools:
        raise ValueError(f"word file line {lineno}: namespace {name!r} appears twice")
      current = pools[name] = []
    elif line.startswith(_HEADER_PREFIX):
      key, sep, value = line[len(_HEADER_PREFIX) :].partition(": ")
      if sep:
        header[key.strip()] = value.strip()
    elif current is None:
      raise ValueError(f"word file line {lineno}: word {line!r} before any namespace")
    else:
      current.append(line)
  return header, {k: tuple(v) for k, v in pools.items()}


@functools.cache
def _load() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
  return parse(WORD_FILE.read_text(encoding="utf-8"))


def pools() -> dict[str, tuple[str, ...]]:
  """All namespaces and their words, as committed."""
  return dict(_load()[1])


def pool(namespace: str) -> tuple[str, ...]:
  """The (sorted) nonsense words reserved for `namespace`."""
  loaded = _load()[1]
  if namespace not in loaded:
    raise ValueError(f"unknown word namespace {namespace!r}; known: {sorted(loaded)}")
  return loaded[namespace]


def sample(namespace: str, n: int, rng: random.Random) -> list[str]:
  """`n` distinct words from `namespace`, in random order (raises ValueError if too few)."""
  words = pool(namespace)
  if not 0 <= n <= len(words):
    raise ValueError(f"n={n} words requested from namespace {namespace!r}, which has {len(words)}")
  return rng.sample(words, n)


def main(argv: Sequence[str] | None = None) -> None:
  """Regenerates the committed word file (`--write`) or checks it (default)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--write", action="store_true", help=f"rewrite {WORD_FILE}")
  args = parser.parse_args(argv)
  text = render(regenerate())
  if args.write:
    WORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    WORD_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {WORD_FILE}")
  elif WORD_FILE.read_text(encoding="utf-8") != text:
    raise SystemExit(f"{WORD_FILE} differs from a fresh regeneration; rerun with --write")
  else:
    print(f"{WORD_FILE} is up to date")


if __name__ == "__main__":
  main()
