"""Model structure and presets, and logits parity with Hugging Face transformers (PyTorch CPU).

The parity tests build a random tiny model of each family, copy its weights into the
transformers implementation (GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, eager
attention), and compare float32 logits on random tokens longer than the sliding window, with
and without padding.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import model_testing as mt
from icl_ft.model import config as model_config
from icl_ft.model import layers
from icl_ft.model.transformer import Transformer

# ---- presets and structure --------------------------------------------------------------------


def test_published_presets():
  g = model_config.get_preset
  assert (g("gemma1_2b").num_layers, g("gemma1_2b").num_kv_heads) == (18, 1)
  assert g("gemma1_7b").num_kv_heads == g("gemma1_7b").num_heads == 16
  c = g("gemma2_2b")
  assert (c.embed_dim, c.hidden_dim, c.num_heads, c.num_kv_heads, c.head_dim) == (
      2304, 9216, 8, 4, 256)
  assert c.attention_types[:3] == ("local", "global", "local") and c.sliding_window == 4096
  assert (c.attn_logit_softcap, c.final_logit_softcap) == (50.0, 30.0)
  assert (c.vocab_size, c.tokenizer_vocab_size) == (256128, 256000)
  assert g("gemma2_27b").query_pre_attn_scalar == 144
  assert g("gemma2_27b").query_scale == pytest.approx(144 ** -0.5)
  assert g("gemma2_9b").query_scale == pytest.approx(256 ** -0.5)
  c = g("gemma3_1b")
  assert c.attention_types[:6] == ("local",) * 5 + ("global",) and c.sliding_window == 512
  assert (c.local_rope_base, c.global_rope_base, c.global_rope_scale) == (1e4, 1e6, 1.0)
  assert c.use_qk_norm and c.vocab_size == 262144 and c.final_logit_softcap is None
  c = g("gemma3_4b")
  assert (c.num_layers, c.embed_dim, c.hidden_dim, c.global_rope_scale, c.sliding_window) == (
      34, 2560, 10240, 8.0, 1024)
  assert g("gemma3_27b").query_pre_attn_scalar == 168
  assert g("gemma3_270m").embed_dim == 640
  for name in model_config.PRESETS:
    cfg = g(name)
    assert len(cfg.attention_types) == cfg.num_layers
    assert cfg.num_heads % cfg.num_kv_heads == 0


def test_get_preset_overrides_and_errors():
  cfg = model_config.get_preset("tiny", dtype="bfloat16", num_layers=7)
  assert cfg.family == "gemma3" and cfg.dtype == "bfloat16" and len(cfg.attention_types) == 7
  assert model_config.get_preset("gemma2_2b", num_layers=3).attention_types == (
      "local", "global", "local")
  with pytest.raises(ValueError, match=r"unknown model preset 'gemma9'.*tiny_gemma2"):
    model_config.get_preset("gemma9")
  with pytest.raises(ValueError, match="unknown ModelConfig field 'heads'"):
    model_config.get_preset("tiny", heads=3)
  with pytest.raises(ValueError, match="num_kv_heads"):
    model_config.get_preset("tiny", num_kv_heads=3)
  with pytest.raises(ValueError, match="sliding_window"):
    model_config.get_preset("tiny_gemma2", sliding_window=None)


def test_parameter_tree_and_logical_names():
  model = Transformer(model_config.get_preset("tiny_gemma3"), rngs=nnx.Rngs(params=0))
  cfg = model.config
  d, f, n, k, h = cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  flat = {"/".join(str(p) for p in path): v
          for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  expect = {
      "embedder/input_embedding": ((cfg.vocab_size, d), ("vocab", "embed")),
      "final_norm/scale": ((d,), ("norm",)),
      "layers/1/q": ((d, n, h), ("embed", "heads", "head_dim")),
      "layers/1/k": ((d, k, h), ("embed", "kv_heads", "head_dim")),
      "layers/1/v": ((d, k, h), ("embed", "kv_heads", "head_dim")),
      "layers/1/o": ((n, h, d), ("heads", "head_dim", "embed")),
      "layers/1/gate": ((d, f), ("embed", "mlp")),
      "layers/1/up": ((d, f), ("embed", "mlp")),
      "layers/1/down": ((f, d), ("mlp", "embed")),
      "layers/1/query_norm/scale": ((h,), ("norm",)),
      "layers/1/key_norm/scale": ((h,), ("norm",)),
      "layers/1/post_ffw_norm/scale": ((d,), ("norm",)),
  }
  for path, (shape, names) in expect.items():
    assert flat[path].get_value().shape == shape, path
    assert flat[path].get_value().dtype == jnp.float32
    assert tuple(flat[path].get_metadata()["out_sharding"]) == names, path
  per_layer = 4 + 4 + 2 + 3  # norms, q k v o, qk norms, mlp
  assert len(flat) == 2 + cfg.num_layers * per_layer
  specs = nnx.get_partition_spec(nnx.state(model))
  assert tuple(specs["layers"][0]["q"].get_value()) == ("embed", "heads", "head_dim")
  # Gemma 1 has neither post norms nor QK-norm.
  g1 = Transformer(model_config.get_preset("tiny_gemma1"), rngs=nnx.Rngs(params=0))
  names = {"/".join(str(p) for p in path)
           for path, _ in nnx.to_flat_state(nnx.state(g1, nnx.Param))}
  assert "layers/0/post_attention_norm/scale" not in names
  assert "layers/0/query_norm/scale" not in names and "layers/0/pre_ffw_norm/scale" in names


def test_bfloat16_compute_and_jit():
  model = mt.make_model("tiny_gemma2")
  bf = Transformer(dataclasses.replace(model.config, dtype="bfloat16"), rngs=nnx.Rngs(params=0))
  nnx.update(bf, nnx.state(model, nnx.Param))
  rng = np.random.default_rng(0)
  toks = jnp.asarray(mt.random_tokens(rng, 2, 40, model.config.vocab_size))
  pos = jnp.broadcast_to(jnp.arange(40, dtype=jnp.int32), toks.shape)
  seg = jnp.ones_like(toks)
  # Both models in one jit (one compile).
  both = nnx.jit(lambda a, b, t, p, s: (a(t, p, s)[0], b(t, p, s)[0]))
  ref, out = both(model, bf, toks, pos, seg)
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
  assert mt.rel_error(out, ref) < 0.1
  assert bf.layers[0].q.get_value().dtype == jnp.float32  # params stay float32


@pytest.mark.parametrize("spec", ["md,df->mf", "md,vd->mv"])
def test_einsum_accumulates_in_float32_with_its_gradients(spec):
  """layers.einsum: in float32 as jnp.einsum (value and both gradients); with bfloat16
  activations every matmul takes bfloat16 operands, accumulates in float32, and the float32
  weight gets a float32 gradient."""
  operands, out = spec.split("->")
  xs, ws = operands.split(",")
  size = {"m": 48, "d": 40, "f": 56, "v": 56}
  rng = np.random.default_rng(0)
  x, w = (jnp.asarray(rng.normal(size=[size[c] for c in s]), jnp.float32) for s in (xs, ws))
  dy = jnp.asarray(rng.normal(size=[size[c] for c in out]), jnp.float32)

  def value_and_grads(fn, x, w):
    y, vjp = jax.vjp(fn, x, w)
    return (y, *vjp(dy.astype(y.dtype)))

  ours = value_and_grads(lambda x, w: layers.einsum(spec, x, w), x, w)
  ref = value_and_grads(lambda x, w: jnp.einsum(spec, x, w), x, w)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

  y, dx, dw = value_and_grads(lambda x, w: layers.einsum(spec, x, w), x.astype(jnp.bfloat16), w)
  assert (y.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16, jnp.float32)
  f64 = lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)
  xr, wr, dyr = f64(x), f64(w), f64(dy)  # the operands as rounded to bfloat16
  scaled = lambda a, b: np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b))
  # y and dx: exact sums rounded once to bfloat16 (2^-9 relative); dw not rounded at all.
  assert scaled(y.astype(jnp.float32), np.einsum(spec, xr, wr)) < 2 ** -8
  assert scaled(dx.astype(jnp.float32), np.einsum(f"{out},{ws}->{xs}", dyr, wr)) < 2 ** -8
  assert scaled(dw, np.einsum(f"{xs},{out}->{ws}", xr, dyr)) < 1e-5


# ---- parity with Hugging Face ----------------------------------------------------------------

PARITY_CASES = [
    ("tiny_gemma1", {}),                                   # multi-query, all global
    ("tiny_gemma1", {"num_kv_heads": 4}),                  # multi-head (Gemma 1 7B style)
    ("tiny_gemma2", {}),                                   # GQA, local/global, soft caps
    ("tiny_gemma2", {"query_pre_attn_scalar": 24.0}),      # Gemma 2 27B style query scaling
    ("tiny_gemma3", {}),                                   # QK-norm, RoPE 10k / 1M
    ("tiny_gemma3", {"global_rope_scale": 8.0, "num_kv_heads": 1, "num_layers": 7,
                     "attention_types": model_config.attention_pattern(
                         model_config.GEMMA3_PATTERN, 7)}),  # 4B+ style
]


@pytest.fixture(scope="module")
def torch_available():
  pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  if int(transformers.__version__.split(".")[0]) < 5:
    pytest.skip("the parity helpers use the transformers 5 config API (rope_parameters)")


def _ids(case):
  preset, over = case
  return preset + "".join(f"-{k}={v}" for k, v in over.items() if k != "attention_types")


@pytest.mark.parity
@pytest.mark.parametrize("case", PARITY_CASES, ids=[_ids(c) for c in PARITY_CASES])
def test_parity_with_hf(torch_available, case):
  """Random tokens, 3 windows long; rows: unpadded, right-padded, left-padded (x2)."""
  preset, over = case
  model = mt.make_model(preset, seed=1, **over)
  cfg = model.config
  hf = mt.hf_model(model)
  rng = np.random.default_rng(0)
  length = 3 * (cfg.sliding_window or 16)
  lengths, left = [length, length - 23, length - 11, 5], [False, False, True, True]
  raw = mt.random_tokens(rng, len(lengths), length, cfg.vocab_size)
  rows = [mt.padded_inputs(raw[i:i + 1], [n], left=lf)
          for i, (n, lf) in enumerate(zip(lengths, left))]
  toks, pos, seg = (np.concatenate([r[j] for r in rows]) for j in range(3))
  ours = np.asarray(jax.jit(lambda t, p, s: model(t, p, s)[0])(toks, pos, seg))
  assert np.all(np.isfinite(ours))                      # padded queries too
  ref = mt.hf_logits(hf, toks, attention_mask=seg, position_ids=pos)
  real = seg.astype(bool)
  assert mt.rel_error(ours[real], ref[real]) < 1e-4
  assert mt.rel_error(ours[0], mt.hf_logits(hf, raw[:1])[0]) < 1e-4  # HF without any mask
  # A padded row equals the same tokens run alone, unpadded, in HF.
  assert mt.rel_error(ours[3][real[3]], mt.hf_logits(hf, raw[3:4, :5])[0]) < 1e-4


@pytest.mark.parity
@pytest.mark.parametrize("case", PARITY_CASES[::2], ids=[_ids(c) for c in PARITY_CASES[::2]])
def test_gradients_match_hf(torch_available, case):
  """The train loss's gradient of every parameter equals PyTorch autograd's through the HF
  model (the norm, RoPE and GeGLU gradients are written out by hand here, see layers.py)."""
  import torch  # pylint: disable=g-import-not-at-top

  from icl_ft.train import step as step_lib  # pylint: disable=g-import-not-at-top

  preset, over = case
  model = mt.make_model(preset, seed=2, **over)
  hf = mt.hf_model(model)
  rng = np.random.default_rng(3)
  tokens = mt.random_tokens(rng, 2, 40, model.config.vocab_size)
  mask = np.ones_like(tokens)
  mask[:, -1] = 0
  positions = np.broadcast_to(np.arange(40, dtype=np.int32), tokens.shape)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params):
    logits, _ = nnx.merge(graphdef, params, rest)(tokens, positions, np.ones_like(tokens))
    return step_lib.masked_cross_entropy(logits, tokens, mask)["loss_sum"]

  grads = jax.grad(loss)(params)
  as_model = nnx.merge(graphdef, grads, rest)  # our gradients, laid out as HF's weights
  ours = mt.hf_state_dict(as_model)

  logits = hf(input_ids=torch.from_numpy(tokens.astype(np.int64)), use_cache=False).logits
  ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1),
                                         torch.from_numpy(tokens[:, 1:].astype(np.int64)).flatten(),
                                         reduction="sum")
  ce.backward()
  theirs = {name: p.grad.numpy() for name, p in hf.named_parameters()}
  assert set(ours) == set(theirs) - {"lm_head.weight"}
  for name, grad in ours.items():
    assert mt.rel_error(grad.numpy(), theirs[name]) < 2e-4, name
