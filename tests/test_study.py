"""icl-ft-study: the micro study end to end, resume, table arithmetic, the figure, bad input."""

import contextlib
import copy
import fcntl
import json
import math
import os
from pathlib import Path

import pytest
import train_setup

from icl_ft import config_blocks
from icl_ft import report
from icl_ft import study
from icl_ft.bin import study as study_bin
from icl_ft.datasets import records
from icl_ft.model import loader
from icl_ft.pipeline import formats

ROW_KEYS = {"dataset", "split", "condition", "accuracy", "se", "n", "chance", "seed"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _study_config(variant: str = "micro", **overrides):
  return train_setup.apply_overrides(config_blocks.config_module("study").get_config(variant),
                                     overrides)


def _cache_dir(tmp_path_factory) -> str:
  """The session's persistent compilation cache (shared with the training and eval tests)."""
  return str(tmp_path_factory.getbasetemp() / "jax_compilation_cache")


def _standin_assets(root: Path) -> Path:
  """A stand-in for icl_ft/assets/tiny: a fresh `tiny_default` model and a 1024-piece tokenizer."""
  from icl_ft import checkpoints
  from icl_ft import config_blocks
  from icl_ft.datasets import registry

  if not (root / "tokenizer.model").is_file():
    study.train_tokenizer([registry.generate("syllogisms", "small")], 1024,
                          root / "tokenizer.model")
  if not (root / "params").is_dir():
    mesh, rules = loader.mesh_from_config(config_blocks.mesh_config())
    model, _ = loader.load_model(config_blocks.model_config(loader.DEFAULT_PRESET), mesh, rules)
    checkpoints.save_params(root / "params", model)
  return root


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
  """The micro study on the default-model path (loader.ASSETS_DIR -> stand-in assets).

  Run once per pytest session: xdist workers share one directory under a file lock; a worker
  that comes second resumes the finished study (every stage skipped, the report rewritten).
  A test that changes the run holds the lock.
  """
  base = tmp_path_factory.getbasetemp()
  shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "study_micro"
  shared.mkdir(exist_ok=True)
  with _locked(shared):
    assets = _standin_assets(shared / "assets")
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(loader, "ASSETS_DIR", assets)
      config = _study_config(results_dir=str(shared / "results"),
                             compilation_cache_dir=_cache_dir(tmp_path_factory))
    assert config.model.checkpoint == str(assets / "params")
    return config, study.run_study(config)


@contextlib.contextmanager
def _locked(shared: Path):
  """Holds the shared micro study's lock (one xdist worker at a time runs or changes it)."""
  with open(shared / ".lock", "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _questions(run_dir: Path) -> list[dict]:
  out = []
  for path in sorted((run_dir / "eval").glob("*/*/questions.jsonl")):
    out += [json.loads(line) for line in path.read_text().splitlines()]
  return out


def test_micro_study_writes_every_output(micro):
  config, result = micro
  run_dir = result.run_dir
  for name in ("summary.json", "table.md", "figure.png", "study.json", "settings.json"):
    assert (run_dir / name).is_file(), name
  rows = json.loads((run_dir / "summary.json").read_text())
  assert rows == result.rows and all(set(r) == ROW_KEYS for r in rows)
  got = {(r["dataset"], r["condition"]) for r in rows}
  want = {("syllogisms", c) for c in study.CONDITIONS}
  assert got == want
  # Every condition is scored on the same questions: the dataset's test set.
  ds = records.read_dataset(run_dir / "data" / "syllogisms")
  assert all(r["n"] == len(ds.tests[r["split"]]) for r in rows)
  # Per-condition evaluation directories, as icl-ft-eval writes them.
  for name, condition in want:
    run = "pretrained" if condition == "pretrained" else f"{condition}_s0"
    d = run_dir / "eval" / name / run
    assert {"questions.jsonl", "summary.json", "table.md", "run.json"} <= {p.name for p in d.iterdir()}
  table = (run_dir / "table.md").read_text()
  assert table == result.table
  header = [line for line in table.splitlines() if line.startswith("| dataset | split |")][0]
  assert header == ("| dataset | split | pretrained | icl | ft | ft_split | ft_aug_local | "
                    "ft_aug_global | ft_aug_all | chance |")
  assert (run_dir / "figure.png").read_bytes()[:8] == PNG_MAGIC


def test_summary_rows_recompute_from_the_question_records(micro):
  _, result = micro
  recs = _questions(result.run_dir)
  assert len(recs) == sum(r["n"] for r in result.rows)
  for row in result.rows:
    mine = [r for r in recs if (r["dataset"], r["split"], r["condition"]) ==
            (row["dataset"], row["split"], row["condition"])]
    assert row["n"] == len(mine)
    assert row["accuracy"] == pytest.approx(sum(r["is_correct"] for r in mine) / len(mine))
    assert row["chance"] == pytest.approx(
        sum(len(r["correct"]) / len(r["choices"]) for r in mine) / len(mine))


def test_finetuning_is_data_matched_and_reported(micro):
  config, result = micro
  info = json.loads((result.run_dir / "study.json").read_text())
  ft = info["finetuning"]
  assert ft == json.loads(json.dumps(result.finetuning))
  assert {(f["dataset"], f["condition"]) for f in ft} == {
      (r["dataset"], r["condition"]) for r in result.rows if r["condition"].startswith("ft")}
  for f in ft:
    assert f["steps"] == config.train.steps and f["batch_size"] == config.train.batch_size
    assert f["loss_tokens_seen"] > 0 and f["final_loss"] is not None
    assert f["epochs"] == pytest.approx(f["loss_tokens_seen"] / f["target_tokens_per_epoch"])
  by = {(f["dataset"], f["condition"]): f for f in ft}
  ds = records.read_dataset(result.run_dir / "data" / "syllogisms")
  assert by[("syllogisms", "ft")]["documents"] == len(ds.train)
  assert by[("syllogisms", "ft")]["examples"] == len(formats.examples(ds, "document"))
  for strategy in ("local", "global", "all"):
    aug = by[("syllogisms", f"ft_aug_{strategy}")]
    assert aug["documents"] == len(ds.train) + aug["generated_documents"]
    aug_ds = records.read_dataset(result.run_dir / "data" / f"syllogisms_aug_{strategy}_s0")
    assert aug_ds.train[:len(ds.train)] == ds.train  # the same documents, then generated ones
  split = by[("syllogisms", "ft_split")]
  assert split["format"] == config.train.split_format
  assert split["examples"] == sum(len(d.sentences) for d in ds.train)
  assert "| syllogisms | ft_split | 0 | split_independent |" in result.table
  kinds = {s["kind"] for s in info["stages"]}
  assert kinds == {"data", "augment", "train", "eval", "report"}  # the model brings its tokenizer
  assert all(s["seconds"] >= 0 for s in info["stages"])
  assert info["seconds_by_kind"]["train"] > 0
  # ft_aug_all reuses the local and global generations: each stage is recorded once.
  keys = [s["key"] for s in info["stages"]]
  assert len(keys) == len(set(keys)) and "augment/syllogisms/local_s0" in keys


def test_rerun_resumes_and_a_removed_marker_reruns_only_that_stage(micro):
  config, first = micro
  marker = first.run_dir / "stages" / "eval__syllogisms__ft_s0.json"
  with _locked(Path(config.results_dir).parent):  # no other worker resumes meanwhile
    marker.unlink()
    again = study.run_study(config)
  redone = [s.key for s in again.stages if not s.resumed and s.kind != "report"]
  assert redone == ["eval/syllogisms/ft_s0"]
  assert again.rows == first.rows
  assert marker.is_file()
  # Training stages resumed, not retrained: their records are the first run's.
  assert [s.info for s in again.stages if s.kind == "train"] == [
      s.info for s in first.stages if s.kind == "train"]


def test_aug_all_is_exactly_what_augment_all_samples(micro):
  """ft_aug_all trains on local + global merged; augment_dataset(..., "all") gives the same."""
  from icl_ft import sampling
  from icl_ft.augment import augment

  config, result = micro
  run_dir = result.run_dir
  ds = records.read_dataset(run_dir / "data" / "syllogisms")
  merged = records.read_dataset(run_dir / "data" / "syllogisms_aug_all_s0")
  parts = [records.read_dataset(run_dir / "data" / f"syllogisms_aug_{s}_s0")
           for s in ("local", "global")]
  assert merged.train == ds.train + parts[0].train[len(ds.train):] + parts[1].train[len(ds.train):]
  mesh, rules = loader.mesh_from_config(config.mesh)
  model, tokenizer = loader.load_model(config.model, mesh, rules)
  params = sampling.SamplingParams(max_new_tokens=config.augment.max_new_tokens,
                                   temperature=config.augment.temperature,
                                   top_p=config.augment.top_p, seed=0)
  sampled = augment.augment_dataset(model, tokenizer, ds, "all", sampling=params, seed=0,
                                    mesh=mesh, rules=rules, progress=False,
                                    batch_size=config.augment.batch_size)
  assert sampled.train == merged.train
  want, got = sampled.card["augmentation"], merged.card["augmentation"]
  for key in ("strategy", "strategies", "counts", "audit", "seed"):
    assert got[key] == want[key], key


def test_other_settings_under_the_same_run_are_refused(micro):
  config, _ = micro
  changed = copy.deepcopy(config)
  changed.train.steps = 4
  with pytest.raises(ValueError, match=r"different settings \(train.steps: 3 != 4\)"):
    study.run_study(changed)


def _record(dataset, split, condition, subset, correct, qid):
  return {"dataset": dataset, "split": split, "subset": subset, "condition": condition,
          "id": qid, "choices": [{}, {}], "correct": [0], "predicted": 0 if correct else 1,
          "is_correct": correct, "metric": "sum"}


def test_report_arithmetic_per_seed_and_pooled(tmp_path):
  ds = records.Dataset(name="d", train=(), tests={"s": ()}, card={})
  evals = []
  # Seed 0: subset a 2/2, subset b 0/2 -> 0.5, se = std([1, 0]) / sqrt(2) = 0.5.
  # Seed 1: subset a 1/2, subset b 1/2 -> 0.5, se = 0.
  # Pooled: a 3/4, b 1/4 -> 0.5, se = sqrt(((.75-.5)^2 + (.25-.5)^2) / 1) / sqrt(2) = 0.25.
  outcomes = {0: [("a", True), ("a", True), ("b", False), ("b", False)],
              1: [("a", True), ("a", False), ("b", True), ("b", False)]}
  for seed, outs in outcomes.items():
    d = tmp_path / f"ft_s{seed}"
    d.mkdir()
    lines = [json.dumps(_record("d", "s", "ft", sub, ok, f"q{i}")) for i, (sub, ok) in enumerate(outs)]
    (d / "questions.jsonl").write_text("\n".join(lines) + "\n")
    evals.append(("d", "ft", seed, d))
  rows, pooled, table = study.write_report(tmp_path, ["d"], {"d": ds}, ["ft"], evals, [], {},
                                           figure=True)
  assert [(r["seed"], r["accuracy"], r["n"]) for r in rows] == [(0, 0.5, 4), (1, 0.5, 4)]
  assert rows[0]["se"] == pytest.approx(0.5) and rows[1]["se"] == pytest.approx(0.0)
  assert len(pooled) == 1 and pooled[0]["n"] == 8 and pooled[0]["accuracy"] == 0.5
  assert pooled[0]["se"] == pytest.approx(0.25) and pooled[0]["chance"] == 0.5
  assert "| d | s | 0.500 ± 0.250 | 0.500 |" in table
  assert json.loads((tmp_path / "summary.json").read_text()) == rows
  assert (tmp_path / "figure.png").read_bytes()[:8] == PNG_MAGIC


def test_figure_has_a_panel_per_dataset_and_refuses_no_rows(tmp_path):
  from matplotlib import image

  rows = [{"dataset": d, "split": s, "condition": c, "accuracy": a, "se": 0.05, "n": 10,
           "chance": 0.5}
          for d, splits in (("x", ("s1", "s2")), ("y", ("t",)))
          for s in splits for c, a in (("icl", 0.9), ("ft", 0.4))]
  one = report.plot_results(rows[:2], tmp_path / "one.png")
  three = report.plot_results(rows, tmp_path / "three.png", title="t")
  assert one.read_bytes()[:8] == PNG_MAGIC
  assert image.imread(three).shape[1] > image.imread(one).shape[1]  # wider: more panels/splits
  with pytest.raises(ValueError, match="no summary rows"):
    report.plot_results([], tmp_path / "none.png")
  assert not (tmp_path / "none.png").exists()


def test_finetuning_table_formats_numbers():
  table = report.finetuning_table([{"dataset": "d", "condition": "ft", "seed": 0,
                                    "format": "document", "documents": 3, "examples": 3,
                                    "target_tokens_per_epoch": 40, "steps": 5, "batch_size": 8,
                                    "seq_len": 64, "loss_tokens_seen": 200, "epochs": 5.0,
                                    "final_loss": 1.23456}])
  assert table.splitlines()[2] == "| d | ft | 0 | document | 3 | 3 | 40 | 5 | 8 | 64 | 200 | 5.00 | 1.2346 |"


@pytest.mark.parametrize("field,value,message", [
    ("datasets", "simple_reversals,nope", "unknown dataset 'nope'"),
    ("conditions", "icl,ft_magic", r"unknown condition\(s\) \['ft_magic'\]"),
    ("seeds", "0,x", "config.seeds: 'x' is not an integer"),
    ("train__split_format", "sentences", "unknown training format 'sentences'"),
])
def test_bad_config_is_one_error_line_and_writes_nothing(tmp_path, capsys, field, value, message):
  config = _study_config(results_dir=str(tmp_path / "results"), **{field: value})
  with pytest.raises(ValueError, match=message):
    study.check_config(config)
  assert study_bin.execute(config) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ")
  assert not (tmp_path / "results").exists()


def test_ft_split_only_for_multi_sentence_documents():
  from icl_ft.datasets import registry

  reversals = registry.generate("simple_reversals", "small")
  syllogisms = registry.generate("syllogisms", "small")
  assert study.applicable(study.CONDITIONS, syllogisms) == list(study.CONDITIONS)
  assert study.applicable(study.CONDITIONS, reversals) == [
      c for c in study.CONDITIONS if c != "ft_split"]


def test_steps_from_epochs():
  config = _study_config("")
  stats = {"tokens_per_epoch": 1000}
  config.train.steps, config.train.epochs = 0, 10.0
  rows = config.train.batch_size * config.train.seq_len * 0.95
  assert study.finetuning_steps(config.train, stats) == math.ceil(10 * 1000 / rows)
  config.train.steps = 7
  assert study.finetuning_steps(config.train, stats) == 7


def test_default_and_full_configs():
  default = _study_config("")
  names, conditions, seeds = study.check_config(default)
  assert names == ["simple_reversals", "syllogisms", "celebrities", "semantic_structure"]
  assert conditions == list(study.CONDITIONS) and seeds == [0]
  assert default.scale == "small"
  full = _study_config("full")
  assert study.check_config(full)[1:] == (list(study.CONDITIONS), [0, 1, 2])
  with pytest.raises(ValueError, match="unknown study variant"):
    _study_config("huge")
  assert math.isfinite(default.train.learning_rate)
  assert default.train.keep_checkpoints


def test_gemma3_270m_config():
  config = _study_config("gemma3_270m")
  assert study.check_config(config)[:2] == (
      ["simple_reversals", "syllogisms", "celebrities", "semantic_structure"],
      list(study.CONDITIONS))
  m = config.model
  assert (m.preset, m.checkpoint, m.tokenizer, m.dtype) == (
      "gemma3_270m", "gemma3_270m", "gemma3_270m", "float32")
  assert config.train.learning_rate == 3e-4 and not config.train.keep_checkpoints
  assert config.eval.icl_subsample == 0  # auto: 1 when the documents fit the 32k window


def test_default_model_config_uses_the_loaders_assets(tmp_path, monkeypatch):
  assets = tmp_path / "tiny"
  monkeypatch.setattr(loader, "ASSETS_DIR", assets)
  fresh = study.default_model_config()  # nothing installed: a fresh `tiny`, no tokenizer
  assert (fresh.preset, fresh.checkpoint, fresh.tokenizer) == ("tiny", "", "")
  (assets / "params").mkdir(parents=True)
  assert study.default_model_config().preset == "tiny"  # params without a tokenizer
  (assets / "tokenizer.model").write_bytes(b"")
  cfg = study.default_model_config()
  assert (cfg.preset, cfg.checkpoint, cfg.tokenizer, cfg.checkpoint_format) == (
      "tiny_default", str(assets / "params"), str(assets / "tokenizer.model"), "icl_ft")
  assert _study_config("").model.to_dict() == cfg.to_dict()
  assert _study_config("micro").model.to_dict() == cfg.to_dict()


def test_keep_checkpoints_false_deletes_scored_finetuned_weights(micro, tmp_path):
  """train.keep_checkpoints=False: a finetuned run's checkpoints go once it is scored; its
  metrics, evaluation and a re-run (every stage skipped) stay."""
  config, _ = micro
  config = copy.deepcopy(config)
  config.results_dir = str(tmp_path)
  config.conditions = "ft"
  config.figure = False
  config.train.keep_checkpoints = False
  first = study.run_study(config)
  workdir = tmp_path / config.run / "train" / "syllogisms" / "ft_s0"
  assert (workdir / "metrics.jsonl").is_file() and not (workdir / "checkpoints").exists()
  assert [r["condition"] for r in first.rows] == ["ft"]
  again = study.run_study(config)
  assert all(s.resumed for s in again.stages if s.kind != "report") and again.rows == first.rows
