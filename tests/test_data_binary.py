"""The dataset registry, configs/data.py and the icl-ft-data binary."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import train_setup

from icl_ft.bin import data as data_bin
from icl_ft.datasets import records, registry

ROOT = Path(__file__).resolve().parents[1]


CONFIGS = train_setup.config_file("data")


def _available(name):
  """True once the dataset's module file exists (a module that exists but fails to import fails the test)."""
  return importlib.util.find_spec(f"icl_ft.datasets.{name}") is not None


DATASETS = [pytest.param(name, marks=pytest.mark.skipif(not _available(name), reason=f"{name}.py not written yet"))
            for name in registry.NAMES]


def _config(name, output_dir, **changes):
  config = CONFIGS.get_config(name)
  config.output_dir = str(output_dir)
  params = changes.pop("params", {})
  for key, value in changes.items():
    config[key] = value
  for key, value in params.items():
    config.params[key] = value
  return config


def _assert_one_error_line(capsys, *fragments):
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


# --- registry -----------------------------------------------------------------------------------


def test_registry_names_and_contract():
  assert list(registry.DATASETS) == ["simple_reversals", "syllogisms", "celebrities", "semantic_structure"]
  module = registry.DATASETS["celebrities"]
  assert set(module.SCALES) >= {"paper", "small"}
  assert module.SCALES["paper"] == module.Params()


def test_lazy_modules_isolate_a_missing_one():
  lazy = registry._LazyModules(("celebrities", "no_such_dataset"))
  assert lazy["celebrities"].NAME == "celebrities"
  with pytest.raises(ModuleNotFoundError, match="no_such_dataset"):
    lazy["no_such_dataset"]
  with pytest.raises(KeyError):
    lazy["words"]


def test_registry_errors_name_the_problem():
  with pytest.raises(ValueError, match=r"unknown dataset 'nope'; valid: \['simple_reversals'"):
    registry.generate("nope")
  with pytest.raises(ValueError, match=r"unknown scale 'huge' for dataset 'celebrities'; valid: \['paper', 'small'\]"):
    registry.generate("celebrities", scale="huge")
  with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['num_facts'\] for dataset 'celebrities'; valid: "
                                       r"\['num_p2d_people'"):
    registry.generate("celebrities", scale="small", num_facts=3)


def test_registry_overrides_replace_params():
  ds = registry.generate("celebrities", scale="small", seed=2, num_p2d_people=6)
  assert ds.card["params"]["num_p2d_people"] == 6
  assert ds.card["scale"] == "custom" and ds.card["seed"] == 2
  assert len(ds.tests["reversal"]) == 6 * 2
  assert registry.generate("celebrities", scale="small", num_p2d_people=10).card["scale"] == "small"


@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_generates_at_small_scale(name):
  ds = registry.generate(name, scale="small")
  assert ds.name == name and ds.card["scale"] == "small" and ds.card["seed"] == 0
  assert ds.train and all(ds.tests.values())
  assert len({d.id for d in ds.train}) == len(ds.train)
  for split, questions in ds.tests.items():
    assert len({q.id for q in questions}) == len(questions)
    assert all(q.split == split for q in questions)


# --- configs/data.py ------------------------------------------------------------------------------


def test_config_defaults():
  config = CONFIGS.get_config("celebrities")
  assert (config.name, config.seed, config.scale, config.output_dir, config.overwrite) == (
      "celebrities", 0, "paper", "data", False)
  assert data_bin.overrides(config) == {}
  assert "num_p2d_people" in config.params  # one unset placeholder per Params field
  config.params.num_p2d_people = 12
  assert data_bin.overrides(config) == {"num_p2d_people": 12}
  assert CONFIGS.get_config("nope").params.to_dict() == {}


