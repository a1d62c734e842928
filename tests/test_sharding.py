"""Tests for icl_ft.sharding (8 simulated CPU devices, see conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from icl_ft import sharding
from icl_ft.model import builder

MESHES = [{"data": 8}, {"data": 2, "fsdp": 4}, {"data": 1, "fsdp": 2, "tensor": 4}]


def test_eight_devices():
  assert jax.device_count() == 8


def test_make_mesh_sizes():
  assert sharding.make_mesh({"data": -1}).devices.shape == (8, 1, 1)
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert sharding.mesh_shape({"fsdp": -1}, 8) == (1, 8, 1)
  assert sharding.mesh_shape({"data": 2, "fsdp": 4}, 8) == (2, 4, 1)
  assert sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1]).size == 1


@pytest.mark.parametrize("sizes,match", [
    ({"data": 3}, r"has 3 devices .* but 8 are available"),
    ({"data": -1, "fsdp": 3}, "not divisible"),
    ({"data": -1, "fsdp": -1}, "at most one axis"),
    ({"data": 0, "fsdp": -1}, "positive"),
    ({"pipeline": 2}, "unknown mesh axis"),
])
def test_make_mesh_errors(sizes, match):
  with pytest.raises(ValueError, match=match):
    sharding.make_mesh(sizes)


def test_rules_and_specs():
  r = sharding.DEFAULT_RULES
  assert r["batch"] == ("data", "fsdp") and r["embed"] == "fsdp"
  assert all(r[n] == "tensor" for n in ("heads", "kv_heads", "mlp", "vocab"))
  assert r["length"] is None and r["head_dim"] is None
  assert sharding.logical_to_spec(("vocab", "embed"), r) == P("tensor", "fsdp")
  # A mesh axis is used once: embed loses fsdp to batch in an activation.
  assert sharding.logical_to_spec(("batch", "length", "embed"), r) == P(("data", "fsdp"), None, None)
  over = sharding.resolve_rules({"embed": None, "mlp": ["fsdp", "tensor"]})
  assert over["embed"] is None and over["mlp"] == ("fsdp", "tensor")
  assert over["heads"] == "tensor"  # untouched defaults kept
  with pytest.raises(ValueError, match="not a mesh axis"):
    sharding.resolve_rules({"embed": "model"})
  with pytest.raises(ValueError, match="no sharding rule"):
    sharding.logical_to_spec(("embed", "nonsense"), r)


def test_fit_spec_replicates_uneven_dims():
  mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  assert sharding.fit_spec(P("tensor", "fsdp"), (1, 8), mesh) == P(None, "fsdp")
  assert sharding.fit_spec(P("tensor", "fsdp"), (8, 8), mesh) == P("tensor", "fsdp")


def test_constrain_is_noop_without_mesh_and_applies_with_one():
  x = jnp.ones((8, 4, 16))
  assert sharding.constrain(x, ("batch", "length", "embed")) is x
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})

  @jax.jit
  def f(x):
    return sharding.constrain(x * 2, ("batch", "length", "embed"))

  with sharding.use_mesh(mesh):
    y = f(x)
  assert y.sharding.spec == P(("data", "fsdp"))
  # Rules are read at trace time (jit caches by mesh, not rules): use a fresh function.
  g = jax.jit(lambda x: sharding.constrain(x * 2, ("batch", "length", "embed")))
  with sharding.use_mesh(mesh, {"batch": "data", "embed": "fsdp"}):
    y = g(x)
  assert y.sharding.spec == P("data", None, "fsdp")


def test_data_sharding():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  s = sharding.data_sharding(mesh)
  assert s.spec == P(("data", "fsdp"), None)
  batch = jax.device_put(np.zeros((8, 16), np.int32), s)
  assert batch.addressable_shards[0].data.shape == (2, 16)


class _Toy(nnx.Module):
  """Stand-in with logical names, independent of the real model."""

  def __init__(self, rngs):
    init = nnx.initializers.normal(0.02)
    self.emb = nnx.Param(init(rngs.params(), (64, 16)), out_sharding=("vocab", "embed"))
    self.w = nnx.Param(init(rngs.params(), (16, 32)), out_sharding=("embed", "mlp"))
    self.scale = nnx.Param(jnp.zeros((16,)))

  def __call__(self, t):
    x = sharding.constrain(self.emb[t], ("batch", "length", "embed"))
    return (jax.nn.gelu(x @ self.w[...]) @ self.w[...].T + self.scale[...]) @ self.emb[...].T


@pytest.mark.parametrize("sizes", MESHES)
def test_create_sharded_generic(sizes):
  mesh = sharding.make_mesh(sizes)
  m = sharding.create_sharded(lambda: _Toy(nnx.Rngs(params=0)), mesh)
  assert m.emb.get_value().sharding.spec == P("tensor", "fsdp")
  assert m.w.get_value().sharding.spec == P("fsdp", "tensor")
  assert m.scale.get_value().sharding.spec == P()
  with nnx.use_eager_sharding(False):
    ref = _Toy(nnx.Rngs(params=0))
  np.testing.assert_allclose(np.asarray(m.emb.get_value()), np.asarray(ref.emb.get_value()), rtol=1e-6)
  # shard_model_state moves a single-device model onto the mesh.
  moved = sharding.shard_model_state(ref, mesh)
  assert moved.w.get_value().sharding.spec == P("fsdp", "tensor")


def test_create_for_restore_is_abstract():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  m = sharding.create_for_restore(lambda: _Toy(nnx.Rngs(params=0)), mesh)
  v = m.w.get_value()
  assert isinstance(v, jax.ShapeDtypeStruct) and v.sharding.spec == P("fsdp", "tensor")


# ---------------------------------------------------------------------------
# The real Transformer
# ---------------------------------------------------------------------------


def _tiny_cfg():
  from icl_ft.model import config as config_lib

  # Tiny dims divisible by 4 so every sharded dimension is really split; 4 kv heads so the
  # kv projections shard over tensor=4 too.
  return config_lib.get_preset("tiny_gemma3", num_layers=2, embed_dim=32, hidden_dim=64,
                               num_heads=4, num_kv_heads=4, head_dim=8, vocab_size=128,
                               dtype="float32")


def _batch(cfg, b=8, l=16):
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, cfg.vocab_size, (b, l)).astype(np.int32)
  positions = np.broadcast_to(np.arange(l, dtype=np.int32), (b, l)).copy()
  segment_ids = np.ones((b, l), np.int32)
  segment_ids[0, 10:] = 0  # some padding
  return tokens, positions, segment_ids


def _logits(model, mesh, tokens, positions, segment_ids):
  @nnx.jit
  def f(model, t, p, s):
    return model(t, p, s)[0]

  if mesh is None:
    return np.asarray(f(model, tokens, positions, segment_ids))
  ds = sharding.data_sharding(mesh)
  args = [jax.device_put(x, ds) for x in (tokens, positions, segment_ids)]
  with sharding.use_mesh(mesh):
    return np.asarray(f(model, *args))


@pytest.fixture(scope="module")
def reference():
  cfg = _tiny_cfg()
  one = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  model = builder.fresh(cfg, one, seed=3)
  batch = _batch(cfg)
  return cfg, batch, _logits(model, None, *batch), model


@pytest.mark.parametrize("sizes", MESHES)
def test_transformer_sharded_logits_match_one_device(reference, sizes):
  cfg, batch, ref, _ = reference
  mesh = sharding.make_mesh(sizes)
  model = builder.fresh(cfg, mesh, seed=3)
  got = _logits(model, mesh, *batch)
  np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)

  # Parameters are sharded as the rules say.
  tensor, fsdp = sizes.get("tensor", 1), sizes.get("fsdp", 1)
  emb = model.embedder.input_embedding.get_value()
  assert emb.addressable_shards[0].data.shape == (cfg.vocab_size // tensor, cfg.embed_dim // fsdp)
  block = model.layers[0]

  def has_spec(v, *spec):
    return v.get_value().sharding.is_equivalent_to(NamedSharding(mesh, P(*spec)), v.ndim)

  assert has_spec(block.q, "fsdp", "tensor")
  assert block.k.get_value().addressable_shards[0].data.shape == (
      cfg.embed_dim // fsdp, cfg.num_kv_heads // tensor, cfg.head_dim)
  assert has_spec(block.o, "tensor", None, "fsdp")
  assert has_spec(block.gate, "fsdp", "tensor")
  assert has_spec(block.down, "tensor", "fsdp")
  assert has_spec(block.pre_attention_norm.scale)
  for path, v in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param)):
    assert v.sharding.mesh.shape == mesh.shape, path


def test_rules_override_changes_param_sharding():
  from icl_ft.model.transformer import Transformer

  cfg = _tiny_cfg()
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  _, abstract, _ = sharding.abstract_model(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0)), mesh,
                                           rules={"embed": None, "vocab": "fsdp"})
  assert abstract["embedder"]["input_embedding"].get_value().sharding.spec == P("fsdp")
  assert abstract["layers"][0]["q"].get_value().sharding.spec == P(None, "tensor")


def test_shard_model_state_moves_a_single_device_model(reference):
  cfg, batch, ref, one_device_model = reference
  mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
  graphdef, state = nnx.split(one_device_model)
  moved = nnx.merge(graphdef, sharding.shard_model_state(state, mesh))
  assert moved.layers[1].up.get_value().sharding.spec == P("fsdp", "tensor")
  assert one_device_model.layers[1].up.get_value().sharding.num_devices == 1
  np.testing.assert_allclose(_logits(moved, mesh, *batch), ref, atol=1e-5, rtol=1e-5)
