"""Tests for icl_ft.model.gemma_checkpoint: official Gemma checkpoint layout import / export."""

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from icl_ft import sharding
from icl_ft.config import schema
from icl_ft.model import checkpoints
from icl_ft.model import gemma_checkpoint
from icl_ft.model import gemma_layout


@dataclasses.dataclass(frozen=True)
class _Cfg:
  """The ModelConfig fields the layout needs (independent of the real presets)."""

  family: str = "gemma2"
  num_layers: int = 2
  embed_dim: int = 16
  hidden_dim: int = 32
  num_heads: int = 4
  head_dim: int = 8
  num_kv_heads: int = 2
  vocab_size: int = 64


def random_flat(layout: gemma_layout.Layout, seed: int = 0, dtype=np.float32) -> dict:
  rng = np.random.default_rng(seed)
  return {k: {leaf: rng.standard_normal(shape).astype(dtype) for leaf, shape in leaves.items()}
          for k, leaves in layout.shapes.items()}


def test_layout_per_family():
  g1 = gemma_layout.official_layout(_Cfg(family="gemma1", num_kv_heads=4))
  assert "transformer/layer_0/attn/qkv_einsum" in g1.shapes and g1.fused_qkv
  assert "transformer/layer_0/post_attention_norm" not in g1.shapes
  assert g1.shapes["transformer/layer_1/mlp/gating_einsum"]["w"] == (2, 16, 32)
  g2 = gemma_layout.official_layout(_Cfg())
  assert g2.shapes["transformer/layer_0/attn/kv_einsum"]["w"] == (2, 2, 16, 8)
  assert "transformer/layer_0/post_ffw_norm" in g2.shapes
  assert "transformer/layer_0/attn/_query_norm" not in g2.shapes
  g3 = gemma_layout.official_layout(_Cfg(family="gemma3"))
  assert g3.shapes["transformer/layer_0/attn/_key_norm"]["scale"] == (8,)
  assert g3.shapes["transformer/layer_0/mlp/gating_einsum"]["w"] == (2, 32, 16)


def _meta(flat):
  return {k: {leaf: jax.ShapeDtypeStruct(a.shape, a.dtype) for leaf, a in v.items()}
          for k, v in flat.items()}


def test_check_checkpoint_detects_orientation_and_errors():
  cfg = _Cfg(family="gemma3")
  flat = random_flat(gemma_layout.official_layout(cfg, gating_transposed=False))
  assert not gemma_layout.check_checkpoint(_meta(flat), cfg).gating_transposed
  flat = random_flat(gemma_layout.official_layout(cfg))
  assert gemma_layout.check_checkpoint(_meta(flat), cfg).gating_transposed

  missing = dict(flat)
  del missing["transformer/layer_1/attn/q_einsum"]
  with pytest.raises(checkpoints.CheckpointError, match="missing key 'transformer/layer_1/attn/q_einsum'"):
    gemma_layout.check_checkpoint(_meta(missing), cfg)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"layer_0/attn/q_einsum/w has shape \(4, 16, 8\), expected \(8, 16, 8\)"):
    gemma_layout.check_checkpoint(_meta(flat), dataclasses.replace(cfg, num_heads=8, num_kv_heads=2))
  with pytest.raises(checkpoints.CheckpointError, match="looks like Gemma 3 .* preset is Gemma 2"):
    gemma_layout.check_checkpoint(_meta(flat), _Cfg(family="gemma2"))
  with pytest.raises(checkpoints.CheckpointError, match="has 2 layers but the preset has 3"):
    gemma_layout.check_checkpoint(_meta(flat), dataclasses.replace(cfg, num_layers=3))
  with pytest.raises(checkpoints.CheckpointError, match="input_embedding has shape .*resize_vocab"):
    gemma_layout.check_checkpoint(_meta(flat), dataclasses.replace(cfg, vocab_size=48))
  lay = gemma_layout.check_checkpoint(_meta(flat), dataclasses.replace(cfg, vocab_size=48), resize_vocab=True)
  assert lay.vocab_rows == 64


