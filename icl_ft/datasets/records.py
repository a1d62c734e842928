"""Record types shared by every dataset, and their JSONL / card.json I/O.

A dataset on disk is a directory:

    <dir>/train.jsonl           one Document per line
    <dir>/test_<split>.jsonl    one Question per line, for each split
    <dir>/card.json             the Dataset's card (name, seed, scale, params, counts)

Writes are atomic: files go to a temporary sibling directory that is renamed into
place only once complete, so a failed run never leaves a directory that looks done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_ft import fileio

TRAIN_FILE = "train.jsonl"
CARD_FILE = "card.json"
TEST_PREFIX = "test_"


class DatasetFormatError(ValueError):
  """A dataset file on disk is malformed (names the file and line)."""


@dataclasses.dataclass(frozen=True)
class Document:
  """One training article.

  Attributes:
    id: unique within the dataset.
    text: the full article as the model sees it.
    sentences: the article split into sentences (for sentence-split finetuning);
      `" ".join(sentences)` need not equal `text` exactly (formats may use newlines).
    fact_ids: ids of the knowledge-base facts the article states.
    metadata: free-form provenance (e.g. augmentation strategy, source document).
  """

  id: str
  text: str
  sentences: tuple[str, ...]
  fact_ids: tuple[str, ...] = ()
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict[str, Any]:
    return {
        "id": self.id,
        "text": self.text,
        "sentences": list(self.sentences),
        "fact_ids": list(self.fact_ids),
        "metadata": dict(self.metadata),
    }

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> Document:
    return cls(
        id=str(obj["id"]),
        text=str(obj["text"]),
        sentences=tuple(obj["sentences"]),
        fact_ids=tuple(obj.get("fact_ids", ())),
        metadata=dict(obj.get("metadata", {})),
    )


@dataclasses.dataclass(frozen=True)
class Question:
  """One multiple-choice test question, scored by log-likelihood.

  The model scores `prompt + choices[i]` for each i; the choices are never shown
  in context. `correct` is a set of indices (some syllogisms have two valid
  conclusions).

  Attributes:
    id: unique within the dataset.
    split: test split name (e.g. `reversal`, `syllogism`).
    subset: type of inference, the unit over which standard errors are taken.
    prompt: lead text shared by all choices (may be empty).
    choices: continuations to score; each starts with the separator it needs
      (usually a leading space).
    correct: indices of the correct choices; non-empty.
    fact_ids: ids of the trained facts the answer depends on (its premises).
  """

  id: str
  split: str
  subset: str
  prompt: str
  choices: tuple[str, ...]
  correct: tuple[int, ...]
  fact_ids: tuple[str, ...] = ()

  def __post_init__(self):
    if len(self.choices) < 2:
      raise ValueError(f"question {self.id!r}: needs >= 2 choices, got {len(self.choices)}")
    if not self.correct:
      raise ValueError(f"question {self.id!r}: `correct` is empty")
    bad = [i for i in self.correct if not 0 <= i < len(self.choices)]
    if bad:
      raise ValueError(f"question {self.id!r}: correct indices {bad} out of range")
    if len(set(self.choices)) != len(self.choices):
      raise ValueError(f"question {self.id!r}: duplicate choices {self.choices}")

  @property
  def statements(self) -> tuple[str, ...]:
    """The full text of each choice as a statement (prompt + choice)."""
    return tuple(self.prompt + c for c in self.choices)

  @property
  def chance(self) -> float:
    """Accuracy of a uniformly random pick among the choices."""
    return len(set(self.correct)) / len(self.choices)

  def to_json(self) -> dict[str, Any]:
    return {
        "id": self.id,
        "split": self.split,
        "subset": self.subset,
        "prompt": self.prompt,
        "choices": list(self.choices),
        "correct": list(self.correct),
        "fact_ids": list(self.fact_ids),
    }

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> Question:
    return cls(
        id=str(obj["id"]),
        split=str(obj["split"]),
        subset=str(obj["subset"]),
        prompt=str(obj["prompt"]),
        choices=tuple(obj["choices"]),
        correct=tuple(int(i) for i in obj["correct"]),
        fact_ids=tuple(obj.get("fact_ids", ())),
    )


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A generated dataset: training documents and test questions by split.

  `card` holds what is needed to regenerate and describe it: `name`, `seed`,
  `scale`, `params` and anything dataset-specific; `counts` is filled in by
  `card_with_counts`.
  """

  name: str
  train: tuple[Document, ...]
  tests: Mapping[str, tuple[Question, ...]]
  card: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for split, questions in self.tests.items():
      wrong = {q.split for q in questions} - {split}
      if wrong:
        raise ValueError(f"dataset {self.name!r}: split {split!r} holds questions of split {sorted(wrong)}")

  def card_with_counts(self) -> dict[str, Any]:
    """The card plus counts of documents, sentences and questions per split."""
    card = dict(self.card)
    card["name"] = self.name
    card["counts"] = {
        "train_documents": len(self.train),
        "train_sentences": sum(len(d.sentences) for d in self.train),
        **{f"test_{split}": len(qs) for split, qs in sorted(self.tests.items())},
    }
    return card