# --- the binary, in process -----------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_binary_is_byte_identical_for_the_same_seed(tmp_path, capsys, name):
  for out in ("a", "b"):
    assert data_bin.execute(_config(name, tmp_path / out, scale="small", seed=3)) == 0
  assert f"wrote {tmp_path / 'a' / name}" in capsys.readouterr().out
  files = sorted(p.name for p in (tmp_path / "a" / name).iterdir())
  assert "train.jsonl" in files and "card.json" in files and any(f.startswith("test_") for f in files)
  for f in files:
    assert (tmp_path / "a" / name / f).read_bytes() == (tmp_path / "b" / name / f).read_bytes(), f
  loaded = records.read_dataset(tmp_path / "a" / name)
  assert loaded.card["seed"] == 3 and loaded.card["scale"] == "small"
  assert loaded.train == registry.generate(name, scale="small", seed=3).train


def test_binary_applies_param_overrides(tmp_path):
  assert data_bin.execute(_config("celebrities", tmp_path, scale="small", params={"num_both_people": 0})) == 0
  card = records.read_dataset(tmp_path / "celebrities").card
  assert card["scale"] == "custom" and card["counts"]["train_documents"] == 10 * 5


def _assert_nothing_left(directory):
  assert not directory.exists() or list(directory.iterdir()) == [], list(directory.iterdir())


@pytest.mark.parametrize("name, changes, fragments", [
    ("nope", {}, ["unknown dataset 'nope'", "celebrities"]),
    ("", {}, ["no dataset name"]),
    ("celebrities", {"scale": "huge"}, ["unknown scale 'huge'", "small"]),
    ("celebrities", {"params": {"num_p2d_people": 100000}}, ["num_p2d_people", "100040"]),
    ("celebrities", {"params": {"num_train_paraphrases": 31}}, ["num_train_paraphrases=31"]),
])
def test_binary_bad_input_is_one_error_line_and_writes_nothing(tmp_path, capsys, name, changes, fragments):
  out = tmp_path / "out"
  assert data_bin.execute(_config(name, out, **changes)) != 0
  _assert_one_error_line(capsys, *fragments)
  _assert_nothing_left(out)


# A size field per dataset that has an upper bound (the vocabulary, templates or people run out).
SIZE_FIELDS = {"simple_reversals": "num_facts", "syllogisms": "num_examples", "celebrities": "num_p2d_people",
               "semantic_structure": "num_categories"}


@pytest.mark.parametrize("name", DATASETS)
def test_binary_impossible_size(tmp_path, capsys, name):
  """E.g. `--config.params.num_facts=100000`: one error line naming the field, nothing written."""
  config = _config(name, tmp_path / "out")
  field = SIZE_FIELDS.get(name) or next(
      k for k, v in registry.DATASETS[name].Params().__dict__.items() if type(v) is int)
  config.params[field] = 100000
  assert data_bin.execute(config) != 0
  _assert_one_error_line(capsys, field)
  _assert_nothing_left(tmp_path / "out")


def test_binary_unwritable_output_dir(tmp_path, capsys):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  assert data_bin.execute(_config("celebrities", blocker / "sub", scale="small")) != 0
  _assert_one_error_line(capsys, "cannot write", str(blocker))
  assert blocker.read_text() == "not a directory"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_binary_refuses_to_overwrite_unless_asked(tmp_path, capsys):
  assert data_bin.execute(_config("celebrities", tmp_path, scale="small")) == 0
  before = (tmp_path / "celebrities" / "train.jsonl").read_bytes()
  capsys.readouterr()
  assert data_bin.execute(_config("celebrities", tmp_path, scale="small", seed=1)) != 0
  _assert_one_error_line(capsys, "already exists", "overwrite")
  assert (tmp_path / "celebrities" / "train.jsonl").read_bytes() == before
  assert data_bin.execute(_config("celebrities", tmp_path, scale="small", seed=1, overwrite=True)) == 0
  assert (tmp_path / "celebrities" / "train.jsonl").read_bytes() != before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["celebrities"]  # no temporary siblings left


# --- the real console script --------------------------------------------------------------------


def _console_script():
  script = shutil.which("icl-ft-data") or str(Path(sys.executable).parent / "icl-ft-data")
  return [script] if os.path.exists(script) else [sys.executable, "-m", "icl_ft.bin.data"]