def test_restore_onto_mesh(tmp_path):
  cfg = _Cfg()
  layout = gemma_layout.official_layout(cfg)
  flat = random_flat(layout)
  gemma_checkpoint.save_official(tmp_path / "ck", flat)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  groups = list(gemma_checkpoint.load_official(tmp_path / "ck", cfg, mesh))
  assert [i for i, _, _ in groups] == [None, 0, 1]
  _, _, layer0 = groups[1]
  q = layer0["transformer/layer_0/attn/q_einsum"]["w"]
  assert q.sharding.spec == P("tensor", "fsdp")
  np.testing.assert_array_equal(np.asarray(q), flat["transformer/layer_0/attn/q_einsum"]["w"])
  kv = layer0["transformer/layer_0/attn/kv_einsum"]["w"]
  assert kv.sharding.spec == P(None, None, "fsdp")  # 2 kv heads: not divisible by tensor=4
  emb = groups[0][2]["transformer/embedder"]["input_embedding"]
  assert emb.sharding.spec == P("tensor", "fsdp")


def test_not_a_gemma_checkpoint(tmp_path):
  with pytest.raises(FileNotFoundError):
    gemma_checkpoint.read_metadata(tmp_path / "none")
  gemma_checkpoint.save_official(tmp_path / "other", {"model": {"w": np.zeros((2, 2), np.float32)}})
  with pytest.raises(checkpoints.CheckpointError, match="not in the official Gemma flat layout"):
    gemma_checkpoint.read_metadata(tmp_path / "other")


# ---------------------------------------------------------------------------
# Import into / export from the real Transformer
# ---------------------------------------------------------------------------

from flax import nnx  # noqa: E402

from icl_ft.model import config as config_lib  # noqa: E402


def _preset(name, **kw):
  # Dims divisible by the mesh so parameters really shard; D != F so orientation is detectable.
  base = dict(num_layers=2, embed_dim=32, hidden_dim=64, num_heads=4, head_dim=8, vocab_size=128,
              dtype="float32")
  base.update(kw)
  return config_lib.get_preset(name, **base)


FAMILY_CFGS = {
    "gemma1_fused_qkv": lambda: _preset("tiny_gemma1", num_kv_heads=4),   # qkv_einsum (like 7B)
    "gemma1_mqa": lambda: _preset("tiny_gemma1", num_kv_heads=1),         # q + kv (like 2B)
    "gemma2": lambda: _preset("tiny_gemma2", num_kv_heads=2),
    "gemma3": lambda: _preset("tiny_gemma3", num_kv_heads=2),
}


def _reference_model(cfg, flat, transposed):
  """A single-device model with the official arrays assigned by hand (independent mapping)."""
  from icl_ft.model.transformer import Transformer

  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0)))
  set_ = lambda var, x: var.set_value(jax.numpy.asarray(x))  # noqa: E731
  set_(model.embedder.input_embedding, flat["transformer/embedder"]["input_embedding"])
  set_(model.final_norm.scale, flat["transformer/final_norm"]["scale"])
  for i, block in enumerate(model.layers):
    p = f"transformer/layer_{i}"
    for n in ("pre_attention_norm", "pre_ffw_norm", "post_attention_norm", "post_ffw_norm"):
      if getattr(block, n) is not None:
        set_(getattr(block, n).scale, flat[f"{p}/{n}"]["scale"])
    if f"{p}/attn/qkv_einsum" in flat:
      qkv = flat[f"{p}/attn/qkv_einsum"]["w"]  # [3, N, D, H]
      q, k, v = qkv[0], qkv[1], qkv[2]
    else:
      q = flat[f"{p}/attn/q_einsum"]["w"]      # [N, D, H]
      k, v = flat[f"{p}/attn/kv_einsum"]["w"]  # [K, D, H] each
    set_(block.q, q.transpose(1, 0, 2))
    set_(block.k, k.transpose(1, 0, 2))
    set_(block.v, v.transpose(1, 0, 2))
    set_(block.o, flat[f"{p}/attn/attn_vec_einsum"]["w"])
    if block.query_norm is not None:
      set_(block.query_norm.scale, flat[f"{p}/attn/_query_norm"]["scale"])
      set_(block.key_norm.scale, flat[f"{p}/attn/_key_norm"]["scale"])
    g = flat[f"{p}/mlp/gating_einsum"]["w"]
    gate, up = (g[0].T, g[1].T) if transposed else (g[0], g[1])
    set_(block.gate, gate)
    set_(block.up, up)
    set_(block.down, flat[f"{p}/mlp/linear"]["w"])
  return model


