"""Training formats: how a Dataset's documents become training examples.

An `Example` is `context + target`: the model reads both, and the loss covers only the
target (plus the EOS that ends it). The formats (the paper's finetuning variants):

- `document`: one example per document; the whole `text` is the target.
- `split_independent`: one example per sentence; the sentence alone is the target.
- `split_cumulative`: one example per sentence; all preceding sentences of its document are
  the context, the sentence is the target. The context is the preceding sentences joined by
  single spaces, and the target carries the separating space (`" " + sentence`) when there is
  context, because SentencePiece attaches a space to the word after it (the same convention as
  multiple-choice continuations).

A document without `sentences` (e.g. an augmentation trace) counts as one sentence, its `text`.
`source_id` is unique per example: the document id for `document`, `"{doc_id}/{i}"` (sentence
index i) for the split formats. Order: documents in dataset order, sentences in document order.
Augmented datasets (extra documents with metadata) need nothing special.

No JAX here: this is plain Python over `records.Dataset`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from icl_ft.datasets import records

FORMATS: tuple[str, ...] = ("document", "split_independent", "split_cumulative")


@dataclasses.dataclass(frozen=True)
class Example:
  """One training example: `context + target`, loss on the target only."""

  context: str
  target: str
  source_id: str


def check_format(fmt: str) -> str:
  """Returns `fmt` if it is a known format name, else raises a one-line ValueError."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown training format {fmt!r}; known formats: {', '.join(FORMATS)}")
  return fmt


def _sentences(doc: records.Document) -> Sequence[str]:
  return doc.sentences if doc.sentences else (doc.text,)


def examples(dataset: records.Dataset, fmt: str) -> list[Example]:
  """The training examples of `dataset.train` in format `fmt` (deterministic order).

  Raises ValueError for an unknown format, an empty training set, a document with empty
  text or an empty sentence, or duplicate document ids (source ids must be unique).
  """
  check_format(fmt)
  if not dataset.train:
    raise ValueError(f"dataset {dataset.name!r} has no training documents")
  out: list[Example] = []
  seen: set[str] = set()
  for doc in dataset.train:
    if doc.id in seen:
      raise ValueError(f"dataset {dataset.name!r}: duplicate document id {doc.id!r}")
    seen.add(doc.id)
    if not doc.text.strip():
      raise ValueError(f"dataset {dataset.name!r}: document {doc.id!r} has empty text")
    if fmt == "document":
      out.append(Example(context="", target=doc.text, source_id=doc.id))
      continue
    sentences = _sentences(doc)
    for i, sentence in enumerate(sentences):
      if not sentence.strip():
        raise ValueError(f"dataset {dataset.name!r}: document {doc.id!r} sentence {i} is empty")
      source_id = f"{doc.id}/{i}"
      if fmt == "split_independent" or i == 0:
        out.append(Example(context="", target=sentence, source_id=source_id))
      else:  # split_cumulative
        out.append(Example(context=" ".join(sentences[:i]), target=" " + sentence, source_id=source_id))
  return out
