"""The pretraining corpus (disjoint from every evaluation dataset), its recipe, the default model."""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import re

import pytest
import train_setup

from icl_ft.augment import audit
from icl_ft.augment import templates
from icl_ft.datasets import celebrities
from icl_ft.datasets import registry
from icl_ft.datasets import text as text_lib
from icl_ft.datasets import words
from icl_ft.evaluation import plots
from icl_ft.evaluation import prompts
from icl_ft.pretrain import corpus as corpus_lib

EVAL_NAMESPACES = ("simple_reversals", "syllogisms", "celebrities", "semantic_structure")
PARAMS = corpus_lib.Params(num_episodes=120)


@pytest.fixture(scope="module")
def corpus():
  return corpus_lib.generate(PARAMS, seed=0)


@pytest.fixture(scope="module")
def corpus_text(corpus):
  return "\n\n".join(d.text for d in corpus.train)


def _word_tokens(text: str) -> set[str]:
  return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def test_no_evaluation_pool_word_in_corpus(corpus_text):
  tokens = _word_tokens(corpus_text)
  # Plurals ("Peangs") and possessives are the pool word plus "s"; no pool word ends in "s".
  stems = tokens | {w[:-1] for w in tokens if w.endswith("s")}
  pretraining_words = set(words.pool("pretraining"))
  assert len(tokens & pretraining_words) > 200  # the corpus does use its own pool
  for ns in EVAL_NAMESPACES:
    assert not stems & set(words.pool(ns)), ns


@pytest.mark.parametrize("scale", ["small", "paper"])
def test_no_evaluation_fact_in_corpus(corpus_text, scale):
  normalized = f" {text_lib.normalize(corpus_text)} "
  for name in EVAL_NAMESPACES:
    ds = registry.generate(name, scale=scale, seed=0)
    for doc in ds.train:
      assert f" {text_lib.normalize(doc.text)} " not in normalized, (name, doc.id)
    for qs in ds.tests.values():
      for q in qs:
        for c in q.correct:
          st = text_lib.normalize(q.prompt + q.choices[c])
          assert f" {st} " not in normalized, (name, q.id)
    if name == "celebrities":
      people = [p for group in ds.card["people"].values() for p in group]
      for p in people:
        assert p["name"].lower() not in corpus_text.lower()
        assert p["description"] not in corpus_text


def test_people_names_disjoint_from_celebrities():
  ours = corpus_lib.make_people(300, seed=3)
  theirs = {p.name for s in (0, 1) for p in celebrities.make_people(celebrities.MAX_PEOPLE, s)}
  theirs_desc = {p.description for p in celebrities.make_people(celebrities.MAX_PEOPLE, 0)}
  pool = set(words.pool("pretraining"))
  assert not {p.name for p in ours} & theirs
  assert not {p.description for p in ours} & theirs_desc
  assert all(part.lower() in pool for p in ours for part in p.name.split())


def test_generators_restored_after_episode():
  syl = registry.module("syllogisms")
  before = (celebrities.make_people, syl.words)
  corpus_lib.episode_dataset("celebrities", 5, random.Random(0))
  corpus_lib.episode_dataset("syllogisms", 5, random.Random(0))
  assert (celebrities.make_people, syl.words) == before
  assert syl.words.pool("syllogisms") != words.pool("pretraining")


def test_deterministic_and_parallel_equal(corpus):
  small = dataclasses.replace(PARAMS, num_episodes=24)
  a = corpus_lib.generate(small, seed=0)
  assert [d.text for d in a.train] == [d.text for d in corpus.train[:24]]
  b = corpus_lib.generate(small, seed=0, workers=2)
  assert [d.text for d in b.train] == [d.text for d in a.train]
  c = corpus_lib.generate(small, seed=1)
  assert [d.text for d in c.train] != [d.text for d in a.train]


