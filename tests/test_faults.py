"""Faults injected, clean outcomes asserted: non-finite training and scores, a checkpoint under
another preset, a locked run directory, corrupted or missing files, a full disk.

Each fault ends in one `error: ...` line and a non-zero exit, with nothing half-written that
looks complete (issue 18, items 1, 2, 3 and 5).
"""

import dataclasses
import errno
import glob
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from icl_ft import fileio
from icl_ft import sharding
from icl_ft.bin import cli
from icl_ft.bin import evaluate as eval_bin
from icl_ft.bin import study as study_bin
from icl_ft.bin import train as train_bin
from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.evaluation import evaluate
from icl_ft.model import checkpoints
from icl_ft.model import loader
from icl_ft.study import outputs as study_outputs
from icl_ft.study import run as study_run
from icl_ft.train import loop
from icl_ft.train import optimizer as optimizer_lib

import train_setup

REPO = Path(train_setup.REPO)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """simple_reversals (small) on disk and a tokenizer of the tiny presets' 1024 pieces."""
  return train_setup.setup(tmp_path_factory, "faults_data")


def _one_error_line(text: str) -> str:
  lines = [x for x in text.strip().splitlines() if x.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  return lines[0]


def _execute(execute, config, monkeypatch, **kwargs) -> tuple[int, str]:
  """A binary's `execute` in-process: (exit status, its single stderr line)."""
  err = io.StringIO()
  with monkeypatch.context() as m:
    m.setattr(sys, "stderr", err)
    rc = execute(config, **kwargs)
  return rc, err.getvalue()


def _eval_config(results: Path, data_dir: str, tok: str, condition: str = "pretrained",
                 **overrides):
  config = train_setup.config_file("eval").get_config(condition)
  config.run = "run"
  config.results_dir = str(results)
  config.datasets = data_dir
  config.model.tokenizer = tok
  config.scoring.batch_size = 8
  config.progress = False
  return train_setup.apply_overrides(config, overrides)


def _model_config(preset: str, checkpoint: str = ""):
  return schema.ModelConfig(preset=preset, checkpoint=checkpoint)


def _save_model(directory: Path, preset: str = "tiny", poison: bool = False) -> Path:
  """A fresh model of `preset` as a params-only checkpoint; `poison`: one NaN parameter."""
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  model, _ = loader.load_model(_model_config(preset), mesh, rules)
  if poison:
    scale = model.final_norm.scale
    scale.set_value(scale.get_value().at[0].set(np.nan))
  checkpoints.save_params(directory, model)
  return directory


# ---------------------------------------------------------------------------
# 1. Non-finite training is never checkpointed as good; eval refuses non-finite scores
# ---------------------------------------------------------------------------


def test_nan_learning_rate_update_is_not_saved_and_last_good_is_finite(tmp_path, data,
                                                                        monkeypatch):
  """A NaN update at a checkpoint step: its loss is finite (computed before the update), its
  parameters are not. The run stops without saving them and names a finite checkpoint."""
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, steps=8,
                                    checkpoint__every=2)
  real = optimizer_lib.make_optimizer

  def nan_at_step_6(cfg, total_steps):
    tx, schedule = real(cfg, total_steps)
    return tx, lambda t: float("nan") if int(t) == 5 else schedule(t)  # update 6 uses t=5

  monkeypatch.setattr(optimizer_lib, "make_optimizer", nan_at_step_6)
  rc, err = _execute(train_bin.execute, config, monkeypatch, devices=jax.devices()[:1])
  line = _one_error_line(err)
  assert rc == 1
  assert line.startswith("error: non-finite parameters after step 6"), line
  assert "last good checkpoint: step 4" in line
  ckpt_dir = tmp_path / "run" / "checkpoints"
  assert checkpoints.checkpoint_steps(ckpt_dir) == [2, 4]
  good = checkpoints.read_params(ckpt_dir, step=4)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(good))
  assert checkpoints.nonfinite_leaves(good) == []


def test_nan_learning_rate_in_the_config_is_refused(tmp_path, data, monkeypatch):
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok,
                                    optimizer__learning_rate=float("nan"))
  rc, err = _execute(train_bin.execute, config, monkeypatch)
  assert rc == 1 and "learning_rate must be > 0 and finite, got nan" in _one_error_line(err)
  assert not (tmp_path / "run").exists()


