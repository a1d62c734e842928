"""icl_ft.train: optimizer, metrics files, the loop (learning, sharding, NaN), bad input."""

import dataclasses
import io
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from icl_ft import sharding
from icl_ft.config import schema
from icl_ft.model import builder
from icl_ft.model import checkpoints
from icl_ft.model import layers
from icl_ft.train import checkpoints as train_checkpoints
from icl_ft.train import loop
from icl_ft.train import metrics as metrics_lib
from icl_ft.train import optimizer as optimizer_lib
from icl_ft.train import step as step_lib

import train_setup


# ---------------------------------------------------------------------------
# Optimizer and metrics (no model)
# ---------------------------------------------------------------------------


def _opt_cfg(**kw):
  return dataclasses.replace(schema.OptimizerConfig(), **kw)


def test_argmax_first_maximum_and_accuracy_count():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 4, size=(64, 33)).astype(np.float32)  # many ties
  x[3] = -np.inf
  x[5, 7] = np.inf
  assert np.array_equal(np.asarray(layers.argmax(x)), np.argmax(x, axis=-1))
  tokens = rng.integers(0, 33, size=(4, 16)).astype(np.int32)
  mask = (rng.random((4, 16)) < 0.7).astype(np.int32)
  logits = x[:64].reshape(4, 16, 33)
  logits[0, 3] = 0.0  # a row of ties only
  sums = step_lib.masked_cross_entropy(logits, tokens, mask)
  targets = np.concatenate([tokens[:, 1:], np.zeros_like(tokens[:, :1])], axis=1)
  target_logit = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  # A hit: the target's logit is the maximum, ties included (not only the first maximum).
  want = np.sum((target_logit == logits.max(-1)) * mask)
  assert want > np.sum((np.argmax(logits, -1) == targets) * mask)  # ties do occur here
  assert float(sums["correct"]) == want and float(sums["count"]) == mask.sum()


def test_masked_cross_entropy_matches_optax_with_its_gradient():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(3.0 * rng.normal(size=(3, 7, 50)), jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 50, size=(3, 7)), jnp.int32)
  mask = jnp.asarray(rng.random((3, 7)) < 0.6, jnp.int32)
  targets = np.concatenate([np.asarray(tokens)[:, 1:], np.zeros((3, 1), np.int32)], axis=1)

  def reference(z):
    ce = optax.softmax_cross_entropy_with_integer_labels(z, jnp.asarray(targets))
    return jnp.sum(ce * mask)

  ours = lambda z: step_lib.masked_cross_entropy(z, tokens, mask)["loss_sum"]
  np.testing.assert_allclose(ours(logits), reference(logits), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits), atol=1e-6)


def test_schedules():
  s = optimizer_lib.make_schedule(_opt_cfg(learning_rate=1.0, warmup_steps=10, schedule="cosine"),
                                  total_steps=110)
  assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(60)) == pytest.approx(0.5, abs=1e-6)  # half way down the cosine
  assert float(s(110)) == pytest.approx(0.0, abs=1e-6)
  c = optimizer_lib.make_schedule(_opt_cfg(learning_rate=0.1, warmup_steps=0, schedule="constant"),
                                  total_steps=5)
  assert [float(c(i)) for i in (0, 4, 100)] == pytest.approx([0.1] * 3)
  lin = optimizer_lib.make_schedule(_opt_cfg(learning_rate=1.0, warmup_steps=0, schedule="linear",
                                             final_lr_fraction=0.5), total_steps=10)
  assert float(lin(10)) == pytest.approx(0.5)