def test_card_records_the_mix(corpus):
  card = corpus.card
  mix = collections.Counter(f"{d.metadata['family']}/{d.metadata['kind']}" for d in corpus.train)
  assert card["episodes"] == dict(mix)
  assert sum(card["episodes"].values()) == len(corpus.train) == PARAMS.num_episodes
  assert {k.split("/")[0] for k in mix} == set(corpus_lib.FAMILIES)
  assert {k.split("/")[1] for k in mix} == set(corpus_lib.KINDS)
  assert card["characters"] == sum(len(d.text) for d in corpus.train)
  splits = {k.split("/", 1)[1] for k in card["icl_questions"]}
  assert {"reversal", "forward", "syllogism", "rephrase", "category_holdout"} <= splits
  assert len({d.id for d in corpus.train}) == len(corpus.train)


def test_episode_formats(corpus):
  by_kind = collections.defaultdict(list)
  for d in corpus.train:
    by_kind[d.metadata["kind"]].append(d.text)
  for t in by_kind["icl"]:
    block, _, questions = t.partition(prompts.ICL_INSTRUCTION + prompts.DOCUMENT_SEPARATOR)
    assert questions and block.endswith(prompts.DOCUMENT_SEPARATOR)
  for t in by_kind["local"]:
    assert t.startswith(templates.LOCAL_INSTRUCTION) and t.endswith("\n\n")
    assert t.count(templates.STATEMENT_LABEL) == len(templates.LOCAL_EXAMPLES) + 1
  for t in by_kind["global"]:
    assert templates.GLOBAL_INSTRUCTION in t and f"\n{templates.INFERENCES_LABEL}\n- " in t
    assert templates.parse_statements(t.rsplit(f"{templates.INFERENCES_LABEL}\n- ", 1)[1])


def test_audit_reads_every_statement_the_corpus_teaches():
  """What local and global episodes teach the model to write, the audit reads as true."""
  rng = random.Random(0)
  for family in corpus_lib.FAMILIES:
    for seed in range(2):
      dataset = corpus_lib.episode_dataset(family, seed, rng)
      taught = [r for doc in dataset.train for i in range(len(doc.sentences))
                for r in corpus_lib._sentence_restatements(dataset, doc, i, rng)]
      taught += [corpus_lib.statement(q, q.correct[0]) for q in corpus_lib._questions(dataset)]
      assert taught, family
      auditor = audit.Auditor(dataset)
      wrong = {st: label for st in taught if not audit.is_correct(label := auditor.label(st))}
      assert not wrong, (family, wrong)


def test_icl_answers_follow_from_documents():
  rng = random.Random(0)
  dataset = corpus_lib.episode_dataset("simple_reversals", 11, rng)
  text, answered = corpus_lib.icl_episode(dataset, PARAMS, rng)
  context, _, qa = text.partition(prompts.ICL_INSTRUCTION)
  assert answered["reversal"] == len(qa.strip().split("\n\n"))
  for line in qa.strip().split("\n\n"):
    q = next(q for q in dataset.tests["reversal"] if line.startswith(q.prompt + " "))
    assert line == q.prompt + q.choices[q.correct[0]]
    fact = next(d for d in dataset.train if d.fact_ids == q.fact_ids)
    assert fact.text in context


def test_heldout_episodes_use_new_seeds():
  eps = corpus_lib.heldout_episodes("celebrities", 2)
  assert len(eps) == 2
  for docs, questions in eps:
    facts = {f for d in docs for f in d.fact_ids}
    assert questions and all(set(q.fact_ids) <= facts for q in questions)
  with pytest.raises(ValueError, match="unknown family 'nope'"):
    corpus_lib.heldout_episodes("nope", 1)


@pytest.mark.parametrize("family", corpus_lib.FAMILIES)
def test_heldout_episodes_as_long_as_the_study(family):
  """context_chars pads each episode with other episodes' documents that share no pool word."""
  short = corpus_lib.heldout_episodes(family, 2)
  long = corpus_lib.heldout_episodes(family, 2, context_chars=4000)
  assert long == corpus_lib.heldout_episodes(family, 2, context_chars=4000)  # deterministic
  pool = frozenset(words.pool(corpus_lib.POOL))

  def pool_words(text):
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w in pool}

  for (docs, questions), (padded, same) in zip(short, long):
    assert same == questions
    size = len(prompts.context_text(padded))
    assert 3000 <= size <= 4000 + 100, size
    assert [d for d in padded if d in docs] == docs  # the episode's own, in order
    asked = set().union(*(pool_words(q.prompt + " " + " ".join(q.choices)) for q in questions))
    for d in padded:
      if d not in docs:
        assert not pool_words(d.text) & asked


