"""icl-ft-eval end to end on a tiny model: outputs, resume, conditions, and bad input."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import train_setup

from icl_ft import sharding
from icl_ft.bin import evaluate as eval_bin
from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.datasets import simple_reversals
from icl_ft.datasets import syllogisms
from icl_ft.datasets import words
from icl_ft.evaluation import contexts
from icl_ft.evaluation import evaluate
from icl_ft.evaluation import report

REPO = Path(__file__).resolve().parents[1]
RECORD_KEYS = {"dataset", "split", "subset", "condition", "id", "choices", "metric", "predicted",
               "correct", "is_correct"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Two small datasets on disk and a tokenizer with the tiny preset's 1024 pieces."""
  from icl_ft.model import config as model_config
  from icl_ft.model.tokenizer import train_sentencepiece

  # The session's persistent XLA compilation cache (also used by the binary below).
  train_setup.enable_compilation_cache(str(tmp_path_factory.getbasetemp() / "jax_compilation_cache"))
  env = train_setup.env()
  root = tmp_path_factory.mktemp("eval")
  rev = simple_reversals.generate(
      dataclasses.replace(simple_reversals.SCALES["small"], num_facts=6, articles_per_fact=2))
  syl = syllogisms.generate(dataclasses.replace(syllogisms.SCALES["small"], num_examples=4))
  dirs = [str(records.write_dataset(ds, root / "data" / ds.name)) for ds in (rev, syl)]
  texts = [d.text for ds in (rev, syl) for d in ds.train]
  texts += [q.prompt + c for ds in (rev, syl) for qs in ds.tests.values() for q in qs
            for c in q.choices]
  texts += list(words.pool("pretraining"))
  vocab = model_config.get_preset("tiny").vocab_size
  tok = train_sentencepiece(texts, vocab, root / "tok.model")
  assert tok.vocab_size == vocab
  return {"root": root, "dirs": dirs, "tok": str(root / "tok.model"), "env": env,
          "counts": {ds.name: {s: len(qs) for s, qs in ds.tests.items()} for ds in (rev, syl)}}


def _config(setup, condition="icl", run=None, **overrides):
  config = train_setup.config_file("eval").get_config(condition)
  config.run = run or condition
  config.results_dir = str(setup["root"] / "results")
  config.datasets = ",".join(setup["dirs"])
  config.model.tokenizer = setup["tok"]
  config.scoring.batch_size = 8
  config.progress = False
  return train_setup.apply_overrides(config, overrides)


def _lines(path):
  return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def icl_run(setup):
  return evaluate.evaluate(schema.typed("eval", _config(setup, "icl")))


def test_icl_run_writes_all_three_outputs(setup, icl_run):
  run_dir = icl_run.run_dir
  total = sum(n for by_split in setup["counts"].values() for n in by_split.values())
  assert icl_run.scored == total and icl_run.skipped == 0
  recs = _lines(run_dir / "questions.jsonl")
  assert len(recs) == total
  assert all(set(r) == RECORD_KEYS for r in recs)
  assert all(r["condition"] == "icl" and r["is_correct"] == (r["predicted"] in r["correct"])
             for r in recs)
  assert {(r["dataset"], r["split"]) for r in recs} == {("simple_reversals", "reversal"),
                                                      ("syllogisms", "syllogism")}
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary == report.summarize(recs) == icl_run.rows
  assert [(r["dataset"], r["split"], r["n"]) for r in summary] == [
      ("simple_reversals", "reversal", 6), ("syllogisms", "syllogism", 4)]
  table = (run_dir / "table.md").read_text()
  assert "condition `icl`" in table and "| syllogisms | syllogism | icl |" in table
  settings = json.loads((run_dir / "run.json").read_text())
  assert settings["icl"] == {"subsample": 1, "seed": 0, "shards": True}
  assert icl_run.stats["context_shards"] == {"simple_reversals": 0, "syllogisms": 0}


