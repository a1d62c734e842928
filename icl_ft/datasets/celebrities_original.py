"""The original reversal-curse release (Berglund et al.'s `name_description_dataset/`): load and write.

`load_original(directory)` reads the release's JSONL files (every one of them handled) into the
celebrities Dataset type; `write_original_layout(dataset, directory)` writes a generated
celebrities Dataset in that layout. Both share `celebrities.build_questions`, so a round trip
gives identical questions.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from icl_ft.datasets import celebrities
from icl_ft.datasets import records

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


def as_name(text: str) -> str | None:
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
    self.find = _NameFinder(n for pairs in files.values() for _, c in pairs if (n := as_name(c)))
    self.by_first_name: dict[str, list[str]] = {}
    for name in self.find.names:
      self.by_first_name.setdefault(name.split()[0], []).append(name)
    # Prompts answered by a full name (validation_prompts.jsonl repeats p2d_reverse's prompts).
    self.by_prompt = {p: n for pairs in files.values() for p, c in pairs
                      if (n := as_name(c)) is not None}

  def answer(self, prompt: str, completion: str) -> tuple[str | None, str]:
    """(person, kind): a completion that is a known name answers with it ("name"); a lone
    first name with the known person of that first name, or of the same prompt elsewhere when
    two share it ("first_name"); any other completion describes the person the prompt names
    ("description")."""
    name = as_name(completion)
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
          id=f"{group}-{i:05d}", text=text, sentences=(text,),
          fact_ids=(celebrities.slug(name),) if name else (),
          metadata={"group": group, "direction": direction, "source": filename, "line": i,
                    "completion_start": len(prompt)}))

  tests: dict[str, tuple[records.Question, ...]] = {"reversal": (), "forward": ()}
  for filename, spec in TEST_FILES.items():
    if filename not in files:
      continue
    by_subset: dict[str, list[celebrities.Line]] = {}
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
      by_subset.setdefault(subset, []).append(celebrities.Line(prompt, completion, key, kind))
    for subset, lines in by_subset.items():
      tests[spec.split] = tests.get(spec.split, ()) + celebrities.build_questions(
          lines, spec.split, subset, seed, num_choices)
    used[source[filename]] = f"split {spec.split}, subset(s) {', '.join(by_subset)}"

  card = {"name": celebrities.NAME, "seed": seed, "scale": "original", "source": f"original layout: {directory.name}",
          "params": {"num_choices": num_choices}, "files": _file_roles(present, used),
          "people": len(people.find.names)}
  return records.Dataset(name=celebrities.NAME, train=tuple(documents), tests=tests, card=card)



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