def test_corpus_mix_from_the_config():
  from icl_ft.config import schema
  from icl_ft.pretrain import recipe

  config = train_setup.config_file("pretrain_tiny").get_config("long")
  assert recipe.corpus_params(schema.typed("pretrain", config)).family_weights == (
      corpus_lib.Params().family_weights)  # "" keeps the generator's mix
  config.corpus.family_weights = "celebrities:0.5, semantic_structure:0.5"
  config.corpus.kind_weights = "icl:1"
  params = recipe.corpus_params(schema.typed("pretrain", config))
  assert params.family_weights == (("celebrities", 0.5), ("semantic_structure", 0.5))
  assert params.kind_weights == (("icl", 1.0),)
  small = dataclasses.replace(params, num_episodes=8, max_chars=1300)
  kinds = corpus_lib.generate(small, seed=0).card["episodes"]
  assert {k.split("/")[0] for k in kinds} <= {"celebrities", "semantic_structure"}
  assert {k.split("/")[1] for k in kinds} == {"icl"}


def test_bad_params():
  with pytest.raises(ValueError, match="family_weights: unknown entry 'x'"):
    corpus_lib.generate(dataclasses.replace(PARAMS, family_weights=(("x", 1.0),)))
  with pytest.raises(ValueError, match="num_episodes=0"):
    corpus_lib.generate(dataclasses.replace(PARAMS, num_episodes=0))
  with pytest.raises(ValueError, match="dataset_scale=0"):
    corpus_lib.generate(dataclasses.replace(PARAMS, dataset_scale=0))


def test_dataset_scale_makes_long_episodes():
  """With `dataset_scale` and a larger `max_chars`, episodes grow to the study's context length."""
  def mean_chars(params):
    docs = corpus_lib.generate(dataclasses.replace(params, num_episodes=60), seed=1).train
    return sum(len(d.text) for d in docs) / len(docs)

  short = mean_chars(corpus_lib.Params())
  long = mean_chars(corpus_lib.Params(max_chars=6000, dataset_scale=4.0))
  assert long > max(2.5 * short, 3500)