def test_a_checkpoint_with_nonfinite_params_is_refused_on_restore(tmp_path, data, monkeypatch):
  """An older poisoned checkpoint (NaN parameters) is never evaluated or resumed from."""
  data_dir, tok = data
  ckpt = _save_model(tmp_path / "poisoned", poison=True)
  assert checkpoints.nonfinite_leaves(checkpoints.read_params(ckpt)) == ["final_norm/scale"]
  config = _eval_config(tmp_path / "results", data_dir, tok, "ft", model__checkpoint=str(ckpt))
  rc, err = _execute(eval_bin.execute, config, monkeypatch)
  line = _one_error_line(err)
  assert rc == 1 and "has non-finite parameters" in line and "'final_norm/scale'" in line
  assert not (tmp_path / "results").exists()


def test_eval_refuses_nonfinite_scores_and_leaves_no_results(tmp_path, data, monkeypatch):
  from icl_ft.inference import scoring

  data_dir, tok = data
  real_score = scoring.ContextScorer.score

  def score_with_a_nan(self, questions):
    scores = real_score(self, questions)
    first = scores[0]
    bad = dataclasses.replace(first.choices[0], logprob=float("nan"),
                              mean_logprob=float("nan"))
    return [dataclasses.replace(first, choices=(bad, *first.choices[1:])), *scores[1:]]

  monkeypatch.setattr(scoring.ContextScorer, "score", score_with_a_nan)
  config = _eval_config(tmp_path / "results", data_dir, tok)
  rc, err = _execute(eval_bin.execute, config, monkeypatch)
  line = _one_error_line(err)
  assert rc == 1 and "non-finite log-probability nan for question" in line
  run_dir = tmp_path / "results" / "run"
  assert not (run_dir / evaluate.SUMMARY_FILE).exists()
  assert not (run_dir / evaluate.TABLE_FILE).exists()
  questions = run_dir / evaluate.QUESTIONS_FILE
  assert not questions.exists() or questions.read_text() == ""  # nothing scored is recorded


# ---------------------------------------------------------------------------
# 2. A checkpoint loaded under another preset than it was written with
# ---------------------------------------------------------------------------


def test_checkpoint_of_another_preset_is_refused_on_every_route(tmp_path, data, monkeypatch):
  data_dir, tok = data
  ckpt = _save_model(tmp_path / "tiny_default", preset="tiny_default")
  assert checkpoints.checkpoint_preset(ckpt) == "tiny_default"
  want = (f"checkpoint {ckpt} was written with model preset 'tiny_default', not 'tiny': "
          "set config.model.preset=tiny_default")
  # The loader (every binary and the study load through it).
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  with pytest.raises(checkpoints.CheckpointError) as e:
    loader.load_model(_model_config("tiny", str(ckpt)), mesh, rules)
  assert str(e.value) == want
  # icl-ft-eval: one line, nothing written.
  config = _eval_config(tmp_path / "results", data_dir, tok, "ft", model__checkpoint=str(ckpt))
  rc, err = _execute(eval_bin.execute, config, monkeypatch)
  assert rc == 1 and _one_error_line(err) == f"error: {want}"
  assert not (tmp_path / "results").exists()
  # icl-ft-train initialized from the checkpoint.
  tc = train_setup.train_config(str(tmp_path / "train"), data_dir, tok, steps=2,
                                model__checkpoint=str(ckpt))
  rc, err = _execute(train_bin.execute, tc, monkeypatch, devices=jax.devices()[:1])
  assert rc == 1 and _one_error_line(err) == f"error: {want}"
  assert not (tmp_path / "train").exists()
  # Under its own preset (or an alias of it) it loads.
  model, _ = loader.load_model(_model_config("tiny_default", str(ckpt)), mesh, rules)
  assert model.config.name == "tiny_default"
  tiny = _save_model(tmp_path / "tiny", preset="tiny")
  assert checkpoints.checkpoint_preset(tiny) == "tiny_gemma3"
  checkpoints.check_preset(tiny, "tiny")  # "tiny" is an alias of tiny_gemma3


