"""icl_ft.inference.sampling: cached decoding equals full forwards, stop strings, context reuse, mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from icl_ft import sharding
from icl_ft.datasets import simple_reversals
from icl_ft.datasets import words
from icl_ft.inference import prefill
from icl_ft.inference import sampling
from icl_ft.model import builder
from icl_ft.model import config as model_config
from icl_ft.model.tokenizer import train_sentencepiece
from icl_ft.model.transformer import Transformer

CONTEXT = "Did you know that femp are more dangerous than glon? " * 3
PROMPTS = ["Did you know that", "As it turns out, glon are", "Experts agree that the",
           "Scientists say that femp are more dangerous than", "The", "A"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A tokenizer trained on small dataset text and a tiny model with its vocabulary."""
  try:  # the session's persistent XLA compilation cache
    import train_setup
    train_setup.enable_compilation_cache(
        str(tmp_path_factory.getbasetemp() / "jax_compilation_cache"))
  except ImportError:
    pass
  ds = simple_reversals.generate(
      dataclasses.replace(simple_reversals.SCALES["small"], num_facts=8, articles_per_fact=3))
  texts = [d.text for d in ds.train] + list(words.pool("pretraining")[:2000])
  # Two layers (local, global; window 32) keep compiles short; contexts below pass the window.
  cfg = model_config.get_preset("tiny_gemma2", num_layers=2)
  tok = train_sentencepiece(texts, cfg.vocab_size, tmp_path_factory.mktemp("tok") / "t.model")
  model = Transformer(cfg, rngs=nnx.Rngs(params=0))
  return model, tok


def _reference_greedy(model, ids, steps, allowed):
  """Argmax of a full forward (no cache) over the whole growing sequence, `steps` times."""
  length = 64  # one jitted shape: the sequence right-padded with segment id 0

  @jax.jit
  def next_token(tokens, n):
    positions = jnp.arange(length, dtype=jnp.int32)[None]
    segments = (positions < n).astype(jnp.int32)
    logits, _ = model(tokens, positions, segments)
    return jnp.argmax(jnp.where(allowed, logits[0, n - 1], -jnp.inf))

  seq = list(ids)
  for _ in range(steps):
    tokens = np.zeros((1, length), np.int32)
    tokens[0, :len(seq)] = seq
    seq.append(int(next_token(tokens, len(seq))))
  return seq[len(ids):]


def test_greedy_equals_repeated_full_forward(setup):
  model, tok = setup
  sampler = sampling.Sampler(model, tok, batch_size=4)
  params = sampling.SamplingParams(max_new_tokens=32, stop_at_eos=False)
  prompts = PROMPTS[:4]  # different lengths: right padding inside one batch
  outs = sampler.generate(prompts, params)
  allowed = jnp.arange(model.config.vocab_size) < tok.vocab_size
  for prompt, out in zip(prompts[:2] + prompts[3:], outs[:2] + outs[3:]):
    ref = _reference_greedy(model, [tok.bos_id] + tok.encode(prompt), 32, allowed)
    assert list(out.token_ids) == ref
    assert out.finish_reason == "length"
    assert out.text == tok.decode(ref)


def test_decode_past_a_short_window_equals_repeated_full_forward(setup):
  """Phases starting `window` steps in read only the newest slots in local layers (and skip the
  context there): the tokens stay those of full forwards over context + prompt + tokens."""
  _, tok = setup
  window = 8
  cfg = model_config.get_preset("tiny_gemma2", num_layers=2, sliding_window=window)
  model = Transformer(cfg, rngs=nnx.Rngs(params=1))
  sampler = sampling.Sampler(model, tok, batch_size=4)
  params = sampling.SamplingParams(max_new_tokens=24, stop_at_eos=False)
  context = "Did you know that femp are more dangerous than glon?"
  prompts = PROMPTS[:4]
  p_len = prefill.bucket_length(max(len(tok.encode(p)) for p in prompts))
  starts = [b - p_len for b in sampling.phase_bounds(p_len, 24)[:-1]]
  assert any(start >= window for start in starts)  # a phase runs with the short reads
  outs = sampler.generate(prompts, params, context=sampler.prefill(context, room=40))
  allowed = jnp.arange(cfg.vocab_size) < tok.vocab_size
  for prompt, out in zip(prompts, outs):
    ids = [tok.bos_id] + tok.encode(context) + tok.encode(prompt)
    assert list(out.token_ids) == _reference_greedy(model, ids, 24, allowed)


def test_stop_strings_stop_rows_early(setup):
  model, tok = setup
  sampler = sampling.Sampler(model, tok, batch_size=4)
  params = sampling.SamplingParams(max_new_tokens=32, temperature=1.0, seed=5,
                                   stop_at_eos=False)
  free = sampler.generate(PROMPTS[:4], params)
  # A stop string spanning the boundary of row 0's 5th and 6th tokens.
  boundary = len(tok.decode(free[0].token_ids[:5]))
  stop = free[0].text[boundary - 1:boundary + 1]
  assert len(stop) == 2
  params = dataclasses.replace(params, stop=(stop,))
  outs = sampler.generate(PROMPTS[:4], params)
  for f, o in zip(free, outs):
    if stop in f.text:
      assert o.finish_reason == "stop"
      assert o.text == f.text[:f.text.index(stop)]
      # The generation ended on the token that completed the stop string.
      n = len(o.token_ids)
      assert list(o.token_ids) == list(f.token_ids[:n])
      assert stop in tok.decode(o.token_ids) and stop not in tok.decode(o.token_ids[:-1])
    else:  # rows without the string are unaffected by the others stopping
      assert o == f
  assert outs[0].finish_reason == "stop"
  # All rows stopping ends the loop before max_new_tokens.
  steps = sampler.stats["decode_steps"]
  early = sampler.generate(PROMPTS[:1], params)  # padding rows of the batch start done
  assert early[0] == outs[0]
  assert sampler.stats["decode_steps"] - steps == len(outs[0].token_ids) <= 6


