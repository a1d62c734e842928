"""icl_ft.model.checkpoints: params-only and training checkpoints (orbax), on a toy sharded module."""

import json
import os

import grain
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from icl_ft import sharding
from icl_ft.model import checkpoints
from icl_ft.train import checkpoints as train_checkpoints


class Toy(nnx.Module):
  """Two layers with logical axis names, a nested list, and a non-param variable."""

  def __init__(self, rngs: nnx.Rngs, width: int = 8):
    init = nnx.initializers.normal(1.0)
    self.embed = nnx.Param(init(rngs.params(), (16, width)), out_sharding=("vocab", "embed"))
    self.layers = nnx.List([
        nnx.Param(init(rngs.params(), (width, 4)), out_sharding=("embed", "mlp"))
        for _ in range(2)])
    self.count = nnx.BatchStat(jnp.zeros((), jnp.int32))


def _mesh():
  return sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def _toy(seed=0, width=8, mesh=None):
  if mesh is not None:
    return sharding.create_sharded(lambda: Toy(nnx.Rngs(params=seed), width), mesh)
  with nnx.use_eager_sharding(False):
    return Toy(nnx.Rngs(params=seed), width)


def _params(model):
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _snapshot(directory):
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      p = os.path.join(root, f)
      out[os.path.relpath(p, directory)] = (os.path.getsize(p), os.path.getmtime(p))
  return out


def test_save_restore_params_onto_mesh_from_abstract(tmp_path):
  mesh = _mesh()
  model = _toy(0, mesh=mesh)
  checkpoints.save_params(tmp_path / "p", model)
  assert checkpoints.is_complete(tmp_path / "p")
  assert checkpoints.read_meta(tmp_path / "p")["kind"] == "params"

  # An abstract target (no parameter allocated) carrying the target shardings.
  target = sharding.create_for_restore(lambda: Toy(nnx.Rngs(params=1)), mesh)
  restored = checkpoints.restore_params(tmp_path / "p", target)
  assert restored is target
  assert checkpoints.tree_equal(_params(restored), _params(model))
  kernel = restored.layers[0].get_value()
  assert isinstance(kernel, jax.Array)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


def test_restore_params_with_mesh_reshards_a_single_device_model(tmp_path):
  mesh = _mesh()
  model = _toy(0)  # on one device
  checkpoints.save_params(tmp_path / "p", model)
  other = _toy(3)
  checkpoints.restore_params(tmp_path / "p", other, mesh)
  assert checkpoints.tree_equal(_params(other), _params(model))
  assert other.embed.get_value().sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  # A State target gives a new State and leaves the source untouched.
  state = nnx.state(_toy(5), nnx.Param)
  new = checkpoints.restore_params(tmp_path / "p", state)
  assert checkpoints.tree_equal(nnx.to_pure_dict(new), _params(model))
  assert not checkpoints.tree_equal(nnx.to_pure_dict(state), _params(model))


def test_save_params_refuses_existing_directory(tmp_path):
  model = _toy(0)
  checkpoints.save_params(tmp_path / "p", model)
  before = _snapshot(tmp_path / "p")
  with pytest.raises(FileExistsError, match="already exists"):
    checkpoints.save_params(tmp_path / "p", _toy(1))
  assert _snapshot(tmp_path / "p") == before
  checkpoints.save_params(tmp_path / "p", _toy(1), overwrite=True)
  restored = checkpoints.restore_params(tmp_path / "p", _toy(2))
  assert checkpoints.tree_equal(_params(restored), _params(_toy(1)))


def test_different_model_shape_is_one_line_error(tmp_path):
  checkpoints.save_params(tmp_path / "p", _toy(0, width=8))
  before = _snapshot(tmp_path / "p")
  with pytest.raises(checkpoints.CheckpointError) as e:
    checkpoints.restore_params(tmp_path / "p", _toy(0, width=6))
  msg = str(e.value)
  assert "\n" not in msg and "different model" in msg and "embed" in msg
  assert "(16, 8)" in msg and "(16, 6)" in msg
  assert _snapshot(tmp_path / "p") == before


@pytest.mark.parametrize("bad", ["missing", "empty", "file"])
def test_not_a_checkpoint(tmp_path, bad):
  path = tmp_path / "x"
  if bad == "empty":
    path.mkdir()
  elif bad == "file":
    path.write_text("hi")
  with pytest.raises(checkpoints.CheckpointError) as e:
    checkpoints.restore_params(path, _toy(0))
  assert "\n" not in str(e.value)


