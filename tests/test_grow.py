"""Growing a trained model deeper or wider (icl_ft.pretrain.grow): the grown model computes
what its source did, and what was added gets gradients."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from icl_ft import sharding
from icl_ft.config import schema
from icl_ft.model import checkpoints
from icl_ft.model import config as model_config
from icl_ft.model import loader
from icl_ft.pretrain import grow


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """An exported tiny_default model directory with random weights (seed 3)."""
  root = tmp_path_factory.mktemp("grow")
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  model, _ = loader.load_model(schema.ModelConfig(preset="tiny_default", seed=3), mesh, rules)
  checkpoints.save_params(root / "src" / "params", model)
  shutil.copy(loader.ASSETS_DIR / "tokenizer.model", root / "src" / "tokenizer.model")
  (root / "src" / "card.json").write_text(json.dumps({"tokens_seen_total": 123}))
  return root


def _logits(preset: str, checkpoint: str, tokens: np.ndarray) -> np.ndarray:
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  model, _ = loader.load_model(schema.ModelConfig(preset=preset, checkpoint=checkpoint), mesh, rules)
  ids = jnp.asarray(tokens)
  positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
  return np.asarray(model(ids, positions, jnp.ones_like(ids))[0])


def test_grown_model_computes_what_its_source_did(source):
  dest = grow.grow(source / "src", source / "deep", "tiny_deep")
  assert checkpoints.checkpoint_preset(dest / "params") == "tiny_deep"
  assert (dest / "tokenizer.model").read_bytes() == (source / "src" / "tokenizer.model").read_bytes()
  card = json.loads((dest / "card.json").read_text())
  assert card["tokens_seen_total"] == 123 and card["grown_from"]["preset"] == "tiny_default"
  tokens = np.random.default_rng(0).integers(1, 1000, size=(2, 40))
  np.testing.assert_array_equal(_logits("tiny_deep", str(dest / "params"), tokens),
                                _logits("tiny_default", str(source / "src" / "params"), tokens))
  params = checkpoints.read_params(dest / "params")
  src = checkpoints.read_params(source / "src" / "params")
  # Layers 0, 1, 4, 5 are the source's 0-3; 2, 3, 6, 7 copies of them, off at first.
  for i, (j, identity) in enumerate([(0, False), (1, False), (0, True), (1, True),
                                     (2, False), (3, False), (2, True), (3, True)]):
    np.testing.assert_array_equal(params["layers"][str(i)]["q"], src["layers"][str(j)]["q"])
    scale = params["layers"][str(i)]["post_ffw_norm"]["scale"]
    assert (scale == -1).all() == identity
  with pytest.raises(FileExistsError):
    grow.grow(source / "src", dest, "tiny_deep")
  with pytest.raises(FileNotFoundError, match="no tokenizer.model"):
    grow.grow(source / "src" / "params", source / "nowhere", "tiny_deep")
  assert not (source / "nowhere").exists()


def _layer_grads(preset: str, checkpoint: str, layer: int) -> dict:
  """One layer's gradients of a log-probability, for the model at `checkpoint`."""
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  model, _ = loader.load_model(schema.ModelConfig(preset=preset, checkpoint=checkpoint), mesh, rules)
  ids = jnp.asarray(np.random.default_rng(1).integers(1, 1000, size=(1, 24)))
  positions = jnp.arange(24)[None]

  def loss(m):
    return jnp.mean(jax.nn.log_softmax(m(ids, positions, jnp.ones_like(ids))[0])[..., 7])

  return nnx.to_pure_dict(nnx.grad(loss)(model))["layers"][layer]


def test_added_layers_get_gradients(source):
  """The copies start off, but their norm scales get gradients: training turns them on."""
  dest = source / "deep_grad"
  grow.grow(source / "src", dest, "tiny_deep")
  layer = _layer_grads("tiny_deep", str(dest / "params"), 2)
  assert np.abs(np.asarray(layer["post_attention_norm"]["scale"])).max() > 0
  assert np.abs(np.asarray(layer["q"])).max() == 0  # behind the closed norm, for now


def test_widened_model_computes_what_its_source_did(source):
  dest = grow.grow(source / "src", source / "wide", "tiny_wide")
  wide, default = model_config.get_preset("tiny_wide"), model_config.get_preset("tiny_default")
  assert (wide.num_heads, wide.hidden_dim) == (2 * default.num_heads, 2 * default.hidden_dim)
  tokens = np.random.default_rng(0).integers(1, 1000, size=(2, 40))
  np.testing.assert_allclose(_logits("tiny_wide", str(dest / "params"), tokens),
                             _logits("tiny_default", str(source / "src" / "params"), tokens),
                             rtol=1e-5, atol=1e-5)
  params, src = (checkpoints.read_params(d / "params") for d in (dest, source / "src"))
  layer, old = params["layers"]["1"], src["layers"]["1"]
  np.testing.assert_array_equal(layer["q"][:, :4], old["q"])  # the source's heads, unchanged
  np.testing.assert_array_equal(layer["k"][:, :2], old["k"])
  assert np.abs(layer["q"][:, 4:]).min() > 0 and np.abs(layer["o"][4:]).max() == 0
  assert np.abs(layer["up"][:, 256:]).min() > 0 and np.abs(layer["down"][256:]).max() == 0
  # The added heads' output weights get gradients: training turns them on.
  grads = _layer_grads("tiny_wide", str(dest / "params"), 1)
  assert np.abs(np.asarray(grads["o"])[4:]).max() > 0
  assert np.abs(np.asarray(grads["down"])[256:]).max() > 0


def test_grow_refuses_shapes_it_cannot_keep():
  default = model_config.get_preset("tiny_default")
  with pytest.raises(ValueError, match="not a multiple"):
    grow.layer_sources(default, dataclasses.replace(default, num_layers=6,
                                                    attention_types=("local", "global") * 3))
  with pytest.raises(ValueError, match="embed_dim"):
    grow.layer_sources(default, dataclasses.replace(
        default, num_layers=8, embed_dim=256, attention_types=("local", "global") * 4))
  with pytest.raises(ValueError, match="sliding_window"):
    grow.layer_sources(default, dataclasses.replace(
        default, num_layers=8, sliding_window=64, attention_types=("local", "global") * 4))
  with pytest.raises(ValueError, match="attention pattern"):
    grow.layer_sources(default, dataclasses.replace(
        default, num_layers=8, attention_types=("global",) * 8))
  with pytest.raises(ValueError, match="query heads per key-value head"):
    grow.layer_sources(default, dataclasses.replace(default, num_heads=8))
  with pytest.raises(ValueError, match="hidden_dim 128 is below"):
    grow.layer_sources(default, dataclasses.replace(default, hidden_dim=128))
  params = {"layers": {"0": {"q": np.zeros(2)}}}  # a layer without post norms
  with pytest.raises(ValueError, match="post_attention_norm"):
    grow.grow_params(params, [(0, False), (0, True)])