def test_stop_table_matches_across_tokens():
  pieces = [b"", b"a\n", b"\n", b"b", b"\n\nx"]
  table = sampling.stop_tables(pieces, ["\n\n"], vocab_rows=6)
  assert table[0, 0, 1] == 1  # "a\n" leaves one newline matched
  assert table[0, 1, 2] == 2  # then "\n" completes it
  assert table[0, 1, 3] == 0  # "b" resets
  assert table[0, 0, 4] == 2  # complete inside one token
  assert table[0, 1, 5] == 1  # a padding row keeps the state


def test_eos_stops_a_row(setup):
  model, tok = setup
  sampler = sampling.Sampler(model, tok, batch_size=4)
  params = sampling.SamplingParams(max_new_tokens=32, temperature=1.0, seed=5,
                                   stop_at_eos=False)
  free = sampler.generate(PROMPTS[:2], params)
  # Make row 0's third token the EOS by treating its id as EOS.
  eos = free[0].token_ids[2]
  fake = _EosAs(tok, eos)
  outs = sampling.Sampler(model, fake, batch_size=4).generate(
      PROMPTS[:2], dataclasses.replace(params, stop_at_eos=True))
  first = free[0].token_ids.index(eos)
  assert outs[0].finish_reason == "eos"
  assert outs[0].token_ids == free[0].token_ids[:first + 1]
  for f, o in zip(free[1:], outs[1:]):
    if eos in f.token_ids:
      assert o.token_ids == f.token_ids[:f.token_ids.index(eos) + 1]
    else:
      assert o == f


class _EosAs:
  """A tokenizer whose EOS id is `eos` (to provoke an EOS deterministically)."""

  def __init__(self, tok, eos):
    self._tok, self.eos_id = tok, int(eos)

  def __getattr__(self, name):
    return getattr(self._tok, name)


def test_prefilled_context_reuse_equals_fresh_prefill(setup):
  model, tok = setup
  context = CONTEXT
  sampler = sampling.Sampler(model, tok, batch_size=4)
  greedy = sampling.SamplingParams(max_new_tokens=32, stop_at_eos=False)
  hot = sampling.SamplingParams(max_new_tokens=32, temperature=1.0, top_p=0.9, seed=3,
                                stop=(".",), stop_at_eos=False)
  shared = sampler.prefill(context, room=48)
  reused = sampler.generate(PROMPTS[:3], greedy, context=shared)
  again = sampler.generate(PROMPTS[3:5], greedy, context=shared)
  # Fresh: the context and prompt as one prompt after BOS (no shared prefill at all).
  ctx_ids = tok.encode(context)
  assert len(ctx_ids) > 32  # past the local window
  fresh_ids = [ctx_ids + tok.encode(p) for p in PROMPTS[:5]]
  fresh = sampler.generate_ids(fresh_ids, greedy)
  assert [o.token_ids for o in reused + again] == [o.token_ids for o in fresh]
  hot_reused = sampler.generate(PROMPTS[:3], hot, context=shared)
  # Sampling is seeded per row: the same seed repeats, another seed differs.
  assert sampler.generate(PROMPTS[:3], hot, context=shared) == hot_reused
  other = sampler.generate(PROMPTS[:3], dataclasses.replace(hot, seed=4), context=shared)
  assert other != hot_reused


def test_sharded_equals_unsharded(setup):
  model, tok = setup
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = builder.fresh(model.config, mesh, seed=0)
  # The shapes of the context test above (its compilation is reused for the plain run).
  hot = sampling.SamplingParams(max_new_tokens=32, temperature=1.0, top_p=0.9, seed=3,
                                stop=(".",), stop_at_eos=False)
  results = []
  for m, msh in ((model, None), (sharded, mesh)):
    sampler = sampling.Sampler(m, tok, batch_size=4, mesh=msh)
    results.append(sampler.generate(PROMPTS[:3], hot, context=sampler.prefill(CONTEXT, room=48)))
  assert results[0] == results[1]
  with pytest.raises(ValueError, match="multiple of the data-parallel"):
    sampling.Sampler(sharded, tok, batch_size=3, mesh=mesh)


def test_bad_input(setup):
  model, tok = setup
  with pytest.raises(ValueError, match="top_p"):
    sampling.SamplingParams(top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    sampling.SamplingParams(max_new_tokens=0)
  sampler = sampling.Sampler(model, tok, batch_size=2, max_len=64)
  with pytest.raises(ValueError, match="maximum length 64"):
    sampler.prefill("word " * 80, room=16)
  ctx = sampler.prefill("Experts agree.", room=16)
  with pytest.raises(ValueError, match="slots left after the context"):
    sampler.generate(["The"], sampling.SamplingParams(max_new_tokens=20), context=ctx)