def test_preset_of_exported_and_training_checkpoints(tmp_path, data, monkeypatch):
  # The committed default model records its preset in config.json beside params/.
  with pytest.raises(checkpoints.CheckpointError, match="preset 'tiny_default', not 'tiny'"):
    checkpoints.check_preset(loader.default_asset("params"), "tiny")
  checkpoints.check_preset(loader.default_asset("params"), "tiny_default")
  # A training checkpoint names the preset it trained; resuming under another is refused
  # before anything is read or written.
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, steps=2,
                                    checkpoint__every=2)
  loop.train(schema.typed("train", config), devices=jax.devices()[:1])
  step_dir = tmp_path / "run" / "checkpoints" / "2"
  assert checkpoints.checkpoint_preset(step_dir) == "tiny_gemma3"
  before = sorted(p.name for p in (tmp_path / "run").iterdir())
  other = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, steps=4,
                                   checkpoint__every=2, model__preset="tiny_default")
  rc, err = _execute(train_bin.execute, other, monkeypatch, devices=jax.devices()[:1])
  assert rc == 1  # same shapes, other attention pattern, window and maximum length
  assert "written with model preset 'tiny_gemma3', not 'tiny_default'" in _one_error_line(err)
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
  assert checkpoints.checkpoint_steps(tmp_path / "run" / "checkpoints") == [2]


# ---------------------------------------------------------------------------
# 3. The run-directory lock
# ---------------------------------------------------------------------------


_HOLDER = ("import sys, time\n"
           "from icl_ft import fileio\n"
           "lock = fileio.run_dir_lock(sys.argv[1], 'study')\n"
           "lock.__enter__()\n"
           "print('locked', flush=True)\n"
           "time.sleep(600)\n")


def _hold_lock(run_dir: Path) -> subprocess.Popen:
  """Another process holding `run_dir`'s lock (as a running study does)."""
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], cwd=REPO,
                          env=train_setup.env(1), stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_a_locked_run_directory_refuses_a_second_process_at_once(tmp_path, data, monkeypatch):
  results = tmp_path / "results"
  run_dir = results / "micro"
  holder = _hold_lock(run_dir)
  try:
    cmd = [sys.executable, "-m", "icl_ft.bin.study", "--config=configs/study.py:micro",
           f"--config.results_dir={results}", "--config.progress=false"]
    t0 = time.perf_counter()
    second = subprocess.run(cmd, cwd=REPO, env=train_setup.env(1), capture_output=True,
                            text=True, timeout=300)
    seconds = time.perf_counter() - t0
    assert second.returncode == 1, second.stderr[-2000:]
    line = _one_error_line(second.stderr)
    assert line == (f"error: {run_dir} is in use by another study (it holds .lock); wait for it "
                    f"to finish or use another directory")
    assert sorted(os.listdir(run_dir)) == [fileio.LOCK_FILE]  # nothing read or written
    print(f"second study refused in {seconds:.1f} s (process start included)")
    # icl-ft-eval and icl-ft-train on a locked run directory / workdir: the same.
    data_dir, tok = data
    config = _eval_config(results, data_dir, tok, run="micro")
    rc, err = _execute(eval_bin.execute, config, monkeypatch)
    assert rc == 1 and "is in use by another evaluation run" in _one_error_line(err)
    tc = train_setup.train_config(str(run_dir), data_dir, tok, steps=2)
    rc, err = _execute(train_bin.execute, tc, monkeypatch)
    assert rc == 1 and "is in use by another training run" in _one_error_line(err)
    assert sorted(os.listdir(run_dir)) == [fileio.LOCK_FILE]
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # A killed holder releases the lock with its process (a stale lock file is no obstacle).
  assert (run_dir / fileio.LOCK_FILE).exists()
  with fileio.run_dir_lock(run_dir, "study"):
    with pytest.raises(fileio.RunDirLockedError):
      with fileio.run_dir_lock(run_dir, "study"):
        pass
  assert os.listdir(run_dir) == []  # the lock file goes with its holder's block
  (run_dir / fileio.LOCK_FILE).write_text("a killed holder's\n")
  fileio.check_run_dir(run_dir, "settings.json", {}, "a study")  # a stale lock file is no run


def test_rerun_keeps_no_duplicated_question_records(tmp_path, data):
  """What two unlocked runs left (every question twice) is repaired by a rerun."""
  data_dir, tok = data
  config = _eval_config(tmp_path / "results", data_dir, tok)
  first = evaluate.evaluate(schema.typed("eval", config))
  questions = first.run_dir / evaluate.QUESTIONS_FILE
  lines = questions.read_text().splitlines(keepends=True)
  questions.write_text("".join(lines + lines))
  (first.run_dir / evaluate.SUMMARY_FILE).unlink()
  # The study's reader counts each question once even before the rerun.
  recs = study_outputs.collect_records([("simple_reversals", "pretrained", 0, first.run_dir)])
  assert len(recs) == len(lines)
  again = evaluate.evaluate(schema.typed("eval", config))
  assert again.scored == 0 and again.skipped == len(lines)
  assert questions.read_text().splitlines(keepends=True) == lines
  assert again.rows == first.rows and [r["n"] for r in again.rows] == [len(lines)]


