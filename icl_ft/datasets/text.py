"""Text helpers shared by the dataset generators and their invariant checks."""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[^a-z0-9' ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
  """Lower-cases, drops punctuation and collapses whitespace (for string-match checks)."""
  text = _NON_WORD.sub(" ", text.lower().replace("\u2019", "'"))
  return _SPACES.sub(" ", text).strip()


def contains_statement(haystack: str, statement: str) -> bool:
  """True if the normalized statement occurs in the normalized text at word boundaries."""
  needle = normalize(statement)
  return bool(needle) and f" {needle} " in f" {normalize(haystack)} "
