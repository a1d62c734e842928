"""Tests for the nonsense vocabulary (icl_ft.datasets.words)."""

import random

import pytest
import wordfreq

from icl_ft.datasets import words

ALL_POOLS = words.pools()


def test_namespaces_present_and_sized():
  assert set(words.NAMESPACES) == set(ALL_POOLS)
  for required in ("pretraining", "simple_reversals", "syllogisms", "semantic_structure", "celebrities"):
    assert required in words.NAMESPACES
  assert len(words.pool("pretraining")) >= 3000
  assert len(words.pool("semantic_structure")) >= 1500
  assert len(words.pool("simple_reversals")) >= 300
  assert len(words.pool("syllogisms")) >= 300
  for name, size in words.NAMESPACE_SIZES.items():
    assert len(words.pool(name)) == size


def test_words_shape_unique_and_disjoint():
  seen = {}
  for name, ws in ALL_POOLS.items():
    assert list(ws) == sorted(ws), name
    for w in ws:
      assert w.isalpha() and w.islower() and 4 <= len(w) <= 5, w
      assert not w.endswith("s"), w
      assert w not in seen, f"{w!r} in both {seen.get(w)} and {name}"
      seen[w] = name
  # No word is a prefix of another (no "glon" next to "glonk").
  everything = sorted(seen)
  for a, b in zip(everything, everything[1:]):
    assert not b.startswith(a), (a, b)


def test_no_word_is_english():
  # Independent of words.is_english_word: query wordfreq directly.
  english = set(wordfreq.top_n_list("en", 200_000))
  for w in (w for ws in ALL_POOLS.values() for w in ws):
    assert wordfreq.word_frequency(w, "en") == 0, w
    assert wordfreq.word_frequency(w + "s", "en") == 0, w + "s"
    assert w not in english and w + "s" not in english, w


def test_is_english_word():
  for w in ("dangerous", "glow", "table", "running", "The", "yomp"):
    assert words.is_english_word(w), w
  assert not words.is_english_word(words.pool("syllogisms")[0])


def test_committed_file_equals_regeneration():
  header, _ = words.parse(words.WORD_FILE.read_text(encoding="utf-8"))
  installed = words._wordfreq_version()  # pylint: disable=protected-access
  if header.get("wordfreq") != installed:
    # Other wordfreq data may accept or reject different samples; the file stays authoritative
    # (test_no_word_is_english still checks it against the installed wordfreq).
    pytest.skip(f"word file made with wordfreq {header.get('wordfreq')}; installed {installed}")
  assert words.WORD_FILE.read_text(encoding="utf-8") == words.render(words.regenerate())


def test_pool_errors_and_sample():
  with pytest.raises(ValueError, match="nope"):
    words.pool("nope")
  a = words.sample("syllogisms", 10, random.Random(3))
  b = words.sample("syllogisms", 10, random.Random(3))
  assert a == b and len(set(a)) == 10 and set(a) <= set(words.pool("syllogisms"))
  with pytest.raises(ValueError, match="n=401"):
    words.sample("syllogisms", 401, random.Random(0))


def test_parse_rejects_malformed():
  with pytest.raises(ValueError, match="before any namespace"):
    words.parse("glon\n")
  with pytest.raises(ValueError, match="twice"):
    words.parse("# namespace: a\nglon\n# namespace: a\nfemp\n")
  header, pools = words.parse("# seed: 1\n# namespace: a\nglon\n\nfemp\n# namespace: b\n")
  assert header == {"seed": "1"} and pools == {"a": ("glon", "femp"), "b": ()}