def _logits(model, mesh=None):
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 128, (8, 12)).astype(np.int32)
  positions = np.broadcast_to(np.arange(12, dtype=np.int32), (8, 12)).copy()
  segs = np.ones((8, 12), np.int32)
  f = nnx.jit(lambda m, t, p, s: m(t, p, s)[0])
  if mesh is None:
    return np.asarray(f(model, tokens, positions, segs))
  ds = sharding.data_sharding(mesh)
  with sharding.use_mesh(mesh):
    return np.asarray(f(model, *(jax.device_put(x, ds) for x in (tokens, positions, segs))))


def _fresh(cfg, mesh):
  from icl_ft.model.transformer import Transformer

  return sharding.create_for_restore(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0)), mesh)


@pytest.mark.parametrize("name,transposed", [
    ("gemma1_fused_qkv", False), ("gemma1_mqa", False), ("gemma2", False), ("gemma3", True),
    ("gemma3", False),  # a Gemma 3 checkpoint in the older [2, D, F] gating orientation
])
def test_import_run_export_round_trip(tmp_path, name, transposed):
  cfg = FAMILY_CFGS[name]()
  layout = gemma_layout.official_layout(cfg, gating_transposed=transposed)
  flat = random_flat(layout, seed=7)
  for k in flat:  # realistic scale: keep activations well-conditioned
    for leaf in flat[k]:
      flat[k][leaf] *= 0.1 if leaf == "scale" else 0.3
  gemma_checkpoint.save_official(tmp_path / "official", flat)

  mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  model = gemma_checkpoint.import_gemma(tmp_path / "official", _fresh(cfg, mesh), cfg, mesh)
  q = model.layers[0].q.get_value()
  assert q.sharding.spec == P("fsdp", "tensor")  # restored straight onto the mesh
  np.testing.assert_allclose(_logits(model, mesh), _logits(_reference_model(cfg, flat, transposed)),
                             atol=1e-4, rtol=1e-4)

  gemma_checkpoint.export_gemma(model, cfg, tmp_path / "exported", gating_transposed=transposed)
  back = gemma_checkpoint.read_metadata(tmp_path / "exported")
  assert set(back) == set(flat)
  again = {k: v for _, _, group in gemma_checkpoint.load_official(tmp_path / "exported", cfg, mesh)
           for k, v in group.items()}
  for k, leaves in flat.items():
    for leaf, x in leaves.items():
      np.testing.assert_array_equal(np.asarray(again[k][leaf]), x, err_msg=f"{k}/{leaf}")


def test_vocab_rows_cut_and_padded(tmp_path):
  cfg = FAMILY_CFGS["gemma2"]()
  layout = gemma_layout.official_layout(cfg, vocab_rows=cfg.vocab_size + 32)
  flat = random_flat(layout)
  gemma_checkpoint.save_official(tmp_path / "padded", flat)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  with pytest.raises(checkpoints.CheckpointError, match=r"input_embedding has shape \(160, 32\), expected \(128, 32\)"):
    gemma_checkpoint.import_gemma(tmp_path / "padded", _fresh(cfg, mesh), cfg, mesh)
  model = gemma_checkpoint.import_gemma(tmp_path / "padded", _fresh(cfg, mesh), cfg, mesh, resize_vocab=True)
  emb = np.asarray(model.embedder.input_embedding.get_value())
  np.testing.assert_array_equal(emb, flat["transformer/embedder"]["input_embedding"][:128])
  out = gemma_checkpoint.export_flat(model, cfg, vocab_rows=160)
  padded = np.asarray(out["transformer/embedder"]["input_embedding"])
  assert padded.shape == (160, 32) and not padded[128:].any()
  np.testing.assert_array_equal(padded[:128], emb)


def test_bfloat16_checkpoint_is_cast_to_param_dtype(tmp_path):
  cfg = FAMILY_CFGS["gemma3"]()
  flat = random_flat(gemma_layout.official_layout(cfg), dtype=jax.numpy.bfloat16)
  gemma_checkpoint.save_official(tmp_path / "bf16", flat)
  mesh = sharding.make_mesh({"data": 8})
  model = gemma_checkpoint.import_gemma(tmp_path / "bf16", _fresh(cfg, mesh), cfg, mesh)
  down = model.layers[1].down.get_value()
  assert down.dtype == np.float32
  np.testing.assert_array_equal(np.asarray(down),
                                flat["transformer/layer_1/mlp/linear"]["w"].astype(np.float32))