def _iterator():
  return iter(grain.MapDataset.range(1000).shuffle(seed=3).to_iter_dataset())


def test_train_manager_keep_latest_restore_and_params_only_view(tmp_path):
  mesh = _mesh()
  model = _toy(0, mesh=mesh)
  params = _params(model)
  tx = optax.adamw(1e-2)
  opt_state = tx.init(params)
  it = _iterator()
  saved = {}
  with train_checkpoints.TrainCheckpointManager(tmp_path / "ck", every=2, keep=2) as mngr:
    for step in range(1, 8):
      next(it)
      params = jax.tree.map(lambda p: p + 1.0, params)
      if mngr.save(step, params, opt_state, it, {"note": step}):
        saved[step] = (params, next(_copy_iter(it)))
    assert sorted(saved) == [2, 4, 6]
  assert checkpoints.checkpoint_steps(tmp_path / "ck") == [4, 6]  # keep=2

  abstract_params = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
  abstract_opt = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), opt_state)
  mngr = train_checkpoints.TrainCheckpointManager(tmp_path / "ck", every=2, keep=2)
  assert mngr.latest_step() == 6
  fresh = _iterator()
  p, o, step = mngr.restore(6, abstract_params, abstract_opt, fresh)
  mngr.close()
  assert step == 6
  assert checkpoints.tree_equal(p, saved[6][0])
  assert checkpoints.tree_equal(o, opt_state)
  assert next(fresh) == saved[6][1]  # the data iterator continues where it was saved
  assert checkpoints.read_meta(tmp_path / "ck" / "6")["note"] == 6

  # restore_params reads the latest step of a training checkpoint, or a given one.
  target = _toy(9)
  checkpoints.restore_params(tmp_path / "ck", target, mesh)
  assert checkpoints.tree_equal(_params(target), saved[6][0])
  checkpoints.restore_params(tmp_path / "ck", target, mesh, step=4)
  assert checkpoints.tree_equal(_params(target), saved[4][0])
  with pytest.raises(checkpoints.CheckpointError, match="no complete step 5"):
    checkpoints.restore_params(tmp_path / "ck", target, step=5)


def _copy_iter(it):
  """A copy of a grain iterator at the same position (via its state)."""
  other = _iterator()
  other.set_state(json.loads(json.dumps(it.get_state())))
  return other


def test_incomplete_step_directory_is_ignored(tmp_path):
  model = _toy(0)
  params = _params(model)
  tx = optax.sgd(0.1)
  with train_checkpoints.TrainCheckpointManager(tmp_path / "ck", every=1, keep=3) as mngr:
    mngr.save(1, params, tx.init(params), _iterator())
  # What a run killed mid-save leaves: a temporary directory and a step dir without metadata.
  (tmp_path / "ck" / "2.orbax-checkpoint-tmp-123").mkdir()
  (tmp_path / "ck" / "3" / "params").mkdir(parents=True)
  assert checkpoints.checkpoint_steps(tmp_path / "ck") == [1]
  target = _toy(4)
  checkpoints.restore_params(tmp_path / "ck", target)
  assert checkpoints.tree_equal(_params(target), params)


def test_train_manager_rejects_params_only_dir(tmp_path):
  checkpoints.save_params(tmp_path / "p", _toy(0))
  with pytest.raises(checkpoints.CheckpointError, match="params-only"):
    train_checkpoints.TrainCheckpointManager(tmp_path / "p", every=1)


def test_restore_with_another_process_count_is_one_line_error(tmp_path):
  model = _toy(0)
  params = _params(model)
  tx = optax.sgd(0.1)
  with train_checkpoints.TrainCheckpointManager(tmp_path / "ck", every=1) as mngr:
    mngr.save(1, params, tx.init(params), _iterator())
  item = tmp_path / "ck" / "1" / "data_iter"
  os.rename(item / "process_0-of-1.json", item / "process_0-of-2.json")
  abstract = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), t)
  with train_checkpoints.TrainCheckpointManager(tmp_path / "ck", every=1) as mngr:
    with pytest.raises(checkpoints.CheckpointError, match="same number of processes") as e:
      mngr.restore(1, abstract(params), abstract(tx.init(params)), _iterator())
  assert "\n" not in str(e.value) and "process_0-of-2.json" in str(e.value)
