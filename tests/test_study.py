"""icl-ft-study: the micro study end to end, resume, table arithmetic, the figure, bad input."""

import contextlib
import copy
import fcntl
import json
import math
import os
import re
import statistics
from pathlib import Path

import pytest
import train_setup

from icl_ft import fileio
from icl_ft import sharding
from icl_ft.bin import study as study_bin
from icl_ft.config import checks
from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.datasets import relabel
from icl_ft.evaluation import report
from icl_ft.model import loader
from icl_ft.pipeline import formats
from icl_ft.study import finetuning as study_ft
from icl_ft.study import outputs as study_outputs
from icl_ft.study import plan as study_plan
from icl_ft.study import run as study_run

ROW_KEYS = {*report.SUMMARY_KEYS, "seed"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _study_config(variant: str = "micro", **overrides):
  return train_setup.apply_overrides(train_setup.config_file("study").get_config(variant),
                                     overrides)


def _cache_dir(tmp_path_factory) -> str:
  """The session's persistent compilation cache (shared with the training and eval tests)."""
  return str(tmp_path_factory.getbasetemp() / "jax_compilation_cache")


def _standin_assets(root: Path) -> Path:
  """A stand-in for icl_ft/assets/tiny: a fresh `tiny_default` model and a 1024-piece tokenizer."""
  from icl_ft.model import checkpoints
  from icl_ft.datasets import registry

  if not (root / "tokenizer.model").is_file():
    study_ft.train_tokenizer([registry.generate("syllogisms", "small")], 1024,
                          root / "tokenizer.model")
  if not (root / "params").is_dir():
    mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
    model, _ = loader.load_model(schema.ModelConfig(preset=loader.DEFAULT_PRESET), mesh, rules)
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
    return config, study_run.run_study(schema.typed("study", config))


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
  assert rows == result.rows
  # no_knowledge adds the accuracy of each fresh-word mapping.
  assert all(set(r) == ROW_KEYS | ({"relabellings"} if r["condition"] == "no_knowledge" else set())
             for r in rows)
  got = {(r["dataset"], r["condition"]) for r in rows}
  want = {("syllogisms", c) for c in schema.STUDY_CONDITIONS}
  assert got == want
  # Every condition is scored on the same questions: the dataset's test set.
  ds = records.read_dataset(run_dir / "data" / "syllogisms")
  draws = schema.NoKnowledgeConfig().relabellings  # no_knowledge: every fresh-word mapping
  assert all(r["n"] == len(ds.tests[r["split"]]) * (draws if r["condition"] == "no_knowledge" else 1)
             for r in rows)
  # Per-condition evaluation directories, as icl-ft-eval writes them.
  for name, condition in want:
    run = condition if condition in study_plan.NO_CONTEXT_BASE else f"{condition}_s0"
    d = run_dir / "eval" / name / run
    assert {"questions.jsonl", "summary.json", "table.md", "run.json"} <= {p.name for p in d.iterdir()}
  table = (run_dir / "table.md").read_text()
  assert table == result.table
  header = [line for line in table.splitlines() if line.startswith("| dataset | split |")][0]
  assert header == ("| dataset | split | pretrained | no_knowledge | icl | ft | ft_split | "
                    "ft_aug_local | ft_aug_global | ft_aug_all | chance |")
  # The contamination check, from the same pooled rows.
  check = report.knowledge_check(result.table_rows)
  assert [(c["dataset"], c["split"]) for c in check] == [("syllogisms", "syllogism")]
  assert report.knowledge_text(check) in table
  # no_knowledge scored the same questions over fresh words.
  scored = records.read_dataset(run_dir / "eval" / "syllogisms" / "no_knowledge" / "relabelled"
                                / "syllogisms")
  assert [(q.id, q.correct) for q in scored.tests["syllogism"]] == [
      (f"{q.id}{relabel.RELABELLING_MARK}{k}", q.correct)
      for k in range(draws) for q in ds.tests["syllogism"]]
  first = scored.tests["syllogism"][:len(ds.tests["syllogism"])]
  assert [q.prompt for q in first] != [q.prompt for q in ds.tests["syllogism"]]
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
  assert ft == json.loads(json.dumps(fileio.portable_paths(result.finetuning, result.run_dir)))
  # Paths of the machine are recorded relative to the run directory (or the repository).
  assert all(f["checkpoint_dir"].startswith("$RUN_DIR/train/syllogisms/") for f in ft)
  assert info["config"]["results_dir"] == "$RUN_DIR/.."
  assert str(result.run_dir.resolve()) not in (result.run_dir / "study.json").read_text()
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
    again = study_run.run_study(schema.typed("study", config))
  redone = [s.key for s in again.stages if not s.resumed and s.kind != "report"]
  assert redone == ["eval/syllogisms/ft_s0"]
  assert again.rows == first.rows
  assert marker.is_file()
  # Training stages resumed, not retrained: their records are the first run's.
  assert [s.info for s in again.stages if s.kind == "train"] == [
      s.info for s in first.stages if s.kind == "train"]


def test_aug_all_is_exactly_what_augment_all_samples(micro):
  """ft_aug_all trains on local + global merged; augment_dataset(..., "all") gives the same."""
  from icl_ft.inference import sampling
  from icl_ft.augment import augment

  config, result = micro
  run_dir = result.run_dir
  ds = records.read_dataset(run_dir / "data" / "syllogisms")
  merged = records.read_dataset(run_dir / "data" / "syllogisms_aug_all_s0")
  parts = [records.read_dataset(run_dir / "data" / f"syllogisms_aug_{s}_s0")
           for s in ("local", "global")]
  assert merged.train == ds.train + parts[0].train[len(ds.train):] + parts[1].train[len(ds.train):]
  typed = schema.typed("study", config)
  mesh, rules = sharding.mesh_from_config(typed.mesh)
  model, tokenizer = loader.load_model(typed.model, mesh, rules)
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
  # Under the shared lock: another worker resuming the micro study holds the run directory.
  with _locked(Path(config.results_dir).parent), pytest.raises(
      ValueError, match=r"different settings \(train.steps: 3 != 4\)"):
    study_run.run_study(schema.typed("study", changed))


def _record(dataset, split, condition, subset, correct, qid):
  return {"dataset": dataset, "split": split, "subset": subset, "condition": condition,
          "id": qid, "choices": [{}, {}], "correct": [0], "predicted": 0 if correct else 1,
          "is_correct": correct, "metric": "sum"}


def test_report_arithmetic_per_seed_and_pooled(tmp_path):
  ds = records.Dataset(name="d", train=(), tests={"s": ()}, card={})
  evals = []
  # Seed 0: subset a 2/2, subset b 0/2 -> 0.5, se = sqrt(.25 / 4) = 0.25;
  #   subset_se = std([1, 0]) / sqrt(2) = 0.5.
  # Seed 1: subset a 1/2, subset b 1/2 -> 0.5, se = 0.25; subset_se = 0 (equal subsets).
  # Pooled: 4/8 = 0.5, se = sqrt(.25 / 8); subsets a 3/4, b 1/4:
  #   subset_se = sqrt(((.75-.5)^2 + (.25-.5)^2) / 1) / sqrt(2) = 0.25.
  outcomes = {0: [("a", True), ("a", True), ("b", False), ("b", False)],
              1: [("a", True), ("a", False), ("b", True), ("b", False)]}
  for seed, outs in outcomes.items():
    d = tmp_path / f"ft_s{seed}"
    d.mkdir()
    lines = [json.dumps(_record("d", "s", "ft", sub, ok, f"q{i}")) for i, (sub, ok) in enumerate(outs)]
    (d / "questions.jsonl").write_text("\n".join(lines) + "\n")
    evals.append(("d", "ft", seed, d))
  # An augment stage's marker, as _Stages writes it: its audit is the table's usability row.
  (tmp_path / "stages").mkdir()
  (tmp_path / "stages" / "augment__d__local_s0.json").write_text(json.dumps(
      {"key": "augment/d/local_s0", "kind": "augment", "seconds": 1.0,
       "info": {"audit": {"total": 6, "correct": 2, "precision": 0.5,
                          "counts": {"inference": 2, "false": 2, "unparsed": 2}}}}))
  finetuning = [{"dataset": "d", "condition": c, "seed": 0, "steps": 5, "batch_size": 8,
                 "seq_len": sl, "loss_tokens_seen": t, "epochs": e}
                for c, sl, t, e in (("ft", 256, 400, 40.0), ("ft_split", 128, 200, 19.0))]
  rows, pooled, table = study_outputs.write_report(tmp_path, ["d"], {"d": ds}, evals, finetuning,
                                           {}, figure=True)
  assert [(r["seed"], r["accuracy"], r["n"]) for r in rows] == [(0, 0.5, 4), (1, 0.5, 4)]
  assert rows[0]["se"] == pytest.approx(0.25) and rows[1]["se"] == pytest.approx(0.25)
  assert rows[0]["subset_se"] == pytest.approx(0.5) and rows[1]["subset_se"] == 0.0
  assert len(pooled) == 1 and pooled[0]["n"] == 8 and pooled[0]["accuracy"] == 0.5
  assert pooled[0]["se"] == pytest.approx(math.sqrt(0.25 / 8)) and pooled[0]["chance"] == 0.5
  assert pooled[0]["subset_se"] == pytest.approx(0.25)
  assert "| d | s | 0.500 ± 0.177 | 0.500 |" in table  # the binomial SE is the ±
  assert "| d | s | 0.500 ± 0.250 | 0.500 |" in table  # the paper's, labelled, below
  assert "| d | local | 1 | 6 | 4 | 2 |" in table  # usability: generated, parsed, true
  assert "the same documents" not in table and "seq len 128, 256" in table
  assert json.loads((tmp_path / "summary.json").read_text()) == rows
  assert (tmp_path / "figure.png").read_bytes()[:8] == PNG_MAGIC


def test_report_orders_conditions_by_the_one_order(tmp_path):
  ds = records.Dataset(name="d", train=(), tests={"s": ()}, card={})
  evals = []
  for condition in ("ft_aug_local", "ft", "icl"):  # run order differs from the table's
    d = tmp_path / condition
    d.mkdir()
    (d / "questions.jsonl").write_text(json.dumps(_record("d", "s", condition, "a", True, "q")) + "\n")
    evals.append(("d", condition, 0, d))
  _, pooled, table = study_outputs.write_report(tmp_path, ["d"], {"d": ds},
                                        evals, [], {}, figure=False)
  assert [r["condition"] for r in pooled] == ["icl", "ft", "ft_aug_local"]
  assert "| dataset | split | icl | ft | ft_aug_local | chance |" in table


def test_knowledge_check_and_its_table():
  def row(split, condition, accuracy, se):
    return {"dataset": "d", "split": split, "condition": condition, "accuracy": accuracy,
            "se": se, "n": 20, "chance": 0.25}

  rows = [row("a", "pretrained", 0.5, 0.1), row("a", "no_knowledge", 0.3, 0.05),
          row("b", "pretrained", 0.8, 0.05), row("b", "no_knowledge", 0.3, 0.05),
          row("c", "pretrained", 0.4, 0.1), row("c", "icl", 0.9, 0.1)]
  check = report.knowledge_check(rows)
  assert [(c["split"], c["within_2se"]) for c in check] == [("a", True), ("b", False)]
  # |0.5 - 0.3| = 0.2 <= 2 sqrt(0.1^2 + 0.05^2) = 0.224; |0.8 - 0.3| = 0.5 > 2 sqrt(2) 0.05
  assert check[0]["difference"] == pytest.approx(0.2)
  assert check[0]["se"] == pytest.approx(math.sqrt(0.0125))
  text = report.knowledge_text(check)
  assert "| d | a | 0.500 | 0.300 | +0.200 | 0.224 | yes |" in text
  assert "| d | b | 0.800 | 0.300 | +0.500 | 0.141 | **no** |" in text
  assert "on 1 of 2 splits." in text
  assert report.knowledge_text([]) == "" and report.knowledge_check(rows[4:]) == []
  # Over K fresh-word mappings: the spread of their accuracies, x sqrt(1 + 1/K).
  spread = [0.1, 0.3, 0.5, 0.3]  # sd 0.163, above one mapping's binomial SE (n 20: 0.102)
  nk = {**row("a", "no_knowledge", 0.3, 0.05), "n": 80, "relabellings": spread}
  [c] = report.knowledge_check([row("a", "pretrained", 0.65, 0.1), nk])
  assert c["se"] == pytest.approx(statistics.stdev(spread) * math.sqrt(1.25))
  assert c["within_2se"] is True and c["relabellings"] == 4  # 0.35 <= 2 x 0.183
  nk["relabellings"] = [0.3] * 4  # no spread: one mapping's binomial SE is the floor
  [c] = report.knowledge_check([row("a", "pretrained", 0.65, 0.1), nk])
  assert c["se"] == pytest.approx(report.standard_error(0.3, 20) * math.sqrt(1.25))
  assert c["within_2se"] is False
  assert report.context_shards_text({"x": 0}) == ""
  assert "): celebrities 3." in report.context_shards_text({"celebrities": 3, "x": 0})


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
    checks.study_plan(schema.typed("study", config))
  assert study_bin.execute(config) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ")
  assert not (tmp_path / "results").exists()


def test_ft_split_only_for_multi_sentence_documents():
  from icl_ft.datasets import registry

  reversals = registry.generate("simple_reversals", "small")
  syllogisms = registry.generate("syllogisms", "small")
  assert study_plan.applicable(schema.STUDY_CONDITIONS, syllogisms) == list(schema.STUDY_CONDITIONS)
  assert study_plan.applicable(schema.STUDY_CONDITIONS, reversals) == [
      c for c in schema.STUDY_CONDITIONS if c != "ft_split"]


def test_steps_from_epochs():
  config = _study_config("")
  stats = {"tokens_per_epoch": 1000}
  config.train.steps, config.train.epochs = 0, 10.0
  rows = config.train.batch_size * config.train.seq_len * 0.95
  assert study_ft.finetuning_steps(schema.typed("study", config).train, stats) == math.ceil(10 * 1000 / rows)
  config.train.steps = 7
  assert study_ft.finetuning_steps(schema.typed("study", config).train, stats) == 7


def test_default_and_full_configs():
  default = _study_config("")
  names, conditions, seeds = checks.study_plan(schema.typed("study", default))
  assert names == ["simple_reversals", "syllogisms", "celebrities", "semantic_structure"]
  assert conditions == list(schema.STUDY_CONDITIONS) and seeds == [0]
  assert default.scale == "small"
  full = _study_config("full")
  assert checks.study_plan(schema.typed("study", full))[1:] == (list(schema.STUDY_CONDITIONS), [0, 1, 2])
  with pytest.raises(ValueError, match="unknown study variant"):
    _study_config("huge")
  assert math.isfinite(default.train.learning_rate)
  assert default.train.keep_checkpoints


def test_gemma3_270m_config():
  config = _study_config("gemma3_270m")
  assert checks.study_plan(schema.typed("study", config))[:2] == (
      ["simple_reversals", "syllogisms", "celebrities", "semantic_structure"],
      list(schema.STUDY_CONDITIONS))
  m = config.model
  assert (m.preset, m.checkpoint, m.tokenizer, m.dtype) == (
      "gemma3_270m", "gemma3_270m", "gemma3_270m", "float32")
  assert config.train.learning_rate == 3e-4 and not config.train.keep_checkpoints
  assert config.eval.icl_subsample == 0  # auto: 1 when the documents fit the 32k window


def test_default_model_config_uses_the_loaders_assets(tmp_path, monkeypatch):
  assets = tmp_path / "tiny"
  monkeypatch.setattr(loader, "ASSETS_DIR", assets)
  fresh = study_plan.default_model_config()  # nothing installed: a fresh `tiny`, no tokenizer
  assert (fresh.preset, fresh.checkpoint, fresh.tokenizer) == ("tiny", "", "")
  (assets / "params").mkdir(parents=True)
  assert study_plan.default_model_config().preset == "tiny"  # params without a tokenizer
  (assets / "tokenizer.model").write_bytes(b"")
  cfg = study_plan.default_model_config()
  assert (cfg.preset, cfg.checkpoint, cfg.tokenizer, cfg.checkpoint_format) == (
      "tiny_default", str(assets / "params"), str(assets / "tokenizer.model"), "icl_ft")
  assert _study_config("").model.to_dict() == schema.plain(cfg)
  assert _study_config("micro").model.to_dict() == schema.plain(cfg)


def test_portable_paths(tmp_path, monkeypatch):
  """Paths under the run directory or the repository become $RUN_DIR/... and $REPO/...; others stay."""
  run = tmp_path / "results" / "r"
  obj = {"ckpt": str(run / "train" / "a" / "checkpoints"), "results_dir": str(tmp_path / "results"),
         "run": str(run), "asset": str(tmp_path / "repo" / "icl_ft" / "assets" / "x"),
         "outside": "/elsewhere/model", "name": "syllogisms", "n": 3,
         "list": [str(run / "data" / "d"), "plain text"]}
  out = fileio.portable_paths(obj, run, repo=str(tmp_path / "repo"))
  assert out == {"ckpt": "$RUN_DIR/train/a/checkpoints", "results_dir": "$RUN_DIR/..", "run": "$RUN_DIR",
                 "asset": "$REPO/icl_ft/assets/x", "outside": "/elsewhere/model", "name": "syllogisms",
                 "n": 3, "list": ["$RUN_DIR/data/d", "plain text"]}
  # A run directory given relative to the working directory.
  monkeypatch.chdir(tmp_path)
  assert fileio.portable_paths({"c": "results/r/train/x"}, Path("results/r")) == {"c": "$RUN_DIR/train/x"}
  assert fileio.portable_paths({"c": "results"}, Path("results/r")) == {"c": "results"}  # as given
  # The committed results name no path of the machine that made them.
  for committed in (Path(__file__).resolve().parents[1] / "docs" / "results").rglob("*.json"):
    assert not re.search(r'"/(tmp|work|home|Users|root)/', committed.read_text()), committed
  full = Path(__file__).resolve().parents[1] / "docs" / "results" / "full"
  assert '"checkpoint": "$REPO/icl_ft/assets/tiny/params"' in (full / "study.json").read_text()


def test_settings_are_written_portable_and_old_absolute_ones_still_resume(tmp_path):
  run = tmp_path / "results" / "r"
  settings = {"model": {"checkpoint": str(run / "ckpt")}, "steps": 3}
  fileio.check_run_dir(run, "settings.json", settings, "a study")  # absent: fine
  run.mkdir(parents=True)
  fileio.atomic_write(run / "settings.json", json.dumps(fileio.portable_paths(settings, run)))
  assert json.loads((run / "settings.json").read_text())["model"]["checkpoint"] == "$RUN_DIR/ckpt"
  fileio.check_run_dir(run, "settings.json", settings, "a study")  # the same settings resume
  fileio.atomic_write(run / "settings.json", json.dumps(settings))  # as written before: absolute
  fileio.check_run_dir(run, "settings.json", settings, "a study")
  with pytest.raises(ValueError, match="different settings"):
    fileio.check_run_dir(run, "settings.json", {**settings, "steps": 4}, "a study")


def test_keep_checkpoints_false_deletes_scored_finetuned_weights(micro, tmp_path):
  """train.keep_checkpoints=False: a finetuned run's checkpoints go once it is scored; its
  metrics, evaluation and a re-run (every stage skipped) stay."""
  config, _ = micro
  config = copy.deepcopy(config)
  config.results_dir = str(tmp_path)
  config.conditions = "ft"
  config.figure = False
  config.train.keep_checkpoints = False
  first = study_run.run_study(schema.typed("study", config))
  workdir = tmp_path / config.run / "train" / "syllogisms" / "ft_s0"
  assert (workdir / "metrics.jsonl").is_file() and not (workdir / "checkpoints").exists()
  assert [r["condition"] for r in first.rows] == ["ft"]
  again = study_run.run_study(schema.typed("study", config))
  assert all(s.resumed for s in again.stages if s.kind != "report") and again.rows == first.rows