def test_import_errors_name_the_problem(tmp_path):
  cfg3 = FAMILY_CFGS["gemma3"]()
  flat = random_flat(gemma_layout.official_layout(cfg3))
  gemma_checkpoint.save_official(tmp_path / "g3", flat)
  mesh = sharding.make_mesh({"data": 8})
  cfg2 = FAMILY_CFGS["gemma2"]()
  with pytest.raises(checkpoints.CheckpointError, match="looks like Gemma 3.*preset is Gemma 2"):
    gemma_checkpoint.import_gemma(tmp_path / "g3", _fresh(cfg2, mesh), cfg2, mesh)
  bigger = _preset("tiny_gemma3", num_kv_heads=2, hidden_dim=96)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"layer_0/mlp/gating_einsum/w has shape \(2, 64, 32\), expected \(2, 96, 32\)"):
    gemma_checkpoint.import_gemma(tmp_path / "g3", _fresh(bigger, mesh), bigger, mesh)
  del flat["transformer/layer_1/attn/_key_norm"]
  gemma_checkpoint.save_official(tmp_path / "missing", flat)
  with pytest.raises(checkpoints.CheckpointError, match="missing key 'transformer/layer_1/attn/_key_norm'"):
    gemma_checkpoint.import_gemma(tmp_path / "missing", _fresh(cfg3, mesh), cfg3, mesh)


# ---------------------------------------------------------------------------
# icl_ft.model.loader.load_model (all three sources) and the shared config blocks
# ---------------------------------------------------------------------------


def _model_cfg(**kw):
  return schema.ModelConfig(preset="tiny_gemma3", **kw)


def test_load_model_fresh_gemma_and_icl_ft(tmp_path):
  from icl_ft.model import checkpoints
  from icl_ft.model import loader
  from icl_ft.model.tokenizer import train_sentencepiece

  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  tok_path = tmp_path / "tok.model"
  preset = config_lib.get_preset("tiny_gemma3")
  train_sentencepiece(["a dax is a wug " * 3, "every wug is a blicket"] * 30, 300, tok_path,
                      hard_vocab_limit=False)

  fresh, tok = loader.load_model(_model_cfg(seed=1), mesh)
  assert tok is None
  assert fresh.embedder.input_embedding.get_value().sharding.spec == P("tensor", "fsdp")
  # A tokenizer smaller than the embedding is refused unless the padding is declared.
  with pytest.raises(ValueError, match=f"vocab_size is {preset.vocab_size}"):
    loader.load_model(_model_cfg(tokenizer=str(tok_path)), mesh)

  # icl_ft format: our own params-only checkpoint.
  checkpoints.save_params(tmp_path / "ours", fresh)
  loaded, _ = loader.load_model(_model_cfg(checkpoint=str(tmp_path / "ours")), mesh)
  np.testing.assert_array_equal(np.asarray(loaded.layers[3].down.get_value()),
                                np.asarray(fresh.layers[3].down.get_value()))
  assert loaded.layers[3].down.get_value().sharding.spec == P("tensor", "fsdp")

  # gemma format: the official layout, exported from the same model.
  gemma_checkpoint.export_gemma(fresh, None, tmp_path / "official")
  official, _ = loader.load_model(
      _model_cfg(checkpoint=str(tmp_path / "official"), checkpoint_format="gemma"), mesh)
  np.testing.assert_array_equal(np.asarray(official.layers[0].gate.get_value()),
                                np.asarray(fresh.layers[0].gate.get_value()))

  with pytest.raises(ValueError, match="checkpoint_format 'hf'"):
    loader.load_model(_model_cfg(checkpoint="x", checkpoint_format="hf"), mesh)


def test_common_configs_and_mesh_from_config():
  from icl_ft.model import loader

  m = schema.ModelConfig()
  assert (m.preset, m.checkpoint, m.checkpoint_format, m.tokenizer, m.seed) == ("tiny", "", "icl_ft", "", 0)
  assert loader.model_config_from(schema.ModelConfig(preset="tiny_gemma2")).family == "gemma2"
  c = schema.ModelConfig(preset="tiny", dtype="bfloat16")
  assert loader.model_config_from(c).dtype == "bfloat16"
  mc = schema.MeshConfig(fsdp=2, rules={"embed": None})
  mesh, rules = sharding.mesh_from_config(mc)
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  assert rules["embed"] is None and rules["mlp"] == "tensor"