def _dump_line(obj: Mapping[str, Any]) -> str:
  # sort_keys + fixed separators: same records => byte-identical files.
  return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Document | Question]) -> None:
  """Writes records one JSON object per line."""
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(_dump_line(record.to_json()))


def _read_jsonl(path: Path, cls: type[Document] | type[Question]) -> Iterator[Any]:
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        yield cls.from_json(json.loads(line))
      except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DatasetFormatError(f"{path}:{lineno}: malformed {cls.__name__} record: {e}") from e


def read_documents(path: str | os.PathLike[str]) -> list[Document]:
  """Reads a JSONL file of Documents."""
  return list(_read_jsonl(Path(path), Document))


def read_questions(path: str | os.PathLike[str]) -> list[Question]:
  """Reads a JSONL file of Questions."""
  return list(_read_jsonl(Path(path), Question))


def write_dataset(dataset: Dataset, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
  """Writes `dataset` into `directory` atomically; returns the directory.

  Raises FileExistsError if the directory exists and `overwrite` is False.
  """
  directory = Path(directory)
  if directory.exists() and not overwrite:
    raise FileExistsError(f"dataset directory already exists: {directory}")
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
  try:
    tmp.chmod(fileio.umask_mode(0o777))  # a plain mkdir's mode, not mkdtemp's private 0700
    write_jsonl(tmp / TRAIN_FILE, dataset.train)
    for split, questions in sorted(dataset.tests.items()):
      write_jsonl(tmp / f"{TEST_PREFIX}{split}.jsonl", questions)
    with open(tmp / CARD_FILE, "w", encoding="utf-8") as f:
      json.dump(dataset.card_with_counts(), f, sort_keys=True, indent=2, ensure_ascii=False)
      f.write("\n")
    if directory.exists():
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return directory


def read_dataset(directory: str | os.PathLike[str], splits: Sequence[str] | None = None) -> Dataset:
  """Reads a dataset directory written by `write_dataset`.

  Args:
    directory: the dataset directory.
    splits: test splits to load (default: all present). An unknown split raises
      ValueError naming the available ones.
  """
  directory = Path(directory)
  card_path = directory / CARD_FILE
  if not card_path.is_file():
    raise FileNotFoundError(f"not a dataset directory (no {CARD_FILE}): {directory}")
  try:
    card = json.loads(card_path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DatasetFormatError(f"{card_path}: malformed JSON: {e}") from e
  available = sorted(p.name[len(TEST_PREFIX) : -len(".jsonl")] for p in directory.glob(f"{TEST_PREFIX}*.jsonl"))
  if splits is None:
    splits = available
  unknown = [s for s in splits if s not in available]
  if unknown:
    raise ValueError(f"unknown split(s) {unknown} for dataset {directory}; available: {available}")
  tests = {s: tuple(read_questions(directory / f"{TEST_PREFIX}{s}.jsonl")) for s in splits}
  return Dataset(
      name=card.get("name", directory.name),
      train=tuple(read_documents(directory / TRAIN_FILE)),
      tests=tests,
      card=card,
  )
