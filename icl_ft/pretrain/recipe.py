"""The recipe of the tiny default model: corpus -> tokenizer -> pretraining -> eval -> assets.

`pretrain(config)` (configs/pretrain_tiny.py; binary `icl-ft-pretrain`) runs the stages in
`config.workdir`, each skipped when its output is already there (so a rerun resumes, and
training resumes from its latest checkpoint):

  corpus/            icl_ft.pretrain.corpus.generate (a Dataset: episodes in train.jsonl)
  tokenizer.model    SentencePiece BPE trained on the corpus' lines (byte fallback)
  data/              the corpus' episodes that fit `train.data.seq_len` tokens
  train/             icl_ft.train.loop.train(config.train): the library of `icl-ft-train`
  eval.json          held-out in-context accuracy: new-seed episodes over the pretraining pool
  card.json          what was done (tokens seen, steps, wall time, hardware, mix, accuracies)

A long run stopped at any point (killed, out of time) continues exactly when `pretrain` (or
`icl-ft-pretrain`) is pointed at the same workdir: the corpus, tokenizer and data are reused, and
training restores params, optimizer state and the data iterator from the latest checkpoint of
`train/checkpoints` (every `train.checkpoint.every` steps), so it computes the same steps on the
same batches as an uninterrupted run (tests/test_pretraining.py
`test_interrupted_pretraining_resumes_exactly`). Raising `train.steps` continues a finished run.

and, with `config.export_dir` set (the package assets are `icl_ft/assets/tiny`), writes
`tokenizer.model`, `params/` (orbax, `icl_ft.model.checkpoints.save_params`), `config.json` (the
ModelConfig) and `card.json` there, atomically (a temporary sibling renamed at the end).

A run may continue another model (`train.model.checkpoint` = the params/ of an exported model
directory, e.g. the `long` stage of configs/pretrain_tiny.py): it keeps that model's tokenizer,
and its card records the starting model's card and the tokens seen by both (`continued_from`,
`tokens_seen_total`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import platform
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import tqdm

from icl_ft.config import schema
from icl_ft.datasets import records
from icl_ft.evaluation import prompts
from icl_ft.inference import scoring
from icl_ft.model import checkpoints
from icl_ft.model import loader
from icl_ft.model import tokenizer as tok_lib
from icl_ft.pretrain import corpus as corpus_lib
from icl_ft.train import loop
from icl_ft.train import metrics as metrics_lib

CHAT_SYMBOLS = ("<start_of_turn>", "<end_of_turn>")
# The held-out episodes of every card and curve, whatever the run's own corpus: one yardstick.
HELDOUT_PARAMS = corpus_lib.Params()


def params_record(params: corpus_lib.Params) -> dict[str, Any]:
  """Corpus `params` as JSON data (tuples as lists), as cards and held-out curve rows hold it."""
  return json.loads(json.dumps(dataclasses.asdict(params)))


def parse_weights(text: str, default: tuple[tuple[str, float], ...]
                  ) -> tuple[tuple[str, float], ...]:
  """("name", weight) pairs from "name:weight,name:weight"; `default` for ""."""
  if not text:
    return default
  out = []
  for item in text.split(","):
    key, _, weight = item.partition(":")
    try:
      out.append((key.strip(), float(weight)))
    except ValueError:
      raise ValueError(f"weights {text!r}: each entry is name:weight, got {item!r}") from None
  return tuple(out)


def corpus_params(config: Any) -> corpus_lib.Params:
  """The corpus Params of `config.corpus` (other fields: the generator's defaults)."""
  c, default = config.corpus, corpus_lib.Params()
  return dataclasses.replace(
      default, num_episodes=int(c.num_episodes), max_chars=int(c.max_chars),
      episodes_per_dataset=int(c.episodes_per_dataset), dataset_scale=float(c.dataset_scale),
      family_weights=parse_weights(str(c.family_weights), default.family_weights),
      kind_weights=parse_weights(str(c.kind_weights), default.kind_weights))


def build_corpus(config: Any, workdir: Path) -> records.Dataset:
  """The corpus in `workdir/corpus` (generated and written once)."""
  path = workdir / "corpus"
  if not (path / "card.json").exists():
    ds = corpus_lib.generate(corpus_params(config), seed=int(config.seed), progress=True,
                              workers=int(config.workers))
    records.write_dataset(ds, path, overwrite=True)
  return records.read_dataset(path)


def start_dir(config: Any) -> Path | None:
  """The exported model a continued run starts from (`train.model.checkpoint` is its params/,
  beside its tokenizer.model and card.json); None for a run from scratch."""
  checkpoint = str(config.train.model.checkpoint or "")
  if not checkpoint:
    return None
  if checkpoint == loader.DEFAULT:
    return loader.ASSETS_DIR
  return Path(checkpoint).absolute().parent


def start_tokenizer(config: Any) -> Path | None:
  """The tokenizer a continued run must keep (its weights index that vocabulary); None from
  scratch. Raises FileNotFoundError if the starting model has none beside its params/."""
  start = start_dir(config)
  if start is None:
    return None
  source = start / "tokenizer.model"
  if not source.exists():
    raise FileNotFoundError(
        f"train.model.checkpoint={config.train.model.checkpoint!r}: a continued run keeps its "
        f"model's tokenizer, and {source} does not exist (point it at the params/ of an "
        "exported model directory, which holds tokenizer.model beside it)")
  return source


def build_tokenizer(config: Any, corpus: records.Dataset, workdir: Path):
  """The tokenizer in `workdir/tokenizer.model`: the starting model's for a continued run,
  else SentencePiece trained once on the corpus."""
  path = workdir / "tokenizer.model"
  source = start_tokenizer(config)
  if source is not None:
    if path.exists() and path.read_bytes() != source.read_bytes():
      raise ValueError(f"{path} is not the tokenizer of the model this run continues ({source})")
    if not path.exists():
      shutil.copyfile(source, path)
  elif not path.exists():
    lines = [line for d in corpus.train for line in d.text.split("\n") if line]
    tok_lib.train_sentencepiece(lines[: int(config.tokenizer.max_texts)],
                                int(config.tokenizer.vocab_size), path,
                                user_defined_symbols=CHAT_SYMBOLS)
  return tok_lib.Tokenizer(path)


def fitting_corpus(corpus: records.Dataset, tokenizer: Any, seq_len: int,
                   workdir: Path) -> tuple[Path, dict[str, int]]:
  """`workdir/data`: the episodes whose BOS + text + EOS fit `seq_len` tokens; with counts."""
  path = workdir / "data"
  lengths = [len(ids) + 2 for ids in tokenizer.encode_batch([d.text for d in corpus.train])]
  keep = [d for d, n in zip(corpus.train, lengths) if n <= seq_len]
  stats = {"episodes": len(corpus.train), "kept": len(keep),
           "tokens": sum(n for n in lengths if n <= seq_len)}
  if not (path / "card.json").exists():
    card = {**corpus.card, "seq_len": seq_len, "fitting": stats}
    records.write_dataset(records.Dataset(corpus.name, tuple(keep), {}, card), path,
                          overwrite=True)
  return path, stats


def train_config(config: Any, workdir: Path, data_dir: Path, tokenizer_path: Path) -> Any:
  """`config.train` pointed at the corpus, the tokenizer and `workdir/train`."""
  t = config.train
  return dataclasses.replace(
      t, workdir=str(workdir / "train"),
      data=dataclasses.replace(t.data, dataset_dir=str(data_dir)),
      model=dataclasses.replace(t.model, tokenizer=str(tokenizer_path)))


def evaluate_in_context(model: Any, tokenizer: Any, episodes: int, seed: int = 0,
                        params: corpus_lib.Params | None = None, batch_size: int = 8,
                        families: Sequence[str] = corpus_lib.FAMILIES,
                        progress: bool = False, context_chars: int = 0,
                        other_documents: bool = False) -> dict[str, Any]:
  """Held-out in-context accuracy per `family/split` on new-seed pretraining-pool episodes.

  Each episode's documents are the context in the exact ICL format (`prompts.context_text`),
  and its questions are scored by multiple-choice log-likelihood (`scoring.score_questions`).
  `context_chars` > 0 pads each context with distractor documents to about that many characters
  (`corpus_lib.heldout_episodes`), as long as the study's own ICL contexts. Where questions
  name a subset (a syllogism's form, a relation), `subsets` breaks the accuracy down by it: an
  average can hide a whole kind of question answered wrong. `other_documents`: each episode's
  questions are asked after the next episode's documents (same family: another dataset, other
  facts): what is still answered then comes from a prior, not from the context.
  """
  params = params or corpus_lib.Params()
  hits: dict[str, list[int]] = collections.defaultdict(list)
  chance: dict[str, list[float]] = collections.defaultdict(list)
  subset_hits: dict[str, dict[str, list[int]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  work = []
  shift = 1 if other_documents else 0  # episode i is asked after episode i + shift's documents
  for f in families:
    held_out = corpus_lib.heldout_episodes(f, episodes, params, seed=seed,
                                           context_chars=context_chars)
    if other_documents and len(held_out) < 2:
      raise ValueError(f"other_documents needs >= 2 episodes per family, got {len(held_out)}")
    work += [(f, held_out[(i + shift) % len(held_out)][0], questions)
             for i, (_, questions) in enumerate(held_out)]
  if progress:
    work = tqdm.tqdm(work, desc="held-out ICL", unit="episode")
  for family, docs, questions in work:
    scores = scoring.score_questions(model, tokenizer, questions, prompts.context_text(docs),
                                     batch_size=batch_size)
    for q, s in zip(questions, scores):
      key = f"{family}/{q.split}"
      hits[key].append(int(s.predicted in q.correct))
      chance[key].append(len(q.correct) / len(q.choices))
      if q.subset:
        subset_hits[key][q.subset].append(hits[key][-1])
  out = {}
  for key in sorted(hits):
    n = len(hits[key])
    acc = sum(hits[key]) / n
    out[key] = {"accuracy": round(acc, 4), "n": n,
                "se": round((acc * (1 - acc) / n) ** 0.5, 4),
                "chance": round(sum(chance[key]) / n, 4)}
    if subset_hits[key]:
      out[key]["subsets"] = {name: {"accuracy": round(sum(h) / len(h), 4), "n": len(h)}
                             for name, h in sorted(subset_hits[key].items())}
  return out


def _hardware() -> str:
  d = jax.devices()[0]
  return f"{d.platform}:{getattr(d, 'device_kind', '')} x{jax.device_count()}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def export(export_dir: Path, model: Any, tokenizer_path: Path, card: Mapping[str, Any]) -> Path:
  """Writes tokenizer.model, params/, config.json, card.json into `export_dir` atomically."""
  export_dir = Path(export_dir).absolute()
  tmp = export_dir.with_name(export_dir.name + ".tmp")
  if tmp.exists():
    shutil.rmtree(tmp)
  tmp.mkdir(parents=True)
  shutil.copyfile(tokenizer_path, tmp / "tokenizer.model")
  checkpoints.save_params(tmp / "params", model)
  model_cfg = {"preset": model.config.name, **dataclasses.asdict(model.config)}
  (tmp / "config.json").write_text(json.dumps(model_cfg, indent=1) + "\n")
  (tmp / "card.json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
  old = export_dir.with_name(export_dir.name + ".old")
  if export_dir.exists():
    if old.exists():
      shutil.rmtree(old)
    export_dir.rename(old)
  tmp.rename(export_dir)
  if old.exists():
    shutil.rmtree(old)
  return export_dir


def model_card(model_dir: Path) -> dict[str, Any] | None:
  """The card.json of an exported model directory; None if it has none."""
  path = model_dir / "card.json"
  return json.loads(path.read_text()) if path.exists() else None


def continued_from(config: Any) -> dict[str, Any] | None:
  """What the card says of the model a continued run started from: its checkpoint, the tokens
  it had seen in all, and its own card; None for a run from scratch."""
  start = start_dir(config)
  if start is None:
    return None
  card = model_card(start)
  total = (card or {}).get("tokens_seen_total", (card or {}).get("tokens_seen", 0))
  return {"checkpoint": str(config.train.model.checkpoint), "tokens_seen_total": int(total),
          "card": card}


def pretrain(config: Any, *, devices: Sequence[Any] | None = None) -> dict[str, Any]:
  """Runs every stage (module docstring); returns the card. `devices`: train on these only."""
  if not config.workdir:
    raise ValueError("config.workdir is required")
  workdir = Path(config.workdir).absolute()
  start_tokenizer(config)  # a continued run without its tokenizer fails before any work
  workdir.mkdir(parents=True, exist_ok=True)
  start = time.time()
  corpus = build_corpus(config, workdir)
  tokenizer = build_tokenizer(config, corpus, workdir)
  seq_len = int(config.train.data.seq_len)
  data_dir, fit = fitting_corpus(corpus, tokenizer, seq_len, workdir)
  tcfg = train_config(config, workdir, data_dir, workdir / "tokenizer.model")
  result = loop.train(tcfg, devices=devices)
  wall = time.time() - start
  # The whole run's log, not this call's part of it: a resumed run reports the same losses.
  records_ = [r for r in metrics_lib.read_jsonl(Path(tcfg.workdir) / "metrics.jsonl")
              if "loss" in r and "eval" not in str(r.get("kind", ""))]
  steps = int(result.step)
  tokens_per_step = int(tcfg.data.batch_size) * seq_len
  continued = continued_from(config)
  heldout = evaluate_in_context(result.model, result.tokenizer, int(config.eval.episodes),
                                seed=int(config.seed), params=HELDOUT_PARAMS,
                                batch_size=int(config.eval.batch_size), progress=True,
                                context_chars=int(config.eval.context_chars))
  (workdir / "eval.json").write_text(json.dumps(heldout, indent=1) + "\n")
  card = {
      "model": result.model.config.name,
      "recipe": "icl-ft-pretrain --config=configs/pretrain_tiny.py "
                "(icl_ft.pretrain.recipe.pretrain; training with icl_ft.train.loop.train)",
      "steps": steps,
      "resumed_from_step": int(result.start_step),  # > 0: this call continued a stopped run
      "batch_size": int(tcfg.data.batch_size),
      "seq_len": seq_len,
      "tokens_seen": steps * tokens_per_step,
      # With the tokens of the model it continued (and of that model's own start, ...).
      "tokens_seen_total": steps * tokens_per_step + (continued or {}).get("tokens_seen_total", 0),
      "final_loss": float(records_[-1]["loss"]) if records_ else None,
      "last_losses": [round(float(r["loss"]), 4) for r in records_[-5:]],
      "optimizer": schema.plain(tcfg.optimizer),
      "wall_time_s": round(wall, 1),
      "hardware": _hardware(),
      "tokenizer": {"vocab_size": tokenizer.vocab_size, "type": "sentencepiece bpe, byte fallback",
                    "user_defined_symbols": list(CHAT_SYMBOLS)},
      "corpus": {k: corpus.card[k] for k in ("params", "episodes", "characters", "icl_questions",
                                             "word_pool", "people_names", "reserved_celebrity_seeds")},
      "corpus_fitting_seq_len": fit,
      "heldout_in_context": heldout,
      "heldout_episodes_per_family": int(config.eval.episodes),
      "heldout_context_chars": int(config.eval.context_chars),
      "heldout_seed": int(config.seed),
      "heldout_episode_params": params_record(HELDOUT_PARAMS),
      "heldout_note": "new-seed episodes of each family over the pretraining pool (new word "
                      "combinations), documents in the exact ICL format, multiple-choice "
                      "log-likelihood scoring (sum)",
  }
  if continued:
    card["continued_from"] = continued
  if config.note:
    card["note"] = str(config.note)
  (workdir / "card.json").write_text(json.dumps(card, indent=1) + "\n")
  if config.export_dir:
    export(Path(config.export_dir), result.model, workdir / "tokenizer.model", card)
  return card