def test_rerun_skips_everything_and_resume_after_a_kill(setup, icl_run):
  again = evaluate.evaluate(schema.typed("eval", _config(setup, "icl")))
  assert again.scored == 0 and again.skipped == icl_run.scored
  assert again.rows == icl_run.rows
  # A run killed mid-write: 3 complete lines and a cut-off fourth.
  killed = icl_run.run_dir.parent / "killed"
  killed.mkdir()
  shutil.copy(icl_run.run_dir / "run.json", killed / "run.json")
  full = (icl_run.run_dir / "questions.jsonl").read_text().splitlines(keepends=True)
  (killed / "questions.jsonl").write_text("".join(full[:3]) + full[3][:25])
  resumed = evaluate.evaluate(schema.typed("eval", _config(setup, "icl", run="killed")))
  assert resumed.skipped == 3 and resumed.scored == len(full) - 3
  got = {(r["dataset"], r["id"]): r for r in _lines(killed / "questions.jsonl")}
  want = {(r["dataset"], r["id"]): r for r in _lines(icl_run.run_dir / "questions.jsonl")}
  assert got.keys() == want.keys()
  for key, r in want.items():
    assert got[key]["predicted"] == r["predicted"]
    for a, b in zip(got[key]["choices"], r["choices"]):
      assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
  assert json.loads((killed / "summary.json").read_text()) == icl_run.rows


def test_different_settings_for_an_existing_run(setup, icl_run):
  config = _config(setup, "icl", icl__subsample=2)
  with pytest.raises(ValueError, match=r"different settings \(icl.subsample: 1 != 2\)"):
    evaluate.evaluate(schema.typed("eval", config))
  config.overwrite = True
  config.run = "icl_sub2"
  result = evaluate.evaluate(schema.typed("eval", config))
  assert json.loads((result.run_dir / "run.json").read_text())["icl"]["subsample"] == 2


def test_finetuned_checkpoint_condition(setup):
  from icl_ft.model import checkpoints
  from icl_ft.model import loader

  pre = evaluate.evaluate(schema.typed("eval", _config(setup, "pretrained", splits="reversal")))
  config = schema.typed("eval", _config(setup, "pretrained"))
  mesh, rules = sharding.mesh_from_config(config.mesh)
  model, _ = loader.load_model(config.model, mesh, rules)  # fresh init, seed 0
  ckpt = setup["root"] / "ckpt"
  checkpoints.save_params(ckpt, model)
  ft = evaluate.evaluate(schema.typed("eval", _config(setup, "ft", splits="reversal", model__checkpoint=str(ckpt))))
  assert [r["condition"] for r in ft.rows] == ["ft"]
  a = _lines(pre.run_dir / "questions.jsonl")
  b = _lines(ft.run_dir / "questions.jsonl")
  assert [r["id"] for r in a] == [r["id"] for r in b]
  for x, y in zip(a, b):
    assert x["predicted"] == y["predicted"]
    assert [c["logprob"] for c in x["choices"]] == pytest.approx(
        [c["logprob"] for c in y["choices"]], abs=1e-5)
  # pretrained and icl differ only by the documents in context
  assert {r["dataset"] for r in a} == {"simple_reversals"}


def test_icl_that_fits_scores_the_same_with_and_without_shards(setup, icl_run):
  plain = evaluate.evaluate(schema.typed("eval", _config(setup, "icl", run="icl_no_shards", icl__shards=False)))
  a = _lines(icl_run.run_dir / "questions.jsonl")
  b = _lines(plain.run_dir / "questions.jsonl")
  assert a == b  # identical records: no shard field, the same scores