def test_recipe_runs_with_falling_loss(tmp_path):
  from icl_ft.config import schema
  from icl_ft.pretrain import recipe

  config = train_setup.config_file("pretrain_tiny").get_config("test")
  config.workdir = str(tmp_path / "work")
  config.export_dir = str(tmp_path / "assets")
  config.train.checkpoint.every = config.train.steps // 2  # for the held-out curve below
  import jax

  card = recipe.pretrain(schema.typed("pretrain", config), devices=jax.devices()[:1])
  losses = [json.loads(l)["loss"] for l in open(tmp_path / "work" / "train" / "metrics.jsonl")
            if '"loss"' in l]
  assert len(losses) == config.train.steps
  assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
  assert card["steps"] == config.train.steps
  assert card["tokens_seen"] == config.train.steps * 4 * 512
  assert set(card["heldout_in_context"]) >= {"simple_reversals/reversal", "celebrities/reversal"}
  for name in ("tokenizer.model", "params", "config.json", "card.json"):
    assert (tmp_path / "assets" / name).exists()
  cfg = json.loads((tmp_path / "assets" / "config.json").read_text())
  assert cfg["preset"] == "tiny_default"

  # The held-out curve scores each checkpoint as the card scored the final model.
  from icl_ft.pretrain import curve

  work = tmp_path / "work"
  rows = curve.score_checkpoints(work, episodes=config.eval.episodes, seed=config.seed,
                                 tokens_before=1000, label="test")
  steps = [config.train.steps // 2, config.train.steps]
  assert curve.checkpoint_steps(work) == steps
  assert [r["step"] for r in rows] == steps
  assert [r["tokens"] for r in rows] == [1000 + s * 4 * 512 for s in steps]
  assert rows[-1]["accuracy"] == card["heldout_in_context"]
  assert curve.score_checkpoints(work, episodes=config.eval.episodes, seed=config.seed) == []
  assert curve.read_rows(work) == rows
  # One family scored alone: its own rows, the numbers of the full scoring.
  only = curve.score_checkpoints(work, episodes=config.eval.episodes, seed=config.seed,
                                 families=["syllogisms"])
  assert [r["families"] for r in only] == [["syllogisms"]] * 2
  assert only[-1]["accuracy"] == {k: v for k, v in card["heldout_in_context"].items()
                                  if k.startswith("syllogisms/")}
  with pytest.raises(ValueError, match="unknown famil"):
    curve.score_checkpoints(work, families=["syllogism"])
  figure = plots.curve_figure(curve.figure_rows(rows), tmp_path / "curve.png", xlabel="tokens")
  assert figure.stat().st_size > 10_000

  # A second stage continues the exported model: its tokenizer, its weights, its card.
  stage2 = train_setup.config_file("pretrain_tiny").get_config("test")
  stage2.workdir = str(tmp_path / "stage2")
  stage2.corpus.num_episodes = 20
  stage2.train.steps = 2
  stage2.eval.episodes = 1
  stage2.note = "second stage"
  stage2.train.model.checkpoint = str(tmp_path / "assets" / "params")
  card2 = recipe.pretrain(schema.typed("pretrain", stage2), devices=jax.devices()[:1])
  assert ((tmp_path / "stage2" / "tokenizer.model").read_bytes()
          == (tmp_path / "assets" / "tokenizer.model").read_bytes())
  assert card2["continued_from"]["card"] == json.loads((tmp_path / "assets" / "card.json").read_text())
  assert card2["tokens_seen"] == 2 * 4 * 512
  assert card2["tokens_seen_total"] == card2["tokens_seen"] + card["tokens_seen"]
  assert card2["note"] == "second stage" and "note" not in card
  first_loss = json.loads(open(tmp_path / "stage2" / "train" / "metrics.jsonl").readline())["loss"]
  assert first_loss < sum(losses[:3]) / 3 - 0.5  # it starts from the trained weights

  # Continuing weights without their tokenizer beside them is refused before any work.
  (tmp_path / "bare").mkdir()
  stage2.workdir = str(tmp_path / "stage3")
  stage2.train.model.checkpoint = str(tmp_path / "bare" / "params")
  with pytest.raises(FileNotFoundError, match="keeps its model's tokenizer"):
    recipe.pretrain(schema.typed("pretrain", stage2), devices=jax.devices()[:1])
  assert not (tmp_path / "stage3").exists()


class _Stop(Exception):
  """Stands in for a kill in the middle of training."""


@pytest.mark.slow
@pytest.mark.resume
def test_interrupted_pretraining_resumes_exactly(tmp_path, monkeypatch):
  """Stopped after step 7 (checkpoints every 3 steps) and rerun on its workdir: the same run."""
  import jax
  import numpy as np

  from icl_ft.model import checkpoints
  from icl_ft.config import schema
  from icl_ft.pretrain import recipe
  from icl_ft.train import metrics as metrics_lib
  from icl_ft.train import step as step_lib

  def config(workdir):
    c = train_setup.config_file("pretrain_tiny").get_config("test")
    c.workdir = str(workdir)
    c.train.checkpoint.every = 3
    c.eval.episodes = 1
    return schema.typed("pretrain", c)

  devices = jax.devices()[:1]
  full = recipe.pretrain(config(tmp_path / "full"), devices=devices)

  calls = []
  real = step_lib.TrainStep._train_call  # pylint: disable=protected-access

  def stop_at_step_8(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 8:  # steps 1-7 trained, 7 not checkpointed
      raise _Stop
    return real(self, *args, **kwargs)

  with monkeypatch.context() as m:
    m.setattr(step_lib.TrainStep, "_train_call", stop_at_step_8)
    with pytest.raises(_Stop):
      recipe.pretrain(config(tmp_path / "stopped"), devices=devices)
  stopped = tmp_path / "stopped"
  assert max(checkpoints.checkpoint_steps(stopped / "train" / "checkpoints")) == 6
  assert not (stopped / "card.json").exists()
  resumed = recipe.pretrain(config(stopped), devices=devices)

  assert resumed["resumed_from_step"] == 6 and full["resumed_from_step"] == 0
  for key in ("steps", "tokens_seen", "final_loss", "last_losses", "heldout_in_context",
              "corpus", "corpus_fitting_seq_len"):
    assert resumed[key] == full[key], key
  for name in ("tokenizer.model", "corpus/train.jsonl", "data/train.jsonl"):
    assert (stopped / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
  steps = full["steps"]
  a = checkpoints.read_params(tmp_path / "full" / "train" / "checkpoints", steps)
  b = checkpoints.read_params(stopped / "train" / "checkpoints", steps)
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) > 0 and all(np.array_equal(x, y) for x, y in zip(la, lb))
  ra = metrics_lib.read_jsonl(tmp_path / "full" / "train" / "metrics.jsonl")
  rb = metrics_lib.read_jsonl(stopped / "train" / "metrics.jsonl")
  assert [r["step"] for r in rb] == list(range(1, steps + 1))
  assert [(r["step"], r["batch_hash"], r["loss"]) for r in ra] == [
      (r["step"], r["batch_hash"], r["loss"]) for r in rb]


def test_committed_default_model_loads_and_reproduces_its_card():
  """The committed assets load through the normal loader and score as their card says."""
  import jax

  from icl_ft.config import schema
  from icl_ft.pretrain import recipe
  from icl_ft import sharding
  from icl_ft.model import loader

  cfg = schema.ModelConfig(preset="tiny_default", checkpoint="default", tokenizer="default")
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  model, tokenizer = loader.load_model(cfg, mesh)
  card = json.loads((loader.ASSETS_DIR / "card.json").read_text())
  assert card["model"] == "tiny_default" and model.config.name == "tiny_default"
  assert card["tokens_seen"] == card["steps"] * card["batch_size"] * card["seq_len"]
  # The card chain (`continued_from`, oldest last) follows configs/pretrain_tiny.py's stages in
  # order: the plain config, `long`, then the `CURRICULUM` stages; each stage's corpus as its
  # config says, and each card's total counts the tokens of every stage before it.
  chain = [card]
  while "continued_from" in chain[-1]:
    chain.append(chain[-1]["continued_from"]["card"])
  chain.reverse()
  config_file = train_setup.config_file("pretrain_tiny")
  variants = ["", "long", *config_file.CURRICULUM]
  assert 2 <= len(chain) <= len(variants)
  stages = [schema.typed("pretrain", config_file.get_config(arg))
            for arg in variants[:len(chain)]]
  for stage_card, stage in zip(chain, stages):
    recorded = stage_card["corpus"]["params"]
    now = json.loads(json.dumps(dataclasses.asdict(recipe.corpus_params(stage))))
    # Fields added to the corpus Params after a card was written keep their defaults.
    defaults = dataclasses.asdict(corpus_lib.Params())
    assert {k: v for k, v in now.items() if k in recorded} == recorded
    assert all(now[k] == defaults[k] for k in now if k not in recorded)
    assert stage_card["steps"] == stage.train.steps
    assert stage_card["seq_len"] == stage.train.data.seq_len
  for before, after in zip(chain, chain[1:]):
    assert after["tokens_seen_total"] == after["tokens_seen"] + before.get(
        "tokens_seen_total", before["tokens_seen"])
  pretrain_config = stages[-1]
  assert card["heldout_episodes_per_family"] == pretrain_config.eval.episodes
  assert card["heldout_context_chars"] == pretrain_config.eval.context_chars
  params = corpus_lib.Params(**{k: tuple(map(tuple, v)) if isinstance(v, list) else v
                                for k, v in card["heldout_episode_params"].items()})
  assert params == recipe.HELDOUT_PARAMS
  # The family whose in-context accuracy is furthest above chance, re-scored from the weights.
  heldout = card["heldout_in_context"]
  best = max(heldout, key=lambda k: (heldout[k]["accuracy"] - heldout[k]["chance"]) / max(heldout[k]["se"], 1e-3))
  family = best.split("/")[0]
  result = recipe.evaluate_in_context(model, tokenizer, pretrain_config.eval.episodes,
                                        seed=card["heldout_seed"], params=params,
                                        families=(family,), batch_size=pretrain_config.eval.batch_size,
                                        context_chars=card["heldout_context_chars"])
  assert set(result) == {k for k in heldout if k.startswith(family + "/")}
  for key, row in result.items():  # float sums on another CPU may flip a near tie
    assert row["n"] == heldout[key]["n"]
    assert abs(row["accuracy"] - heldout[key]["accuracy"]) <= 1 / row["n"] + 1e-9, key
    subsets = row.get("subsets", {})  # the breakdown adds up to the whole
    if subsets:
      assert sum(s["n"] for s in subsets.values()) == row["n"]
      correct = sum(round(s["accuracy"] * s["n"]) for s in subsets.values())
      assert abs(correct / row["n"] - row["accuracy"]) < 1e-3, key
  # It learned in context: that split is well above chance.
  assert heldout[best]["accuracy"] > heldout[best]["chance"] + 2 * heldout[best]["se"]


def test_curve_figure_rows_by_tokens_and_by_length():
  from icl_ft.pretrain import curve

  acc = {"syllogisms/syllogism": {"accuracy": 0.5, "se": 0.1, "chance": 0.4, "n": 10}}
  rows = [{"label": "C", "step": s, "tokens": t, "context_chars": c, "accuracy": acc}
          for s, t, c in ((0, 10, 0), (0, 10, 4000), (5, 20, 4000))]
  by_tokens = curve.figure_rows(rows)
  assert [(r["series"], r["x"]) for r in by_tokens] == [
      ("C, own chars", 10), ("C, 4000 chars", 10), ("C, 4000 chars", 20)]
  by_length = curve.figure_rows(rows, "context_chars")  # only step 0 has two lengths
  assert [(r["series"], r["x"]) for r in by_length] == [("C, 0.0M tokens", 0),
                                                        ("C, 0.0M tokens", 4000)]
  assert by_length[0]["dataset"] == "syllogisms" and by_length[0]["chance"] == 0.4
  many = [dict(rows[0], step=s, tokens=s * 10**6, context_chars=c)
          for s in range(10) for c in (0, 4000)]
  lines = {r["series"] for r in curve.figure_rows(many, "context_chars")}
  assert curve.MAX_LENGTH_LINES == 4
  assert lines == {"C, 0.0M tokens", "C, 3.0M tokens", "C, 6.0M tokens", "C, 9.0M tokens"}


def test_other_documents_control_takes_the_facts_away():
  from icl_ft import sharding
  from icl_ft.config import schema
  from icl_ft.model import loader
  from icl_ft.pretrain import recipe

  cfg = schema.ModelConfig(preset="tiny_default", checkpoint="default", tokenizer="default")
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  model, tok = loader.load_model(cfg, mesh, rules)
  own = recipe.evaluate_in_context(model, tok, 2, families=("celebrities",))
  other = recipe.evaluate_in_context(model, tok, 2, families=("celebrities",),
                                     other_documents=True)
  forward = "celebrities/forward"
  assert own[forward]["n"] == other[forward]["n"] > 0  # the same questions
  # The default looks descriptions up (held-out 1.00); after another episode's documents the
  # asked-about people are absent and it is near chance.
  assert own[forward]["accuracy"] >= 0.9
  assert other[forward]["accuracy"] <= own[forward]["chance"] + 0.25
  with pytest.raises(ValueError, match="other_documents needs >= 2 episodes"):
    recipe.evaluate_in_context(model, tok, 1, families=("celebrities",), other_documents=True)