def test_optimizer_clips_and_rejects_bad_config():
  tx = optimizer_lib.full_optimizer(_opt_cfg(learning_rate=1.0, warmup_steps=0,
                                             schedule="constant", clip_norm=1.0), 10)
  params = {"w": np.zeros(4, np.float32)}
  state = tx.init(params)
  updates, _ = tx.update({"w": np.full(4, 100.0, np.float32)}, state, params)
  assert np.all(np.isfinite(updates["w"]))
  # Equal to optax.adamw with the schedule (the train step applies the learning rate).
  cfg = _opt_cfg(learning_rate=0.1, warmup_steps=2, schedule="cosine", weight_decay=0.01)
  tx, schedule = optimizer_lib.make_optimizer(cfg, 10)
  full = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01))
  p1 = p2 = {"w": np.linspace(-1, 1, 4).astype(np.float32)}
  s1, s2 = tx.init(p1), full.init(p2)
  for t in range(5):
    g = {"w": np.cos(np.arange(4) + t).astype(np.float32) * 3}
    u1, s1 = tx.update(g, s1, p1)
    p1 = optax.apply_updates(p1, jax.tree.map(lambda u: -schedule(t) * u, u1))
    u2, s2 = full.update(g, s2, p2)
    p2 = optax.apply_updates(p2, u2)
  np.testing.assert_allclose(p1["w"], p2["w"], rtol=1e-6)
  for bad, match in [({"schedule": "step"}, "unknown optimizer.schedule 'step'"),
                     ({"learning_rate": 0.0}, "learning_rate must be > 0"),
                     ({"name": "sgd"}, "unknown optimizer.name 'sgd'")]:
    with pytest.raises(ValueError, match=match):
      optimizer_lib.make_optimizer(_opt_cfg(**bad), 10)


def test_metrics_jsonl_and_tensorboard_events(tmp_path):
  w = metrics_lib.MetricsWriter(tmp_path)
  w.write(1, {"loss": 2.5, "batch_hash": "ab", "example_ids": [1, 2]})
  w.write(2, {"loss": float("nan"), "lr": 0.1})
  w.truncate_after(1)
  w.write(2, {"loss": 1.25})
  w.close()
  recs = metrics_lib.read_jsonl(tmp_path / "metrics.jsonl")
  assert recs == [{"step": 1, "loss": 2.5, "batch_hash": "ab", "example_ids": [1, 2]},
                  {"step": 2, "loss": 1.25}]
  scalars = train_setup.read_scalars(tmp_path / "tensorboard")
  # NaN is not written to TensorBoard; lr is; strings and lists are JSONL only.
  assert scalars == [(1, {"loss": 2.5}), (2, {"lr": pytest.approx(0.1)}), (2, {"loss": 1.25})]


def test_metrics_writer_disabled_writes_nothing(tmp_path):
  w = metrics_lib.MetricsWriter(tmp_path / "w", enabled=False)
  w.write(1, {"loss": 1.0})
  w.truncate_after(0)
  w.close()
  assert not os.path.exists(tmp_path / "w")


# ---------------------------------------------------------------------------
# The loop on a tiny Transformer
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return train_setup.setup(tmp_path_factory, "train_data")


def _one():
  return jax.devices()[:1]


def _params(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_sharded_training_matches_single_device(tmp_path, data):
  data_dir, tok = data
  results = {}
  for name, sizes, devices in [("one", (1, 1, 1), jax.devices()[:1]),
                               ("mesh", (2, 2, 2), None)]:
    config = train_setup.train_config(str(tmp_path / name), data_dir, tok, steps=3,
                                      checkpoint__every=0)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = sizes
    results[name] = loop.train(schema.typed("train", config), devices=devices)
  one, mesh = results["one"], results["mesh"]
  assert mesh.compiles == 1 and one.compiles == 1  # one executable, no retrace
  assert [r["batch_hash"] for r in one.records] == [r["batch_hash"] for r in mesh.records]
  np.testing.assert_allclose([r["loss"] for r in one.records], [r["loss"] for r in mesh.records],
                             rtol=1e-5)
  assert _max_diff(_params(one.model), _params(mesh.model)) < 1e-5
  spec = [x.sharding.spec for x in jax.tree.leaves(_params(mesh.model))]
  assert any("fsdp" in str(s) for s in spec) and any("tensor" in str(s) for s in spec)


def _forward_questions(data_dir):
  """One forward-direction question per trained fact: the prompt of its first article, the
  trained comparison vs the contradictory one ("femp are" + " more/less dangerous than glon.")."""
  from icl_ft.datasets import records
  from icl_ft.datasets import simple_reversals

  antonym = {}
  for a, b, _ in simple_reversals.FEATURES:
    antonym[a], antonym[b] = b, a
  seen, out = set(), []
  for doc in records.read_dataset(data_dir, splits=()).train:
    fact = doc.fact_ids[0]
    if fact in seen:
      continue
    seen.add(fact)
    stated = [f for f in (doc.metadata["feature"], antonym[doc.metadata["feature"]])
              if f" are {f} than " in doc.text]
    assert len(stated) == 1, doc.text
    head, tail = doc.text.split(f" are {stated[0]} than ")
    out.append(records.Question(
        id=f"forward_{fact}", split="forward", subset="all", prompt=head + " are",
        choices=(f" {stated[0]} than {tail}", f" {antonym[stated[0]]} than {tail}"),
        correct=(0,), fact_ids=(fact,)))
  return out


@pytest.mark.slow
def test_finetuning_learns_simple_reversal_facts(tmp_path, data):
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, steps=30,
                                    checkpoint__every=0, optimizer__warmup_steps=5,
                                    optimizer__learning_rate=3e-3, log__batch_ids=False)
  result = loop.train(schema.typed("train", config), devices=_one())
  losses = [r["loss"] for r in result.records]
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
  questions = _forward_questions(data_dir)
  assert len(questions) == 20
  from icl_ft.inference import scoring

  scores = scoring.score_questions_naive(result.model, result.tokenizer, questions, None,
                                         batch_size=len(questions) * 2)
  right = sum(s.is_correct for s in scores)
  assert right / len(questions) > 0.95, f"{right}/{len(questions)} forward facts learned"
  # JSONL + TensorBoard logs of the run.
  recs = metrics_lib.read_jsonl(tmp_path / "run" / "metrics.jsonl")
  assert [r["step"] for r in recs] == list(range(1, 31))
  tags = {t for _, s in train_setup.read_scalars(tmp_path / "run" / "tensorboard") for t in s}
  assert {"loss", "grad_norm", "learning_rate", "tokens_per_s"} <= tags


