"""Multiple-choice log-likelihood scoring, with one shared context prefilled once.

Each choice of a question is scored as the continuation of `[BOS] + context + prompt`:

    tokens = [BOS] + encode(context) + encode(question.prompt) + encode(choice)

(three separately tokenized pieces, so a choice never changes how the prompt or the context
is tokenized, and the choice's first token is known). For each choice we report the summed
log-probability of its tokens, their count, and the mean per token; the prediction is the
argmax of the sum (`metric="sum"`, the default) or of the mean (`metric="mean"`); ties go to
the lowest index.

`ContextScorer` (the fast path) prefills the shared context once into a batch-1 KV cache
(`model.init_cache` + `model(...)` in fixed-size chunks) and runs every (question, choice)
continuation against it as a shared prefix (`model(..., prefix=cache)`: every row attends the
one cached context, never repeated per row), `batch_size` rows at a time: rows are
right-padded with segment id 0 to the scorer's fixed, bucketed
`max_suffix_len`, so one compiled step serves a whole evaluation, and the suffix positions
continue after the context (`len(context tokens) + i`). The continuation's first token is
scored with the context's last logits (kept from the prefill), the rest with the suffix's own.
The cost is one context pass plus a short pass per row, instead of a full-length pass per row
(`score_questions_naive`, the reference; both agree to float tolerance, see tests).

With a mesh, batches are sharded over ("data", "fsdp") (`sharding.data_sharding`) and the
batch-1 context cache is replicated; `batch_size` must then be a multiple of the data-parallel
size. The context prefill, bucketing, placement and the context budget (`ContextTooLongError`)
are `icl_ft.inference.prefill`'s, shared with the sampler.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from icl_ft.datasets import records
from icl_ft.inference import prefill

METRICS = ("sum", "mean")


@dataclasses.dataclass(frozen=True)
class ChoiceScore:
  """Log-likelihood of one choice continuation."""

  logprob: float  # summed log-probability of the choice's tokens (natural log)
  num_tokens: int
  mean_logprob: float  # logprob / num_tokens


@dataclasses.dataclass(frozen=True)
class QuestionScore:
  """The scores of all choices of one question, and the prediction under `metric`."""

  question: records.Question
  choices: tuple[ChoiceScore, ...]
  metric: str
  predicted: int

  @property
  def is_correct(self) -> bool:
    return self.predicted in self.question.correct

  def to_json(self) -> dict[str, Any]:
    return {
        "choices": [dataclasses.asdict(c) for c in self.choices],
        "metric": self.metric,
        "predicted": self.predicted,
        "correct": list(self.question.correct),
        "is_correct": self.is_correct,
    }


def predict(choices: Sequence[ChoiceScore], metric: str = "sum") -> int:
  """Index of the best choice under `metric` (first on ties)."""
  if metric not in METRICS:
    raise ValueError(f"unknown scoring metric {metric!r}; valid: {list(METRICS)}")
  values = [c.logprob if metric == "sum" else c.mean_logprob for c in choices]
  return int(np.argmax(values))


# ---------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Row:
  """One (question, choice) continuation: suffix = prompt tokens + choice tokens."""

  question: int
  choice: int
  suffix: tuple[int, ...]
  start: int  # index in `suffix` of the choice's first token


def encode_questions(tokenizer: Any, questions: Sequence[records.Question],
                     prompt_fn: Callable[[records.Question], str] | None = None) -> list[_Row]:
  """Rows for every (question, choice), prompt and choice tokenized separately."""
  prompts = [prompt_fn(q) if prompt_fn else q.prompt for q in questions]
  prompt_ids = prefill.encode_texts(tokenizer, prompts) if prompts else []
  flat = [c for q in questions for c in q.choices]
  choice_ids = iter(prefill.encode_texts(tokenizer, flat) if flat else [])
  rows = []
  for qi, q in enumerate(questions):
    for ci, choice in enumerate(q.choices):
      ids = next(choice_ids)
      if not ids:
        raise ValueError(f"question {q.id!r}: choice {ci} ({choice!r}) encodes to no tokens")
      rows.append(_Row(qi, ci, tuple(prompt_ids[qi]) + tuple(ids), len(prompt_ids[qi])))
  return rows


def _assemble(qscores: list[list[ChoiceScore | None]], questions: Sequence[records.Question],
              metric: str) -> list[QuestionScore]:
  out = []
  for q, cs in zip(questions, qscores):
    assert all(c is not None for c in cs), q.id
    out.append(QuestionScore(q, tuple(cs), metric, predict(cs, metric)))  # type: ignore[arg-type]
  return out


def _choice_score(total: float, count: int) -> ChoiceScore:
  return ChoiceScore(float(total), int(count), float(total) / int(count))


# ---------------------------------------------------------------------------
# Model plumbing
# ---------------------------------------------------------------------------


# Output-projection rows per step of the chunked log-normalizer (Transformer.target_logprobs).
VOCAB_CHUNK = 16384


def vocab_chunk(mesh: Any) -> int:
  """VOCAB_CHUNK, or 0 (the whole logits at once) on a mesh whose tensor axis shards the
  vocabulary: the chunked scan walks that axis."""
  return 0 if mesh is not None and dict(mesh.shape).get("tensor", 1) > 1 else VOCAB_CHUNK


def _score_in_batches(questions: Sequence[records.Question], rows: Sequence[_Row],
                      batch_size: int, mesh: Any,
                      run: Callable[[list[_Row]], tuple[jax.Array, jax.Array]]
                      ) -> list[list[ChoiceScore | None]]:
  """Per-choice scores: `run(batch)` -> device (sums, counts) over `rows`, longest first.

  Every batch is dispatched before any result is fetched, so the host never stalls the device
  between batches.
  """
  qscores: list[list[ChoiceScore | None]] = [[None] * len(q.choices) for q in questions]
  order = sorted(range(len(rows)), key=lambda i: -len(rows[i].suffix))
  batches = [[rows[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
  pending = [(batch, run(batch)) for batch in batches]
  for batch, (sums, counts) in pending:
    sums, counts = mesh.fetch(sums), mesh.fetch(counts)
    for j, r in enumerate(batch):
      qscores[r.question][r.choice] = _choice_score(sums[j], counts[j])
  return qscores


# The jitted steps are module-level with the model's graphdef static, so every scorer of the
# same model architecture shares their compilations.


@functools.partial(jax.jit, static_argnums=(0, 1))
def _suffix_fn(graphdef, chunk, state, cache, first_logprobs, tokens, positions, segments, mask):
  """Summed log-probs and counts of the masked suffix tokens of each row: ([B], [B])."""
  model = nnx.merge(graphdef, state)
  x, _ = model.hidden(tokens, positions, segments, prefix=cache)
  rest = model.target_logprobs(x[:, :-1], tokens[:, 1:], chunk)  # [B, L-1]: tokens 1..L-1
  first = first_logprobs[tokens[:, 0]][:, None]  # [B, 1]: suffix token 0, from the context
  lp = jnp.concatenate([first, rest], axis=1)  # [B, L]
  lp = jnp.where(mask, lp, 0.0)
  return lp.sum(axis=1), mask.sum(axis=1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _naive_fn(graphdef, chunk, state, tokens, positions, segments, mask):
  """Full sequences, no cache: summed log-probs and counts of the masked tokens."""
  model = nnx.merge(graphdef, state)
  x, _ = model.hidden(tokens, positions, segments)
  lp = model.target_logprobs(x[:, :-1], tokens[:, 1:], chunk)  # [B, L-1]; mask[:, 1:]: choices
  lp = jnp.where(mask[:, 1:], lp, 0.0)
  return lp.sum(axis=1), mask.sum(axis=1)


# ---------------------------------------------------------------------------
# Prefix-cached scoring
# ---------------------------------------------------------------------------


class ContextScorer:
  """Scores questions against one shared context, prefilled once into the KV cache.

  Usage:
    scorer = ContextScorer(model, tokenizer, context_text, batch_size=32, mesh=mesh)
    scores = scorer.score(questions)          # any number of calls; the prefill is reused

  Args:
    model: the Transformer (model contract: `init_cache`, `__call__(..., cache=, prefix=)`).
    tokenizer: a Tokenizer (`encode`/`encode_batch`, `bos_id`).
    context: shared text after BOS ("" or None: BOS only).
    batch_size: (question, choice) rows per forward pass (fixed; the last batch is padded).
    max_suffix_len: longest prompt + choice, in tokens, this scorer accepts (the fixed suffix
      length of every batch; longer rows raise ContextTooLongError). Default: 256.
    max_len: the model's maximum sequence length (default `model.config.max_seq_len`).
    prefill_chunk: context tokens per prefill call (bounds the [chunk, vocab] logits).
    metric: "sum" or "mean" (which log-prob picks the prediction).
    mesh, rules: shard batches on this mesh (None: default device placement).
  """

  def __init__(self, model: Any, tokenizer: Any, context: str | None = None, *,
               batch_size: int = 32, max_suffix_len: int = 256, max_len: int | None = None,
               prefill_chunk: int = 1024, metric: str = "sum", mesh: Any = None,
               rules: Any = None, context_ids: Sequence[int] | None = None):
    if metric not in METRICS:
      raise ValueError(f"unknown scoring metric {metric!r}; valid: {list(METRICS)}")
    self.tokenizer = tokenizer
    self.metric = metric
    self.batch_size = int(batch_size)
    self._mesh = prefill.Placement(mesh, rules)
    prefill.check_batch(self.batch_size, self._mesh)
    self.max_len = prefill.model_max_len(model) if max_len is None else max_len
    self.context_ids = (list(context_ids) if context_ids is not None
                        else prefill.encode_context(tokenizer, context))
    n_ctx = len(self.context_ids)
    self.max_suffix_len = prefill.bucket_length(max_suffix_len)
    if self.max_len is not None and n_ctx >= self.max_len:
      prefill.check_length(n_ctx, [_Row(0, 0, (0,), 0)], self.max_len)
    self._graphdef, self._state = nnx.split(model)
    self.stats = {"prefill_s": 0.0, "score_s": 0.0, "context_tokens": n_ctx, "rows": 0,
                  "suffix_tokens": 0, "padded_tokens": 0}
    start = time.perf_counter()
    self._prefill(int(prefill_chunk))
    self.stats["prefill_s"] = time.perf_counter() - start

  # -- prefill -------------------------------------------------------------
  def _prefill(self, chunk: int) -> None:
    with self._mesh.context():
      cache, first, padded = prefill.prefill_context(self._graphdef, self._state,
                                                     self.context_ids, chunk=chunk)
      self._ctx_slots = padded
      self._first_logprobs = first  # [V] log p(. | context)
      self._cache = cache  # batch 1: the shared prefix of every row
      jax.block_until_ready(first)  # so stats["prefill_s"] is the prefill's time

  # -- suffix batches ------------------------------------------------------
  @staticmethod
  def compiles() -> int:
    """How many (model, suffix shape) variants of the scoring step are compiled so far."""
    return _suffix_fn._cache_size()  # pylint: disable=protected-access

  def score(self, questions: Sequence[records.Question],
            prompt_fn: Callable[[records.Question], str] | None = None) -> list[QuestionScore]:
    """Scores every choice of every question against the prefilled context."""
    questions = list(questions)
    rows = encode_questions(self.tokenizer, questions, prompt_fn)
    prefill.check_length(len(self.context_ids), rows, self.max_len)
    too_long = [r for r in rows if len(r.suffix) > self.max_suffix_len]
    if too_long:
      r = too_long[0]
      raise prefill.ContextTooLongError(
          f"question {questions[r.question].id!r} has {len(r.suffix)} prompt + choice tokens, more "
          f"than this scorer's max_suffix_len {self.max_suffix_len}",
          context_tokens=len(self.context_ids), question_tokens=len(r.suffix),
          max_len=len(self.context_ids) + self.max_suffix_len)
    n_ctx = len(self.context_ids)
    b = self.batch_size

    def run(batch: list[_Row]) -> tuple[jax.Array, jax.Array]:
      length = self.max_suffix_len  # one shape per scorer: one compile
      tokens = np.zeros((b, length), np.int32)
      positions = np.zeros((b, length), np.int32)
      segments = np.zeros((b, length), np.int32)
      mask = np.zeros((b, length), bool)
      for j, r in enumerate(batch):
        k = len(r.suffix)
        tokens[j, :k] = r.suffix
        positions[j] = n_ctx + np.arange(length)
        segments[j, :k] = 1
        mask[j, r.start:k] = True
      self.stats["rows"] += len(batch)
      self.stats["suffix_tokens"] += int(sum(len(r.suffix) for r in batch))
      self.stats["padded_tokens"] += b * length
      with self._mesh.context():
        return _suffix_fn(self._graphdef, vocab_chunk(self._mesh.mesh), self._state,
                          self._cache, self._first_logprobs,
                          self._mesh.batch(tokens), self._mesh.batch(positions),
                          self._mesh.batch(segments), self._mesh.batch(mask))

    start = time.perf_counter()
    qscores = _score_in_batches(questions, rows, b, self._mesh, run)
    self.stats["score_s"] += time.perf_counter() - start
    return _assemble(qscores, questions, self.metric)


def score_questions(model: Any, tokenizer: Any, questions: Sequence[records.Question],
                    context: str | None = None, *, batch_size: int = 32, metric: str = "sum",
                    max_len: int | None = None, prefill_chunk: int = 1024, mesh: Any = None,
                    rules: Any = None,
                    prompt_fn: Callable[[records.Question], str] | None = None
                    ) -> list[QuestionScore]:
  """Per-choice scores of `questions` after `context`, prefilling the context once."""
  questions = list(questions)
  rows = encode_questions(tokenizer, questions, prompt_fn)
  longest = max((len(r.suffix) for r in rows), default=1)
  context_ids = prefill.encode_context(tokenizer, context)
  prefill.check_length(len(context_ids), rows, prefill.model_max_len(model) if max_len is None else max_len)
  scorer = ContextScorer(model, tokenizer, context_ids=context_ids, batch_size=batch_size,
                         metric=metric, max_len=max_len, prefill_chunk=prefill_chunk, mesh=mesh,
                         rules=rules, max_suffix_len=longest)
  return scorer.score(questions, prompt_fn)


# ---------------------------------------------------------------------------
# Naive reference: every row recomputes the full sequence
# ---------------------------------------------------------------------------


class NaiveScorer:
  """The reference: each (question, choice) row is `[BOS] + context + prompt + choice`, run
  through the model in full (no cache). Same outputs as ContextScorer; used for tests and the
  benchmark."""

  def __init__(self, model: Any, tokenizer: Any, context: str | None = None, *,
               batch_size: int = 32, max_len: int | None = None, metric: str = "sum",
               mesh: Any = None, rules: Any = None):
    if metric not in METRICS:
      raise ValueError(f"unknown scoring metric {metric!r}; valid: {list(METRICS)}")
    self.tokenizer = tokenizer
    self.metric = metric
    self.batch_size = int(batch_size)
    self._mesh = prefill.Placement(mesh, rules)
    prefill.check_batch(self.batch_size, self._mesh)
    self.max_len = prefill.model_max_len(model) if max_len is None else max_len
    self.context_ids = prefill.encode_context(tokenizer, context)
    self._graphdef, self._state = nnx.split(model)
    self.stats = {"score_s": 0.0, "rows": 0, "tokens": 0, "padded_tokens": 0}
  @staticmethod
  def compiles() -> int:
    return _naive_fn._cache_size()  # pylint: disable=protected-access

  def score(self, questions: Sequence[records.Question],
            prompt_fn: Callable[[records.Question], str] | None = None) -> list[QuestionScore]:
    questions = list(questions)
    rows = encode_questions(self.tokenizer, questions, prompt_fn)
    prefill.check_length(len(self.context_ids), rows, self.max_len)
    ctx = self.context_ids
    b = self.batch_size

    def run(batch: list[_Row]) -> tuple[jax.Array, jax.Array]:
      length = prefill.bucket_length(len(ctx) + max(len(r.suffix) for r in batch))
      tokens = np.zeros((b, length), np.int32)
      positions = np.tile(np.arange(length, dtype=np.int32), (b, 1))
      segments = np.zeros((b, length), np.int32)
      mask = np.zeros((b, length), bool)
      for j, r in enumerate(batch):
        full = list(ctx) + list(r.suffix)
        tokens[j, :len(full)] = full
        segments[j, :len(full)] = 1
        mask[j, len(ctx) + r.start:len(full)] = True
      self.stats["rows"] += len(batch)
      self.stats["tokens"] += int(sum(len(ctx) + len(r.suffix) for r in batch))
      self.stats["padded_tokens"] += b * length
      with self._mesh.context():
        return _naive_fn(self._graphdef, vocab_chunk(self._mesh.mesh), self._state,
                         self._mesh.batch(tokens),
                         self._mesh.batch(positions), self._mesh.batch(segments),
                         self._mesh.batch(mask))

    start = time.perf_counter()
    qscores = _score_in_batches(questions, rows, b, self._mesh, run)
    self.stats["score_s"] += time.perf_counter() - start
    return _assemble(qscores, questions, self.metric)


def score_questions_naive(model: Any, tokenizer: Any, questions: Sequence[records.Question],
                          context: str | None = None, *, batch_size: int = 8,
                          metric: str = "sum", max_len: int | None = None, mesh: Any = None,
                          rules: Any = None,
                          prompt_fn: Callable[[records.Question], str] | None = None
                          ) -> list[QuestionScore]:
  """Per-choice scores recomputing `[BOS] + context + prompt + choice` for every choice."""
  return NaiveScorer(model, tokenizer, context, batch_size=batch_size, max_len=max_len,
                     metric=metric, mesh=mesh, rules=rules).score(questions, prompt_fn)


def max_abs_difference(a: Iterable[QuestionScore], b: Iterable[QuestionScore]) -> float:
  """Largest |logprob| difference between two scorings of the same questions."""
  worst = 0.0
  for qa, qb in zip(a, b, strict=True):
    for ca, cb in zip(qa.choices, qb.choices, strict=True):
      if ca.num_tokens != cb.num_tokens:
        return float("inf")
      worst = max(worst, abs(ca.logprob - cb.logprob))
  return worst
