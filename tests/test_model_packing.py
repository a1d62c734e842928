"""Packing and padding: segments packed in one row give the same logits as each run alone."""

import jax
import numpy as np
import pytest

import model_testing as mt

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny_gemma2", "tiny_gemma3"])
def test_packed_segments_equal_each_alone(preset):
  model = mt.make_model(preset, seed=8)
  cfg = model.config
  rng = np.random.default_rng(3)
  lens = [45, 30]                                   # both longer than the window (32)
  width = 80                                        # 5 padding tokens at the end
  a = mt.random_tokens(rng, 1, lens[0], cfg.vocab_size)
  b = mt.random_tokens(rng, 1, lens[1], cfg.vocab_size)
  packed = np.zeros((1, width), np.int32)
  pos = np.zeros((1, width), np.int32)
  seg = np.zeros((1, width), np.int32)
  packed[0, :45], packed[0, 45:75] = a[0], b[0]
  pos[0, :45], pos[0, 45:75] = np.arange(45), np.arange(30)
  seg[0, :45], seg[0, 45:75] = 1, 2
  fwd = jax.jit(lambda t, p, s: model(t, p, s)[0])
  out = np.asarray(fwd(packed, pos, seg))
  assert np.all(np.isfinite(out))
  # Each segment alone in its own row (b right-padded to a's length).
  alone, a_pos, a_seg = mt.padded_inputs(np.concatenate([a, np.pad(b, ((0, 0), (0, 15)))]),
                                         lens)
  alone = np.asarray(fwd(alone, a_pos, a_seg))
  np.testing.assert_allclose(out[0, :45], alone[0], **TOL)
  np.testing.assert_allclose(out[0, 45:75], alone[1, :30], **TOL)


def test_padding_content_and_segment_numbering_do_not_matter():
  model = mt.make_model("tiny_gemma2", seed=9)
  cfg = model.config
  rng = np.random.default_rng(4)
  toks = mt.random_tokens(rng, 2, 64, cfg.vocab_size)
  pos = np.concatenate([np.arange(20), np.arange(40), np.zeros(4)]).astype(np.int32)
  seg = np.array([1] * 20 + [2] * 40 + [0] * 4, np.int32)
  pos, seg = np.stack([pos, pos]), np.stack([seg, seg])
  # Row 1: other pad tokens, and segment ids 7 / 3 instead of 1 / 2.
  toks[1, :60] = toks[0, :60]
  seg[1] = np.where(seg[1] == 1, 7, np.where(seg[1] == 2, 3, 0))
  out = np.asarray(jax.jit(lambda t, p, s: model(t, p, s)[0])(toks, pos, seg))
  np.testing.assert_allclose(out[1, :60], out[0, :60], **TOL)