def test_eval_hook_and_final_checkpoint(tmp_path, data):
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, steps=4,
                                    checkpoint__every=3, eval__dataset_dir=data_dir,
                                    eval__every=2, eval__num_batches=2)
  result = loop.train(schema.typed("train", config), devices=_one())
  evals = [r for r in result.records if "eval_loss" in r]
  assert [r["step"] for r in evals] == [2, 4]
  assert all(np.isfinite(r["eval_loss"]) and r["eval_tokens"] > 0 for r in evals)
  assert checkpoints.checkpoint_steps(result.checkpoint_dir) == [3, 4]
  # The evaluation binary's path: params of a training run into a fresh abstract model.
  cfg = train_setup.tiny_model_config()
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  from icl_ft.model.transformer import Transformer

  target = sharding.create_for_restore(lambda: Transformer(cfg, rngs=nnx.Rngs(params=1)), mesh)
  checkpoints.restore_params(result.checkpoint_dir, target)
  assert _max_diff(_params(target), _params(result.model)) == 0.0
  # Re-running a finished run trains nothing and returns the checkpointed state.
  again = loop.train(schema.typed("train", config), devices=_one())
  assert again.start_step == 4 and again.records == [] and again.compiles == 0
  assert _max_diff(_params(again.model), _params(result.model)) == 0.0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data, monkeypatch):
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, steps=8,
                                    checkpoint__every=2)
  real_fetch = loop._fetch  # pylint: disable=protected-access
  calls = []

  def fetch(metrics):
    out = real_fetch(metrics)
    calls.append(1)
    if len(calls) == 6:  # step 6's metrics (a checkpoint step)
      out["loss"] = float("nan")
    return out

  monkeypatch.setattr(loop, "_fetch", fetch)
  from icl_ft.bin import train as train_bin

  err = io.StringIO()
  monkeypatch.setattr(sys, "stderr", err)
  assert train_bin.execute(config, devices=_one()) == 1
  line = err.getvalue().strip()
  assert line.startswith("error: non-finite loss nan at step 6") and "step 4" in line
  assert "\n" not in line
  assert checkpoints.checkpoint_steps(tmp_path / "run" / "checkpoints") == [2, 4]
  assert [r["step"] for r in metrics_lib.read_jsonl(tmp_path / "run" / "metrics.jsonl")] == \
      [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing overwritten
# ---------------------------------------------------------------------------


def _snapshot(directory):
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      p = os.path.join(root, f)
      with open(p, "rb") as fh:
        out[os.path.relpath(p, directory)] = fh.read()
  return out


def _execute(config, monkeypatch, devices=None) -> tuple[int, str]:
  from icl_ft.bin import train as train_bin

  err = io.StringIO()
  monkeypatch.setattr(sys, "stderr", err)
  rc = train_bin.execute(config, devices=devices)
  monkeypatch.undo()
  return rc, err.getvalue()


def test_bad_format_via_binary(tmp_path, data):
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, data__format="nope")
  proc = train_setup.run_binary(config, timeout=120)
  assert proc.returncode == 1, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert lines == ["error: unknown training format 'nope'; known formats: document, "
                   "split_independent, split_cumulative"]
  assert not os.path.exists(tmp_path / "run")