# ---------------------------------------------------------------------------
# 5. Corrupted or missing inputs, a full disk: one line, non-zero exit, nothing half-written
# ---------------------------------------------------------------------------


def test_corrupted_orbax_chunk(tmp_path, data, monkeypatch):
  data_dir, tok = data
  ckpt = _save_model(tmp_path / "ckpt")
  chunks = glob.glob(str(ckpt / "params" / "ocdbt.process_0" / "d" / "*"))
  biggest = max(chunks, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)
  config = _eval_config(tmp_path / "results", data_dir, tok, "ft", model__checkpoint=str(ckpt))
  rc, err = _execute(eval_bin.execute, config, monkeypatch)
  line = _one_error_line(err)
  assert rc == 1
  assert line.startswith(f"error: checkpoint {ckpt} cannot be read (truncated or corrupted "
                         "files?): ")
  assert not (tmp_path / "results").exists()


def test_truncated_array_record_file(tmp_path, data, monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  from icl_ft.datasets import tfds_builders

  data_dir, tok = data
  builder = tfds_builders.build_from_directory(data_dir, data_dir=tmp_path / "tfds")
  train_file = builder.data_path / "icl_ft-train.array_record-00000-of-00001"
  with open(train_file, "r+b") as f:
    f.truncate(os.path.getsize(train_file) // 2)
  config = train_setup.train_config(str(tmp_path / "run"), str(builder.data_path), tok)
  rc, err = _execute(train_bin.execute, config, monkeypatch, devices=jax.devices()[:1])
  line = _one_error_line(err)
  assert rc == 1
  assert line.startswith(f"error: {builder.data_path}: cannot read the TFDS dataset "
                         "(a truncated or corrupted array_record file?): ")
  assert not (tmp_path / "run").exists()


class _DiskFull:
  """A text file whose writes fail with ENOSPC after `budget` characters (the part that fit
  is written, as on a real full disk)."""

  def __init__(self, f, budget: int):
    self._f, self._budget = f, budget

  def write(self, text: str) -> int:
    if len(text) > self._budget:
      self._f.write(text[:self._budget])
      self._f.flush()
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    self._budget -= len(text)
    return self._f.write(text)

  def __getattr__(self, name):
    return getattr(self._f, name)


def test_disk_full_mid_study_then_a_rerun_completes(tmp_path, tmp_path_factory, monkeypatch):
  """ENOSPC while the finetuned model's scores are written: one line, no summary or stage
  marker claims the unfinished evaluation; the rerun scores each question exactly once."""
  config = train_setup.apply_overrides(
      train_setup.config_file("study").get_config("micro"),
      {"results_dir": str(tmp_path / "results"), "conditions": "pretrained,ft",
       "progress": False, "figure": False,
       "compilation_cache_dir": str(tmp_path_factory.getbasetemp() / "jax_compilation_cache")})
  opened = []

  def open_on_a_full_disk(path, mode="r", *args, **kwargs):
    f = open(path, mode, *args, **kwargs)  # pylint: disable=unspecified-encoding
    if "ft_s0" in str(path) and mode == "a":
      opened.append(path)
      return _DiskFull(f, budget=100)
    return f

  with monkeypatch.context() as m:
    m.setattr(evaluate, "open", open_on_a_full_disk, raising=False)
    rc, err = _execute(study_bin.execute, config, monkeypatch)
  line = _one_error_line(err)
  assert rc == 1 and line == "error: [Errno 28] No space left on device" and opened
  run_dir = tmp_path / "results" / "micro"
  eval_dir = run_dir / "eval" / "syllogisms" / "ft_s0"
  assert not (run_dir / study_outputs.SUMMARY_FILE).exists() and not (run_dir / study_outputs.TABLE_FILE).exists()
  assert not (eval_dir / evaluate.SUMMARY_FILE).exists()
  markers = sorted(p.name for p in (run_dir / "stages").iterdir())
  assert markers == ["data__syllogisms.json", "eval__syllogisms__pretrained.json",
                     "train__syllogisms__ft_s0.json"]
  assert (eval_dir / evaluate.QUESTIONS_FILE).read_text()[-1] != "\n"  # a cut-off record
  rc, err = _execute(study_bin.execute, config, monkeypatch)
  assert rc == 0, err
  n = len(records.read_dataset(run_dir / "data" / "syllogisms").tests["syllogism"])
  recs = [json.loads(x) for x in (eval_dir / evaluate.QUESTIONS_FILE).read_text().splitlines()]
  assert len(recs) == len({r["id"] for r in recs}) == n
  rows = json.loads((run_dir / study_outputs.SUMMARY_FILE).read_text())
  assert {(r["condition"], r["n"]) for r in rows} == {("pretrained", n), ("ft", n)}
  # What two unlocked studies once left (every question of an evaluation twice, the stage
  # marked done) is repaired by a rerun: that evaluation is resumed, the rest skipped.
  pretrained = run_dir / "eval" / "syllogisms" / "pretrained" / evaluate.QUESTIONS_FILE
  lines = pretrained.read_text().splitlines(keepends=True)
  pretrained.write_text("".join(lines + lines))
  result = study_run.run_study(schema.typed("study", config))
  assert [s.key for s in result.stages if not s.resumed] == ["eval/syllogisms/pretrained",
                                                             "report"]
  assert pretrained.read_text().splitlines(keepends=True) == lines
  summary = json.loads((pretrained.parent / evaluate.SUMMARY_FILE).read_text())
  assert [r["n"] for r in summary] == [n] and [r["n"] for r in result.table_rows] == [n, n]


_FILE_SIZE_LIMITED = ("import resource, runpy, signal, sys\n"
                      "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                      "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
                      "sys.argv = ['icl-ft-train'] + sys.argv[1:]\n"
                      "runpy.run_module('icl_ft.bin.train', run_name='__main__')\n")


def test_checkpoint_write_failing_in_orbax_is_one_line(tmp_path, data):
  """The storage fills up under orbax's background writes (here: files capped at 1 MiB, as a
  full disk fails them): orbax logs the error from several threads and raises it; the binary
  prints it once, and no checkpoint step looks complete."""
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, steps=2,
                                    checkpoint__every=2)
  env = {k: v for k, v in train_setup.env(1).items() if not k.startswith("JAX_PERSISTENT")
         and k != "JAX_COMPILATION_CACHE_DIR"}  # no cache entries hit the cap
  out = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMITED,
                        f"--config={train_setup.TRAIN_CONFIG}:tiny",
                        *train_setup.flags_for(config)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  line = _one_error_line(out.stderr)
  assert "Error writing" in line and "File too large" in line, line
  assert checkpoints.checkpoint_steps(tmp_path / "run" / "checkpoints") == []


def _binary(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=train_setup.env(1),
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv,message", [
    (["icl_ft.bin.study", "--config=configs/study.py:huge"],
     "error: configs/study.py:huge: unknown study variant 'huge'; valid: default, full, micro, gemma3_270m"),
    (["icl_ft.bin.study", "--config=configs/nope.py", "--config.run=x"],
     "error: config file configs/nope.py not found (--config=configs/nope.py)"),
    (["icl_ft.bin.train", "--config", "configs/missing.py:tiny"],
     "error: config file configs/missing.py not found (--config=configs/missing.py:tiny)"),
])
def test_bad_variant_or_missing_config_file(argv, message):
  out = _binary(*argv)
  assert out.returncode == 2
  assert _one_error_line(out.stderr) == message