def test_icl_shards_when_the_documents_do_not_fit(setup, monkeypatch):
  """A context budget below the whole set: each question scored against its shard's context."""
  from icl_ft.evaluation import prompts
  from icl_ft.inference import prefill
  from icl_ft.inference import scoring
  from icl_ft.model import loader
  from icl_ft.model.tokenizer import Tokenizer

  tok = Tokenizer(setup["tok"])
  rev = records.read_dataset(setup["dirs"][0])
  full = len(prefill.encode_context(tok, prompts.context_text(rev.train)))
  longest = max(len(r.suffix) for r in scoring.encode_questions(tok, rev.tests["reversal"]))
  max_len = full // 2 + longest  # about half the documents fit
  real = evaluate._model_max_len  # pylint: disable=protected-access
  monkeypatch.setattr(evaluate, "_model_max_len", lambda cfg: (real(cfg)[0], max_len))
  result = evaluate.evaluate(schema.typed("eval", _config(setup, "icl", run="icl_shards", splits="reversal")))
  shards = result.stats["context_shards"]["simple_reversals"]
  assert shards >= 2
  recs = _lines(result.run_dir / "questions.jsonl")
  assert len(recs) == setup["counts"]["simple_reversals"]["reversal"]
  assert {r["context_shard"] for r in recs} == set(range(shards))
  assert f"simple_reversals: {shards} ICL context shards" in (result.run_dir / "table.md").read_text()
  # Re-score every question against its shard's context: the same log-probs.
  plans, _ = contexts.plan_contexts("simple_reversals", rev, "icl", tok, prompts.PromptFormat(),
                                    1, 0, max_len, True)
  config = schema.typed("eval", _config(setup, "icl"))
  mesh, rules = sharding.mesh_from_config(config.mesh)
  model, _ = loader.load_model(config.model, mesh, rules)
  by_id = {q.id: q for q in rev.tests["reversal"]}
  for index, plan in enumerate(plans):
    assert len(plan.context_ids) + longest <= max_len
    mine = [r for r in recs if r["context_shard"] == index]
    assert {("reversal", r["id"]) for r in mine} == plan.questions
    scores = scoring.ContextScorer(model, tok, context_ids=plan.context_ids, batch_size=8,
                                   max_suffix_len=longest, max_len=max_len
                                   ).score([by_id[r["id"]] for r in mine])
    for r, s in zip(mine, scores):
      assert [c["logprob"] for c in r["choices"]] == pytest.approx(
          [c.logprob for c in s.choices], abs=1e-4)


def test_no_knowledge_scores_the_same_questions_over_fresh_words(setup):
  from icl_ft.datasets import relabel

  pre = evaluate.evaluate(schema.typed("eval", _config(setup, "pretrained", run="pre_for_nk")))
  nk = evaluate.evaluate(schema.typed("eval", _config(setup, "no_knowledge",
                                                      no_knowledge__relabellings=3)))
  a = _lines(pre.run_dir / "questions.jsonl")
  b = _lines(nk.run_dir / "questions.jsonl")
  # Every mapping scores every question: ids carry the mapping's index.
  key = lambda r, i: (r["dataset"], r["split"], r["subset"], i, r["correct"], len(r["choices"]))
  assert sorted(key(r, r["id"]) for r in b) == sorted(
      key(r, f"{r['id']}{relabel.RELABELLING_MARK}{k}") for k in range(3) for r in a)
  assert {r["condition"] for r in b} == {"no_knowledge"} and all(set(r) == RECORD_KEYS for r in b)
  assert [r["condition"] for r in nk.rows] == ["no_knowledge", "no_knowledge"]
  for row in nk.rows:  # the accuracy of each mapping, whose mean is the pooled accuracy
    assert len(row["relabellings"]) == 3 and row["n"] % 3 == 0
    assert sum(row["relabellings"]) / 3 == pytest.approx(row["accuracy"])
  assert json.loads((nk.run_dir / "run.json").read_text())["no_knowledge"] == {
      "seed": 0, "relabellings": 3}
  assert "fresh ones (3 mappings from seed 0)" in (nk.run_dir / "table.md").read_text()
  pools = relabel.nonsense_words()
  for d in setup["dirs"]:
    original = records.read_dataset(d)
    scored = records.read_dataset(nk.run_dir / evaluate.RELABELLED_DIR / original.name)
    assert scored == relabel.relabel_many(original, 3, seed=0)
    first = [q for qs in scored.tests.values() for q in qs
             if relabel.relabelling_index(q.id) == 0]
    for q, r in zip([q for qs in original.tests.values() for q in qs], first):
      assert q.prompt != r.prompt and (q.correct, len(q.choices)) == (r.correct, len(r.choices))
    for r in (q for qs in scored.tests.values() for q in qs):
      tokens = {w.lower() for t in (r.prompt, *r.choices) for w in re.findall("[A-Za-z]+", t)}
      assert not (tokens | {w[:-1] for w in tokens if w.endswith("s")}) & pools


def _bad(setup, capsys, **kw):
  condition = kw.pop("condition", "icl")
  config = _config(setup, condition, run="bad", **kw)
  rc = eval_bin.execute(config)
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 1
  assert len(err) == 1 and err[0].startswith("error: "), err
  assert not (setup["root"] / "results" / "bad").exists()
  return err[0]