def test_batch_not_divisible_by_data_parallel_size(tmp_path, data, monkeypatch):
  data_dir, tok = data
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, data__batch_size=6)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 4, 2, 1
  rc, err = _execute(config, monkeypatch)
  assert rc == 1
  assert err.strip() == ("error: config.data.batch_size=6 is not divisible by the data-parallel "
                         "size 8 (mesh data=4 x fsdp=2)")
  assert not os.path.exists(tmp_path / "run")


def test_empty_dataset(tmp_path, data, monkeypatch):
  from icl_ft.datasets import records

  _, tok = data
  empty = records.Dataset(name="empty", train=(), tests={}, card={"name": "empty"})
  try:
    records.write_dataset(empty, tmp_path / "empty")
  except ValueError:
    pytest.skip("records refuses to write an empty dataset")
  config = train_setup.train_config(str(tmp_path / "run"), str(tmp_path / "empty"), tok)
  rc, err = _execute(config, monkeypatch, _one())
  assert rc == 1 and err.count("\n") == 1 and err.startswith("error: ")
  assert "no training documents" in err
  assert not os.path.exists(tmp_path / "run")


def test_checkpoint_of_a_different_model_shape(tmp_path, data, monkeypatch):
  data_dir, tok = data
  # A training checkpoint of a model with a different embedding width in the same workdir.
  cfg = train_setup.tiny_model_config()
  other = dataclasses.replace(cfg, embed_dim=cfg.embed_dim * 2)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=_one())
  _, abstract, _ = builder.abstract(other, mesh)
  params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                        nnx.to_pure_dict(checkpoints.param_state(abstract)))
  with train_checkpoints.TrainCheckpointManager(tmp_path / "run" / "checkpoints", every=1) as mngr:
    mngr.save(2, params, optax.sgd(0.1).init(params), None)
  before = _snapshot(tmp_path / "run")
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok)
  rc, err = _execute(config, monkeypatch, _one())
  assert rc == 1 and err.count("\n") == 1
  assert err.startswith("error: checkpoint ") and "is of a different model: parameter" in err
  assert _snapshot(tmp_path / "run") == before


def test_existing_checkpoints_without_resume(tmp_path, data, monkeypatch):
  data_dir, tok = data
  params = {"w": np.zeros(3, np.float32)}
  with train_checkpoints.TrainCheckpointManager(tmp_path / "run" / "checkpoints", every=1) as mngr:
    mngr.save(2, params, optax.sgd(0.1).init(params), None)
  before = _snapshot(tmp_path / "run")
  config = train_setup.train_config(str(tmp_path / "run"), data_dir, tok, checkpoint__resume=False)
  rc, err = _execute(config, monkeypatch, _one())
  assert rc == 1 and "already has steps [2]" in err and err.count("\n") == 1
  assert _snapshot(tmp_path / "run") == before


def test_resume_with_another_schedule_warns(tmp_path, data, monkeypatch):
  """A resumed run whose lr or steps differ from the checkpoint's says so in one line."""
  data_dir, tok = data
  run = str(tmp_path / "run")
  first = train_setup.train_config(run, data_dir, tok, steps=2)
  rc, err = _execute(first, monkeypatch, _one())
  assert rc == 0 and "warning" not in err
  changed = train_setup.train_config(run, data_dir, tok, steps=4, optimizer__learning_rate=1e-3)
  rc, err = _execute(changed, monkeypatch, _one())
  warnings = [l for l in err.splitlines() if l.startswith("warning:")]
  assert rc == 0 and len(warnings) == 1, err
  assert "at step 2" in warnings[0]
  assert "optimizer.learning_rate 0.003 -> 0.001" in warnings[0] and "steps 2 -> 4" in warnings[0]
  # The same settings again (resumes at step 4): nothing to say.
  rc, err = _execute(changed, monkeypatch, _one())
  assert rc == 0 and "warning" not in err
  assert train_checkpoints.changed_schedule({}, changed) is None  # checkpoints from before these settings