def test_an_unhandled_exception_is_one_line(capsys, monkeypatch):
  def execute(config):
    raise RuntimeError(f"library failure\n  in {config}\n")

  assert cli.run_execute(execute, "a config") == 1
  assert _one_error_line(capsys.readouterr().err) == (
      "error: RuntimeError: library failure in a config")
  monkeypatch.setenv(cli.TRACEBACK_ENV, "1")  # developers: the full traceback
  with pytest.raises(RuntimeError):
    cli.run_execute(execute, "a config")


def test_orbax_logged_copies_of_a_raised_error_are_dropped():
  import logging

  keep = cli._DropOrbaxTracebacks()  # pylint: disable=protected-access
  try:
    raise ValueError("RESOURCE_EXHAUSTED: No space left on device")
  except ValueError:
    exc_info = sys.exc_info()
  orbax_file = os.path.join(os.sep, "site-packages", "orbax", "checkpoint", "future.py")

  def record(pathname, level=logging.ERROR, info=exc_info):
    return logging.LogRecord("absl", level, pathname, 1, "failed", (), info)

  assert not keep.filter(record(orbax_file))
  assert keep.filter(record(orbax_file, info=None))  # an orbax error without traceback
  assert keep.filter(record(orbax_file, level=logging.WARNING, info=None))
  assert keep.filter(record(os.path.join(os.sep, "icl_ft", "study.py")))
