"""Prefix-cached multiple-choice scoring equals the naive full-sequence computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from icl_ft.datasets import records
from icl_ft.datasets import simple_reversals
from icl_ft.evaluation import contexts
from icl_ft.evaluation import prompts
from icl_ft.inference import prefill
from icl_ft.inference import scoring
from icl_ft.model import config as model_config
from icl_ft.model.tokenizer import train_sentencepiece
from icl_ft.model.transformer import Transformer

TOL = 1e-4
BATCH = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  try:  # the session's persistent XLA compilation cache (shared with the training tests)
    import train_setup
    train_setup.enable_compilation_cache(
        str(tmp_path_factory.getbasetemp() / "jax_compilation_cache"))
  except ImportError:
    pass
  return simple_reversals.generate(simple_reversals.SCALES["small"], seed=0)


@pytest.fixture(scope="module")
def tok(data, tmp_path_factory):
  texts = [d.text for d in data.train]
  texts += [q.prompt + c for qs in data.tests.values() for q in qs for c in q.choices]
  return train_sentencepiece(texts, 1024, tmp_path_factory.mktemp("tok") / "t.model",
                             hard_vocab_limit=False)


@pytest.fixture(scope="module")
def cfg(tok):
  # tiny = Gemma 3 style with a 32-token sliding window: the contexts below are longer.
  return model_config.get_preset("tiny", vocab_size=tok.vocab_size, dtype="float32")


@pytest.fixture(scope="module")
def model(cfg):
  return Transformer(cfg, rngs=nnx.Rngs(params=0))


@pytest.fixture(scope="module")
def questions(data):
  return list(data.tests["reversal"][:6])


@pytest.fixture(scope="module")
def context(data):
  return prompts.context_text(data.train[:15])


def _assert_same(a, b, tol=TOL):
  assert [s.question.id for s in a] == [s.question.id for s in b]
  for sa, sb in zip(a, b):
    assert [c.num_tokens for c in sa.choices] == [c.num_tokens for c in sb.choices]
    for ca, cb in zip(sa.choices, sb.choices):
      assert abs(ca.logprob - cb.logprob) <= tol, (sa.question.id, ca, cb)
      assert abs(ca.mean_logprob - cb.mean_logprob) <= tol
      assert ca.mean_logprob == pytest.approx(ca.logprob / ca.num_tokens)
    assert sa.predicted == sb.predicted


def _direct(model, tok, context, question, choice_index):
  """Summed log-prob of one choice from one un-batched full-sequence model call."""
  head = [tok.bos_id] + (tok.encode(context) if context else []) + tok.encode(question.prompt)
  tail = tok.encode(question.choices[choice_index])
  ids = jnp.asarray([head + tail], jnp.int32)
  n = ids.shape[1]
  logits = _forward(model, ids, jnp.arange(n)[None], jnp.ones((1, n), jnp.int32))
  logp = np.asarray(jax.nn.log_softmax(logits[0], axis=-1))
  return float(sum(logp[len(head) + i - 1, t] for i, t in enumerate(tail))), len(tail)


@nnx.jit
def _forward(model, tokens, positions, segment_ids):
  return model(tokens, positions, segment_ids)[0]


def test_cached_equals_naive_with_a_chunked_prefill(model, tok, questions, context):
  # 64-token prefill chunks: several, the last one partial (padded with segment 0).
  n_ctx = len(prefill.encode_context(tok, context))
  assert n_ctx > 2 * 64 and n_ctx % 64
  cached = scoring.score_questions(model, tok, questions, context, batch_size=BATCH,
                                   prefill_chunk=64)
  naive = scoring.score_questions_naive(model, tok, questions, context, batch_size=BATCH)
  _assert_same(cached, naive)
  one = scoring.score_questions(model, tok, questions, context, batch_size=BATCH)
  _assert_same(one, naive)


def test_naive_equals_a_direct_model_call(model, tok, questions, context):
  naive = scoring.score_questions_naive(model, tok, questions[:2], context, batch_size=BATCH)
  for s in naive:
    for i, c in enumerate(s.choices):
      total, count = _direct(model, tok, context, s.question, i)
      assert c.num_tokens == count
      assert c.logprob == pytest.approx(total, abs=TOL)


@pytest.mark.parametrize("chat", [False, True])
def test_no_context_conditions(model, tok, questions, chat):
  context = prompts.context_text(None, fmt=prompts.PromptFormat(chat=chat))
  cached = scoring.score_questions(model, tok, questions, context, batch_size=BATCH)
  naive = scoring.score_questions_naive(model, tok, questions, context, batch_size=BATCH)
  _assert_same(cached, naive)


def test_empty_prompt_scores_the_first_token_from_the_context(model, tok, context):
  # The first choice token is predicted by the context's last position (kept from the prefill).
  q = records.Question(id="e", split="x", subset="s", prompt="", choices=(" glon.", " yomp are"),
                       correct=(0,))
  _assert_same(scoring.score_questions(model, tok, [q], context, batch_size=BATCH),
               scoring.score_questions_naive(model, tok, [q], context, batch_size=BATCH))
  total, _ = _direct(model, tok, context, q, 1)
  assert scoring.score_questions(model, tok, [q], context)[0].choices[1].logprob == \
      pytest.approx(total, abs=TOL)


def test_one_compiled_step_serves_many_batches(model, tok, data, context):
  qs = list(data.tests["reversal"])
  scorer = scoring.ContextScorer(model, tok, context, batch_size=BATCH, max_suffix_len=16)
  scorer.score(qs[:4])
  before = scoring.ContextScorer.compiles()
  scorer.score(qs[4:])  # several batches, same bucketed shape
  assert scoring.ContextScorer.compiles() == before
  assert scorer.stats["rows"] == 2 * len(qs)


def test_metric_mean_and_ties():
  cs = [scoring.ChoiceScore(-4.0, 4, -1.0), scoring.ChoiceScore(-3.0, 1, -3.0),
        scoring.ChoiceScore(-3.0, 2, -1.5)]
  assert scoring.predict(cs, "sum") == 1  # tie at -3.0 -> first index
  assert scoring.predict(cs, "mean") == 0
  with pytest.raises(ValueError, match="unknown scoring metric 'max'"):
    scoring.predict(cs, "max")


def test_mean_metric_end_to_end(model, tok, questions, context):
  scores = scoring.score_questions(model, tok, questions, context, batch_size=BATCH, metric="mean")
  for s in scores:
    assert s.metric == "mean"
    assert s.predicted == int(np.argmax([c.mean_logprob for c in s.choices]))


def test_context_too_long(model, tok, data, questions, context):
  n_ctx = len(prefill.encode_context(tok, context))
  with pytest.raises(prefill.ContextTooLongError, match="more than the model's maximum length"):
    scoring.score_questions(model, tok, questions, context, max_len=n_ctx + 3)
  # The evaluation's check: by how many tokens, and which subsample factor would fit.
  fmt = prompts.PromptFormat()
  full = len(prefill.encode_context(tok, prompts.context_text(data.train)))
  longest = max(len(r.suffix) for r in scoring.encode_questions(tok, data.tests["reversal"]))
  max_len = full // 3 + longest
  with pytest.raises(prefill.ContextTooLongError) as e:
    contexts.check_budget("simple_reversals", data, "icl", tok, fmt, 1, 0, max_len)
  k = int(str(e.value).split("subsample factor ")[1].split()[0])
  assert f"{full + longest - max_len} over the model's max_seq_len {max_len}" in str(e.value)
  assert e.value.excess == full + longest - max_len
  assert f"--config.icl.subsample={k}" in str(e.value)
  assert 3 <= k <= 4

  def ctx_len(factor):
    return len(prefill.encode_context(tok, prompts.context_text(data.train, factor, 0)))

  assert ctx_len(k) + longest <= max_len < ctx_len(k - 1) + longest
  ids, got_longest = contexts.check_budget("simple_reversals", data, "icl", tok, fmt, k, 0, max_len)
  assert len(ids) == ctx_len(k) and got_longest == longest
  with pytest.raises(prefill.ContextTooLongError, match="not even one document fits"):
    contexts.check_budget("simple_reversals", data, "icl", tok, fmt, 1, 0, longest + 5)


def test_sharded_on_a_mesh_equals_unsharded(cfg, model, tok, questions, context):
  from icl_ft import sharding
  from icl_ft.model import builder

  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = builder.fresh(cfg, mesh, seed=0)
  reference = scoring.score_questions(model, tok, questions, context, batch_size=BATCH)
  got = scoring.score_questions(sharded, tok, questions, context, batch_size=BATCH, mesh=mesh)
  _assert_same(got, reference)
  with pytest.raises(ValueError, match="multiple of the data-parallel size 4"):
    scoring.ContextScorer(sharded, tok, context, batch_size=6, mesh=mesh)


def test_bucket_lengths():
  assert [prefill.bucket_length(n) for n in (1, 16, 17, 100, 1024, 1025, 1537)] == \
      [16, 16, 32, 128, 1024, 1536, 2048]
  assert all(prefill.bucket_length(n) >= n for n in range(1, 5000, 7))
  assert math.log2(prefill.bucket_length(300)) == 9
