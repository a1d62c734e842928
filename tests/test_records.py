"""Record types and their on-disk format."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from icl_ft.datasets import records, text


def _dataset() -> records.Dataset:
  docs = (
      records.Document(id="d0", text="Did you know that femp are brighter than glon.",
                       sentences=("Did you know that femp are brighter than glon.",), fact_ids=("f0",)),
      records.Document(id="d1", text="Zorp. Blick.", sentences=("Zorp.", "Blick."), metadata={"strategy": "local"}),
  )
  questions = (
      records.Question(id="q0", split="reversal", subset="brightness", prompt="glon are",
                       choices=(" dimmer than femp.", " brighter than femp."), correct=(0,), fact_ids=("f0",)),
  )
  return records.Dataset(name="toy", train=docs, tests={"reversal": questions}, card={"seed": 3})


def test_round_trip_is_byte_identical(tmp_path):
  ds = _dataset()
  first = records.write_dataset(ds, tmp_path / "a")
  loaded = records.read_dataset(first)
  assert loaded.train == ds.train
  assert loaded.tests == ds.tests
  assert loaded.card["counts"] == {"train_documents": 2, "train_sentences": 3, "test_reversal": 1}
  second = records.write_dataset(loaded, tmp_path / "b")
  for name in ("train.jsonl", "test_reversal.jsonl", "card.json"):
    assert (first / name).read_bytes() == (second / name).read_bytes()


def test_write_refuses_existing_dir_and_leaves_no_temp(tmp_path):
  ds = _dataset()
  records.write_dataset(ds, tmp_path / "a")
  with pytest.raises(FileExistsError, match="already exists"):
    records.write_dataset(ds, tmp_path / "a")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  def boom(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(records.json, "dump", boom)
  with pytest.raises(OSError, match="disk full"):
    records.write_dataset(_dataset(), tmp_path / "a")
  assert list(tmp_path.iterdir()) == []


def test_malformed_line_names_file_and_line(tmp_path):
  directory = records.write_dataset(_dataset(), tmp_path / "a")
  with open(directory / "test_reversal.jsonl", "a") as f:
    f.write('{"id": "q1", "split": "reversal"}\n')
  with pytest.raises(records.DatasetFormatError, match=r"test_reversal.jsonl:2"):
    records.read_dataset(directory)


def test_unknown_split_lists_available(tmp_path):
  directory = records.write_dataset(_dataset(), tmp_path / "a")
  with pytest.raises(ValueError, match=r"\['nope'\].*available: \['reversal'\]"):
    records.read_dataset(directory, splits=["nope"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(choices=("a",), correct=(0,)), ">= 2 choices"),
        (dict(choices=("a", "b"), correct=()), "empty"),
        (dict(choices=("a", "b"), correct=(2,)), "out of range"),
        (dict(choices=("a", "a"), correct=(0,)), "duplicate"),
    ],
)
def test_question_validation(kwargs, message):
  with pytest.raises(ValueError, match=message):
    records.Question(id="q", split="s", subset="t", prompt="p", **kwargs)


def test_chance_counts_multiple_correct():
  q = records.Question(id="q", split="s", subset="t", prompt="", choices=("a", "b", "c", "d", "e", "f"),
                       correct=(1, 4))
  assert q.chance == pytest.approx(2 / 6)


def test_dataset_rejects_question_in_wrong_split():
  q = records.Question(id="q", split="forward", subset="t", prompt="", choices=("a", "b"), correct=(0,))
  with pytest.raises(ValueError, match="forward"):
    records.Dataset(name="x", train=(), tests={"reversal": (q,)})


def test_contains_statement_normalizes_and_respects_word_boundaries():
  assert text.contains_statement("Did you know that FEMP are brighter than glon!", "femp are brighter than glon.")
  assert not text.contains_statement("xfemp are brighter than glonk", "femp are brighter than glon")
  assert not text.contains_statement("anything", "...")


def test_card_json_is_sorted_and_readable(tmp_path):
  directory = records.write_dataset(_dataset(), tmp_path / "a")
  card = json.loads((directory / "card.json").read_text())
  assert card["name"] == "toy" and card["seed"] == 3


def test_datasets_import_no_jax():
  """Every module of icl_ft.datasets imports in a fresh interpreter without JAX or Flax."""
  root = Path(__file__).resolve().parent.parent
  code = textwrap.dedent("""
      import importlib, pkgutil, sys
      import icl_ft.datasets as package
      names = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
      for name in names:
        importlib.import_module(f"icl_ft.datasets.{name}")
      print(len(names), sorted(m for m in ("jax", "flax") if m in sys.modules))
  """)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
  out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  assert int(out[0]) >= 15 and " ".join(out[1:]) == "[]", out