def test_bad_input_is_one_line_and_writes_nothing(setup, capsys, tmp_path):
  from icl_ft.model.tokenizer import train_sentencepiece

  assert "unknown condition 'finetuned'" in _bad(setup, capsys, condition="finetuned")
  assert "set config.model.checkpoint" in _bad(setup, capsys, condition="ft")  # none given
  assert "checkpoint not found: /no/such/ckpt" in _bad(setup, capsys, condition="ft",
                                                       model__checkpoint="/no/such/ckpt")
  assert "unknown split(s) ['nope']" in _bad(setup, capsys, splits="reversal,nope")
  assert "config.scoring.metric 'max' is not one of 'sum', 'mean'" in _bad(setup, capsys, scoring__metric="max")
  assert "dataset directory not found" in _bad(setup, capsys, datasets=str(tmp_path / "none"))
  # tokenizer / model vocabulary mismatch
  train_sentencepiece([d.text for d in simple_reversals.generate(
      simple_reversals.SCALES["small"]).train], 300, tmp_path / "small.model")
  assert "has 300 pieces but the model's vocab_size is 1024" in _bad(
      setup, capsys, model__tokenizer=str(tmp_path / "small.model"))
  # a dataset file with a malformed line
  broken = tmp_path / "broken"
  shutil.copytree(setup["dirs"][0], broken)
  lines = (broken / "test_reversal.jsonl").read_text().splitlines(keepends=True)
  lines[2] = '{"id": "x", "split": "reversal"\n'
  (broken / "test_reversal.jsonl").write_text("".join(lines))
  msg = _bad(setup, capsys, datasets=str(broken))
  assert f"{broken / 'test_reversal.jsonl'}:3: malformed Question record" in msg


def test_context_longer_than_the_model_says_which_subsample_fits(setup, capsys, tmp_path):
  big = records.write_dataset(simple_reversals.generate(simple_reversals.SCALES["paper"]),
                              tmp_path / "big")
  msg = _bad(setup, capsys, datasets=str(big), icl__shards=False)
  assert "over the model's max_seq_len 4096" in msg
  assert "subsample factor" in msg and "--config.icl.subsample=" in msg
  k = int(msg.split("--config.icl.subsample=")[1].split(")")[0])
  assert k > 1
  # The suggested factor passes the budget check (scoring itself is not needed here).
  from icl_ft.evaluation import prompts
  from icl_ft.model.tokenizer import Tokenizer
  tok = Tokenizer(setup["tok"])
  ds = records.read_dataset(big)
  contexts.check_budget("simple_reversals", ds, "icl", tok, prompts.PromptFormat(), k, 0, 4096)


def test_binary_end_to_end(setup):
  out = setup["root"] / "bin_results"
  cmd = [sys.executable, "-m", "icl_ft.bin.evaluate", "--config=configs/eval.py:pretrained",
         "--config.run=bin", f"--config.results_dir={out}", f"--config.datasets={setup['dirs'][0]}",
         f"--config.model.tokenizer={setup['tok']}", "--config.scoring.batch_size=8",
         "--config.progress=false"]
  env = setup["env"]
  ok = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert ok.returncode == 0, ok.stderr[-2000:]
  for name in ("questions.jsonl", "summary.json", "table.md"):
    assert (out / "bin" / name).is_file()
  assert "| simple_reversals | reversal | pretrained |" in ok.stdout
  bad = subprocess.run(cmd[:-1] + ["--config.splits=nope", "--config.run=bin_bad"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown split(s) ['nope']")
  assert not (out / "bin_bad").exists()


def test_default_checkpoint_by_name(setup, capsys):
  """`model.checkpoint=default` (the committed model, as the loader documents) scores; with
  another preset of the same shapes it is a one-line error, not silently wrong weights."""
  over = dict(splits="reversal", model__checkpoint="default", model__tokenizer="default")
  err = _bad(setup, capsys, condition="pretrained", **over)
  assert "checkpoint 'default' needs model preset 'tiny_default', not 'tiny'" in err
  result = evaluate.evaluate(schema.typed("eval", _config(setup, "pretrained", run="default_ckpt",
                                     model__preset="tiny_default", **over)))
  assert result.scored == setup["counts"]["simple_reversals"]["reversal"]
  run = json.loads((result.run_dir / evaluate.RUN_FILE).read_text())
  assert run["model"]["checkpoint"] == "default" and "weights" not in run