def test_console_script(tmp_path):
  out = tmp_path / "data"
  ok = subprocess.run(_console_script() + ["--config=configs/data.py:celebrities", f"--config.output_dir={out}",
                                           "--config.scale=small", "--config.params.num_both_people=2"],
                      cwd=ROOT, capture_output=True, text=True, timeout=120,
                      env={**os.environ, "PYTHONHASHSEED": "12345"})
  assert ok.returncode == 0, ok.stderr
  files = sorted(p.name for p in (out / "celebrities").iterdir())
  assert files == ["card.json", "test_forward.jsonl", "test_reversal.jsonl", "train.jsonl"]
  assert records.read_dataset(out / "celebrities").card["counts"]["train_documents"] == (10 + 2 * 2) * 5
  # byte-identical to an in-process run (another process, another hash seed)
  assert data_bin.execute(_config("celebrities", tmp_path / "again", scale="small",
                                  params={"num_both_people": 2})) == 0
  for f in files:
    assert (out / "celebrities" / f).read_bytes() == (tmp_path / "again" / "celebrities" / f).read_bytes()
  bad = subprocess.run(_console_script() + ["--config=configs/data.py:celebrities", f"--config.output_dir={out}2",
                                            "--config.params.num_facts=100000"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0
  lines = bad.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "num_facts" in lines[0], bad.stderr
  assert not (tmp_path / "data2").exists()


# --- the original reversal-curse release (celebrities) --------------------------------------------


def test_binary_converts_the_original_release(tmp_path, capsys):
  """A directory of the release's files -> a dataset directory; every file handled (card)."""
  from tests.test_celebrities import _write_release  # pylint: disable=g-import-not-at-top

  from icl_ft.datasets import celebrities_original  # pylint: disable=g-import-not-at-top

  release = _write_release(tmp_path / "name_description_dataset")
  assert data_bin.execute(_config("celebrities", tmp_path / "data", original_dir=str(release), seed=2)) == 0
  out = capsys.readouterr().out
  assert f"wrote {tmp_path / 'data' / 'celebrities'}" in out and "test_reversal=20" in out
  ds = records.read_dataset(tmp_path / "data" / "celebrities")
  assert ds.card["scale"] == "original" and sorted(ds.card["files"]) == sorted(celebrities_original.ORIGINAL_FILES)
  assert ds.card["source"] == "original layout: name_description_dataset"  # no absolute path
  assert ds.tests == celebrities_original.load_original(release, seed=2).tests
  assert sorted(ds.tests) == ["forward", "reversal", "validation"]
  # num_choices applies; the ICL-context directory keeps only the people asked about.
  assert data_bin.execute(_config("celebrities", tmp_path / "icl", original_dir=str(release),
                                  icl_context_subsample=2, icl_context_splits="reversal",
                                  params={"num_choices": 3})) == 0
  icl = records.read_dataset(tmp_path / "icl" / "celebrities")
  assert len(icl.train) == 10 and icl.card["icl_context"]["people_in_context"] == 10
  assert all(len(q.choices) == 3 for qs in icl.tests.values() for q in qs)


@pytest.mark.parametrize("changes, fragments", [
    ({"original_dir": "MISSING"}, ("MISSING", "not a directory")),
    ({"original_dir": "RELEASE", "params": {"num_p2d_people": 3}}, ("num_p2d_people", "original release")),
    ({"original_dir": "RELEASE", "icl_context_subsample": -1}, ("icl_context_subsample",)),
    ({"original_dir": "RELEASE", "icl_context_subsample": 2, "icl_context_splits": "nope"}, ("nope",)),
])
def test_binary_original_release_errors(tmp_path, capsys, changes, fragments):
  from tests.test_celebrities import _write_release  # pylint: disable=g-import-not-at-top

  release = _write_release(tmp_path / "release")
  changes = {k: (str(release) if v == "RELEASE" else str(tmp_path / v) if v == "MISSING" else v)
             for k, v in changes.items()}
  assert data_bin.execute(_config("celebrities", tmp_path / "data", **changes)) == 1
  _assert_one_error_line(capsys, *fragments)
  assert not (tmp_path / "data").exists()


def test_binary_original_dir_is_for_celebrities_only(tmp_path, capsys):
  assert data_bin.execute(_config("syllogisms", tmp_path / "data", original_dir=str(tmp_path))) == 1
  _assert_one_error_line(capsys, "original_dir", "celebrities dataset only")
