"""ICL scoring speed: prefix-cached (`ContextScorer`) vs naive full recompute (`NaiveScorer`).

    python bench/scoring.py [--dataset semantic_structure] [--scale small] [--preset tiny]
                            [--batch 32] [--questions 0] [--subsample 1] [--dtype float32]
                            [--tokenizer path/to.model] [--vocab 2000]
                            [--checkpoint gemma3_270m] [--naive_questions 0]

Same model (fresh init of the preset, vocabulary resized to the tokenizer), same questions
(every split of the dataset, or the first `--questions`), same ICL context (the training
documents, `icl_ft.evaluation.prompts`). Each method first runs a warm-up pass that compiles (cached: all
questions; naive: the first `--warmup` questions, which have the same batch shape), then a
timed pass; a timed pass that still compiled something is repeated. The cached time includes
building the scorer, i.e. the context prefill. Prints questions/s, tokens/s (full-sequence
tokens, [BOS] + context + prompt + choice summed over rows, per second: the same numerator
for both), the ratio, and whether the scores agree. Without `--tokenizer`, a SentencePiece
model (`--vocab` pieces) is trained on the dataset's text. `--checkpoint NAME` scores with a
named real checkpoint instead (its preset, weights and tokenizer, e.g. `gemma3_270m`).
`--naive_questions N` times the naive side on the first N questions only (a large model's
naive pass over every question takes hours) and scales its time to all of them: the naive cost
per question does not depend on which question (every row recomputes the same context). The
last line is one JSON object; `icl_scoring_speedup` = naive time / cached time, both for all
questions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=wrong-import-position
from flax import nnx  # pylint: disable=wrong-import-position

from icl_ft import sharding  # pylint: disable=wrong-import-position
from icl_ft.config import schema  # pylint: disable=wrong-import-position
from icl_ft.datasets import registry  # pylint: disable=wrong-import-position
from icl_ft.evaluation import prompts  # pylint: disable=wrong-import-position
from icl_ft.inference import prefill, scoring  # pylint: disable=wrong-import-position
from icl_ft.model import config as model_config  # pylint: disable=wrong-import-position
from icl_ft.model import loader  # pylint: disable=wrong-import-position
from icl_ft.model.tokenizer import Tokenizer, train_sentencepiece  # pylint: disable=wrong-import-position
from icl_ft.model.transformer import Transformer  # pylint: disable=wrong-import-position


def _timed(make_scorer, cls, questions, warm):
  """(scores, seconds, scorer): a pass over `questions` after a warm-up on `warm`.

  The timed pass includes building the scorer (the cached scorer's context prefill). If it
  still compiled something (a batch shape the warm-up did not have), it is run again.
  """
  make_scorer().score(warm)
  for _ in range(2):
    compiles = cls.compiles()
    start = time.perf_counter()
    scorer = make_scorer()
    out = scorer.score(questions)
    seconds = time.perf_counter() - start
    if cls.compiles() == compiles:
      break
  return out, seconds, scorer


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dataset", default="semantic_structure")
  parser.add_argument("--scale", default="small")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--dtype", default="float32", help="compute dtype ('' = the preset's)")
  parser.add_argument("--batch", type=int, default=32, help="(question, choice) rows per pass")
  parser.add_argument("--naive_batch", type=int, default=0, help="rows per naive pass (0 = --batch)")
  parser.add_argument("--questions", type=int, default=0, help="first N questions (0 = all)")
  parser.add_argument("--warmup", type=int, default=16,
                      help="questions of the naive warm-up pass (compiles its batch shape)")
  parser.add_argument("--subsample", type=int, default=1, help="ICL subsample factor")
  parser.add_argument("--tokenizer", default="", help="a SentencePiece .model (default: train one)")
  parser.add_argument("--vocab", type=int, default=2000, help="vocabulary of the trained tokenizer")
  parser.add_argument("--checkpoint", default="",
                      help="a named real checkpoint (e.g. gemma3_270m): its preset, weights, tokenizer")
  parser.add_argument("--naive_questions", type=int, default=0,
                      help="time the naive side on the first N questions and scale (0 = all)")
  args = parser.parse_args()

  dataset = registry.generate(args.dataset, scale=args.scale, seed=args.seed)
  questions = [q for split in sorted(dataset.tests) for q in dataset.tests[split]]
  if args.questions:
    questions = questions[:args.questions]
  if args.checkpoint:
    mesh, rules = sharding.mesh_from_config(schema.MeshConfig(), jax.devices()[:1])
    model, tok = loader.load_model(schema.ModelConfig(
        preset=args.checkpoint, checkpoint=args.checkpoint, tokenizer=args.checkpoint,
        dtype=args.dtype), mesh, rules)
    cfg, args.preset = model.config, args.checkpoint
  else:
    if args.tokenizer:
      tok = Tokenizer(args.tokenizer)
    else:
      texts = [d.text for d in dataset.train]
      texts += [q.prompt + c for qs in dataset.tests.values() for q in qs for c in q.choices]
      tok = train_sentencepiece(texts, args.vocab, Path(tempfile.mkdtemp()) / "bench.model",
                                hard_vocab_limit=False)
    cfg = model_config.get_preset(args.preset)
    overrides = {"vocab_size": tok.vocab_size}
    if args.dtype:
      overrides["dtype"] = args.dtype
    cfg = dataclasses.replace(cfg, **overrides)
    model = Transformer(cfg, rngs=nnx.Rngs(params=0))
  context = prompts.context_text(dataset.train, args.subsample, 0)
  ctx_ids = prefill.encode_context(tok, context)
  rows = scoring.encode_questions(tok, questions)
  prefill.check_length(len(ctx_ids), rows, cfg.max_seq_len, what="ICL context")
  full_tokens = sum(len(ctx_ids) + len(r.suffix) for r in rows)
  longest = max(len(r.suffix) for r in rows)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; model {args.preset} "
        f"({cfg.num_layers} layers, d={cfg.embed_dim}, vocab {cfg.vocab_size}, {cfg.dtype}); "
        f"{args.dataset}/{args.scale}: {len(dataset.train)} documents in context "
        f"({len(ctx_ids)} tokens), {len(questions)} questions, {len(rows)} rows "
        f"(longest prompt+choice {longest} tokens), batch {args.batch} cached, "
        f"{args.naive_batch or args.batch} naive")

  warm = questions[:max(1, args.warmup)]
  cached, cached_s, cached_scorer = _timed(
      lambda: scoring.ContextScorer(model, tok, context, batch_size=args.batch,
                                    max_suffix_len=longest),
      scoring.ContextScorer, questions, questions)
  prefill_s = cached_scorer.stats["prefill_s"]
  naive_qs = questions[:args.naive_questions] if args.naive_questions else questions
  naive, naive_s, _ = _timed(
      lambda: scoring.NaiveScorer(model, tok, context, batch_size=args.naive_batch or args.batch),
      scoring.NaiveScorer, naive_qs, warm)
  naive_s *= len(questions) / len(naive_qs)  # per-question cost is the same for every question

  diff = scoring.max_abs_difference(cached[:len(naive)], naive)
  same = all(a.predicted == b.predicted for a, b in zip(cached, naive))
  speedup = naive_s / cached_s
  print(f"{'method':<8} {'seconds':>8} {'questions/s':>12} {'tokens/s':>12}")
  for name, secs in (("cached", cached_s), ("naive", naive_s)):
    print(f"{name:<8} {secs:>8.2f} {len(questions) / secs:>12.1f} {full_tokens / secs:>12.0f}")
  print(f"cached: prefill {prefill_s:.2f} s of {cached_s:.2f} s; speedup {speedup:.1f}x; "
        f"max |logprob difference| {diff:.2e}; same predictions: {same}")
  print(json.dumps({
      "icl_scoring_speedup": round(speedup, 2),
      "cached_seconds": round(cached_s, 3),
      "naive_seconds": round(naive_s, 3),
      "cached_questions_per_s": round(len(questions) / cached_s, 2),
      "naive_questions_per_s": round(len(questions) / naive_s, 2),
      "cached_tokens_per_s": round(full_tokens / cached_s),
      "naive_tokens_per_s": round(full_tokens / naive_s),
      "max_abs_logprob_diff": diff,
      "same_predictions": same,
      "context_tokens": len(ctx_ids),
      "questions": len(questions),
      "naive_questions_timed": len(naive_qs),
      "rows": len(rows),
      "device": jax.devices()[0].device_kind,
  }, sort_keys=True))


if __name__ == "__main__":
  main()
