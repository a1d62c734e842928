"""Orbax checkpoints of a model's parameters: save, check, restore onto a mesh.

Two layouts share one on-disk shape, so `restore_params` reads both (the training one is
written by `icl_ft.train.checkpoints.TrainCheckpointManager`):

  params-only (`save_params`)          training (`TrainCheckpointManager`)
  DIR/                                 DIR/
    _CHECKPOINT_METADATA                 <step>/                 one per kept step
    params/   orbax pytree of arrays       _CHECKPOINT_METADATA
    meta/     JSON {"kind": "params",...}  params/   (same as params-only)
                                           opt_state/  optax state (same tree as optax makes)
                                           step/     JSON {"step": n}
                                           data_iter/  grain iterator state, one JSON per process
                                           meta/     JSON {"kind": "train", "param_shapes", ...}

`params` is `nnx.state(model, nnx.Param).to_pure_dict()`: nested dicts keyed by attribute
names and list indices. Every save is atomic (orbax writes a temporary directory and renames
it when all processes have finished), so a directory that exists and has `_CHECKPOINT_METADATA`
is complete; a run killed mid-save leaves only a temporary directory, which the manager
ignores and removes.

Restoring goes against an abstract tree that carries the target shardings (from the model's
own arrays, from `jax.ShapeDtypeStruct(..., sharding=...)` values of an abstract model, or
computed for `mesh` from the parameters' logical axis names), so the parameters are read
straight onto the mesh, each process reading only its shards. Shapes are checked against the
checkpoint's metadata first: a model of a different shape gets a one-line ValueError naming
the first mismatching parameter, before anything is read or written.

What a restore guarantees beyond shapes (each a one-line CheckpointError): the checkpoint was
written for the preset it is loaded under (when its metadata names one: `meta.preset`, a
training checkpoint's `meta.model.preset`, or an exported model's `config.json` beside
`params/`); its files can be read (a truncated or corrupted chunk names the checkpoint, not
a library traceback); and every restored parameter is finite.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from icl_ft import sharding as sharding_lib
from icl_ft.model import config as config_lib

PARAMS = "params"
OPT_STATE = "opt_state"
STEP = "step"
DATA_ITER = "data_iter"
META = "meta"

_METADATA_FILE = "_CHECKPOINT_METADATA"


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be used (missing, incomplete, or of another model)."""


# ---------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------


def _is_var(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def param_state(model_or_state: Any) -> nnx.State:
  """The nnx.Param state of a model (or the given State, filtered to Params if possible)."""
  if isinstance(model_or_state, nnx.Module):
    return nnx.state(model_or_state, nnx.Param)
  if isinstance(model_or_state, nnx.State):
    return nnx.filter_state(model_or_state, nnx.Param) if _has_vars(model_or_state) else model_or_state
  raise TypeError(f"expected an nnx.Module or nnx.State, got {type(model_or_state).__name__}")


def _has_vars(state: nnx.State) -> bool:
  return any(_is_var(x) for x in jax.tree.leaves(state, is_leaf=_is_var))


def to_pure(tree: Any) -> Any:
  """nnx.State -> nested dict of arrays (what is stored); anything else unchanged."""
  if isinstance(tree, nnx.State):
    return nnx.to_pure_dict(tree)
  return tree


def _path_str(path) -> str:
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def _flat_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
  """path string -> (shape, dtype) for every array-like leaf (ints and strs keys alike)."""
  out = {}
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  for path, leaf in leaves:
    if hasattr(leaf, "shape"):
      out[_path_str(path)] = (tuple(int(d) for d in leaf.shape), getattr(leaf, "dtype", None))
  return out


def param_shapes(tree: Any) -> dict[str, list[int]]:
  """JSON-able {path: shape} of a params tree (stored in checkpoint metadata)."""
  return {k: list(s) for k, (s, _) in sorted(_flat_shapes(to_pure(tree)).items())}


def check_shapes(saved: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
  """Raises a one-line CheckpointError if the two {path: shape} maps differ."""
  saved = {k: tuple(v) for k, v in saved.items()}
  expected = {k: tuple(v) for k, v in expected.items()}
  missing = sorted(set(expected) - set(saved))
  extra = sorted(set(saved) - set(expected))
  if missing or extra:
    detail = (f"model parameter {missing[0]!r} is not in the checkpoint" if missing else
              f"checkpoint parameter {extra[0]!r} is not in the model")
    raise CheckpointError(
        f"checkpoint {where} is of a different model: {detail} ({len(missing)} missing, "
        f"{len(extra)} unexpected parameters)")
  for k in sorted(expected):
    if saved[k] != expected[k]:
      raise CheckpointError(
          f"checkpoint {where} is of a different model: parameter {k!r} has shape "
          f"{saved[k]} there but {expected[k]} in the model")


# ---------------------------------------------------------------------------
# Abstract targets with shardings
# ---------------------------------------------------------------------------


def _default_sharding() -> jax.sharding.Sharding:
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def abstract_with_shardings(state: Any, mesh=None, rules=None) -> Any:
  """A pure tree of jax.ShapeDtypeStruct (with sharding) for an nnx State of real/abstract values.

  The sharding of each leaf is, in order: the array's own sharding (real arrays), the
  ShapeDtypeStruct's sharding (abstract models from `icl_ft.sharding.abstract_model`), the
  sharding computed for `mesh` from the logical axis names, or the first local device.
  """
  mesh_shardings = None
  if mesh is not None:
    mesh_shardings = to_pure(sharding_lib.state_shardings(state, mesh, rules))
  pure = to_pure(state)

  def one(path, leaf):
    sharding = getattr(leaf, "sharding", None)
    if mesh_shardings is not None:
      # An explicit mesh wins over a value's placement (e.g. a model built on one device).
      node = mesh_shardings
      for k in path:
        node = node[getattr(k, "key", getattr(k, "idx", None))]
      sharding = node
    if sharding is None:
      sharding = _default_sharding()
    return jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype, sharding=sharding)

  return jax.tree_util.tree_map_with_path(one, pure, is_leaf=lambda x: hasattr(x, "shape"))


# ---------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------


def abs_dir(directory: str | os.PathLike[str]) -> epath.Path:
  """`directory` as an absolute epath.Path (orbax needs absolute paths)."""
  return epath.Path(os.path.abspath(os.fspath(directory)))


def is_complete(directory: str | os.PathLike[str]) -> bool:
  """True if `directory` is a finished orbax checkpoint (params-only or one training step)."""
  d = abs_dir(directory)
  return (d / _METADATA_FILE).exists() and (d / PARAMS).is_dir()


def checkpoint_steps(directory: str | os.PathLike[str]) -> list[int]:
  """The complete steps of a training checkpoint directory, ascending ([] if none)."""
  d = abs_dir(directory)
  if not d.is_dir():
    return []
  steps = []
  for child in d.iterdir():
    if child.name.isdigit() and is_complete(child):
      steps.append(int(child.name))
  return sorted(steps)


def resolve_params_dir(directory: str | os.PathLike[str], step: int | None = None) -> epath.Path:
  """The checkpoint holding `params`: DIR itself (params-only) or DIR/<step> (latest by default)."""
  d = abs_dir(directory)
  if not d.exists():
    raise CheckpointError(f"checkpoint directory {d} does not exist")
  if step is None and is_complete(d):
    return d
  steps = checkpoint_steps(d)
  if step is not None:
    if step not in steps:
      raise CheckpointError(f"checkpoint directory {d} has no complete step {step} "
                            f"(complete steps: {steps or 'none'})")
    return d / str(step)
  if not steps:
    raise CheckpointError(f"{d} is not a checkpoint: no {PARAMS}/ item and no complete step "
                          f"directories")
  return d / str(steps[-1])


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
  """The JSON `meta` item of a checkpoint (params-only or one step), {} if absent."""
  f = abs_dir(directory) / META / "metadata"
  if not f.exists():
    return {}
  return json.loads(f.read_text())


def _params_tree_metadata(directory: epath.Path) -> Any:
  """The orbax tree metadata of the `params` item (shapes, dtypes) of a complete checkpoint."""
  item = directory / PARAMS
  if not item.is_dir():
    raise CheckpointError(f"checkpoint {directory} has no {PARAMS} item")
  meta = ocp.PyTreeCheckpointHandler().metadata(item)
  return getattr(meta, "tree", meta)


def saved_param_shapes(directory: epath.Path) -> dict[str, tuple[int, ...]]:
  """{path: shape} of the `params` item of a complete checkpoint, from orbax metadata."""
  return {k: s for k, (s, _) in _flat_shapes(_params_tree_metadata(directory)).items()}


def _restore_params_item(directory: epath.Path, target: Any) -> Any:
  """Restores only the `params` item of a checkpoint into `target` (abstract, with shardings)."""
  handler = ocp.CompositeCheckpointHandler(**{PARAMS: ocp.StandardCheckpointHandler()})
  with unreadable_as_error(directory):
    with ocp.Checkpointer(handler) as ckptr:
      return ckptr.restore(directory, args=ocp.args.Composite(**{
          PARAMS: ocp.args.StandardRestore(target)}))[PARAMS]


@contextlib.contextmanager
def unreadable_as_error(directory: Any) -> Iterator[None]:
  """Turns a library error while reading `directory` into a one-line CheckpointError.

  orbax / TensorStore report a truncated or corrupted chunk as a bare Exception wrapping the
  storage error; the message keeps the innermost (storage) error's first line.
  """
  try:
    yield
  except CheckpointError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    inner: BaseException = e
    while inner.__cause__ is not None or inner.__context__ is not None:
      inner = inner.__cause__ or inner.__context__
    detail = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
    raise CheckpointError(f"checkpoint {directory} cannot be read (truncated or corrupted "
                          f"files?): {detail}") from e


# ---------------------------------------------------------------------------
# Checks of what a checkpoint holds: its preset, finite values
# ---------------------------------------------------------------------------


@jax.jit
def _finite_flags(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree)


def nonfinite_leaves(tree: Any) -> list[str]:
  """Paths of the array leaves of `tree` holding a NaN or an infinity ([] if all finite)."""
  pure = to_pure(tree)
  flags = jax.device_get(_finite_flags(pure))
  return [_path_str(p) for p, ok in jax.tree_util.tree_flatten_with_path(flags)[0]
          if not bool(ok)]


def check_finite(tree: Any, where: str) -> None:
  """One-line CheckpointError if any parameter of `tree` is NaN or infinite."""
  bad = nonfinite_leaves(tree)
  if bad:
    raise CheckpointError(
        f"{where} has non-finite parameters ({len(bad)} arrays with NaN/inf, e.g. {bad[0]!r}); "
        f"it was saved after training diverged: use an earlier checkpoint")


def _canonical_preset(name: str) -> str:
  return config_lib.ALIASES.get(name, name)


def checkpoint_preset(directory: str | os.PathLike[str]) -> str | None:
  """The model preset a checkpoint (params-only or one step) was written with, if recorded."""
  d = abs_dir(directory)
  meta = read_meta(d)
  preset = meta.get("preset") or (meta.get("model") or {}).get("preset")
  if not preset and d.name == PARAMS:  # an exported model: DIR/{params/, config.json}
    config_file = d.parent / "config.json"
    if config_file.exists():
      try:
        preset = json.loads(config_file.read_text()).get("preset")
      except (ValueError, AttributeError):
        preset = None
  return str(preset) if preset else None


def check_preset(directory: str | os.PathLike[str], preset: str) -> None:
  """One-line CheckpointError if the checkpoint was written with another model preset.

  Presets of one shape (e.g. `tiny` and `tiny_default`) differ in attention pattern, window
  and maximum length: loading one as the other runs, and silently computes something else.
  """
  saved = checkpoint_preset(directory)
  if saved and _canonical_preset(saved) != _canonical_preset(preset):
    raise CheckpointError(
        f"checkpoint {abs_dir(directory)} was written with model preset {saved!r}, not {preset!r}: "
        f"set config.model.preset={saved}")


# ---------------------------------------------------------------------------
# Params-only save / restore
# ---------------------------------------------------------------------------


def save_params(directory: str | os.PathLike[str], model_or_state: Any, *, overwrite: bool = False,
                meta: Mapping[str, Any] | None = None) -> epath.Path:
  """Writes the model's nnx.Param state as a params-only orbax checkpoint at `directory`.

  Atomic (a temporary sibling renamed when complete). All processes must call it. Raises
  FileExistsError if `directory` exists, unless `overwrite`.
  """
  d = abs_dir(directory)
  if d.exists() and not overwrite:
    raise FileExistsError(f"checkpoint directory {d} already exists")
  params = to_pure(param_state(model_or_state))
  info = {"kind": "params", "param_shapes": param_shapes(params), **dict(meta or {})}
  name = getattr(getattr(model_or_state, "config", None), "name", None)
  if name and "preset" not in info:  # what `check_preset` compares on restore
    info["preset"] = str(name)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(d, args=ocp.args.Composite(**{
        PARAMS: ocp.args.StandardSave(params),
        META: ocp.args.JsonSave(info),
    }), force=overwrite)
  return d


def read_params(directory: str | os.PathLike[str], step: int | None = None) -> dict[str, Any]:
  """The stored `params` as a nested dict of numpy arrays (no model needed; single process).

  For inspection and tests: every array is read whole onto the first local device.
  """
  src = resolve_params_dir(directory, step)
  device = _default_sharding()
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
                        _params_tree_metadata(src), is_leaf=lambda x: hasattr(x, "shape"))
  return jax.tree.map(np.asarray, _restore_params_item(src, target))


def restore_params(directory: str | os.PathLike[str], model_or_abstract: Any, mesh=None, *,
                   rules=None, step: int | None = None, preset: str | None = None) -> Any:
  """Restores `params` from a params-only or training checkpoint into a model.

  Args:
    directory: a params-only checkpoint (`save_params`), a training checkpoint directory (its
      latest complete step, or `step`), or one step directory of it.
    model_or_abstract: an nnx.Module with real or abstract (`nnx.eval_shape`,
      `icl_ft.sharding.abstract_model`) parameters, or an nnx.State of them.
    mesh: if given, parameters are placed on it per their logical axis names (and `rules`);
      otherwise each lands where the target's value is (or its ShapeDtypeStruct's sharding).
    step: a training step to restore instead of the latest.
    preset: the model preset it is loaded under; refused if the checkpoint names another.

  Returns:
    The module, updated in place (an abstract module becomes a real one), or a new nnx.State
    of restored Params if a State was given.

  Raises:
    CheckpointError (a ValueError) with one line if the directory is not a complete
    checkpoint, was written with another preset, cannot be read, or its parameters do not
    match the model's or are not finite.
  """
  src = resolve_params_dir(directory, step)
  if preset:
    check_preset(src, preset)
  state = param_state(model_or_abstract)
  target = abstract_with_shardings(state, mesh, rules)
  with unreadable_as_error(src):
    saved = saved_param_shapes(src)
  check_shapes(saved, {k: s for k, (s, _) in _flat_shapes(target).items()}, str(src))
  restored = _restore_params_item(src, target)
  check_finite(restored, f"checkpoint {src}")
  if isinstance(model_or_abstract, nnx.Module):
    nnx.update(model_or_abstract, restored)
    leftover = [_path_str(p) for p, v in jax.tree_util.tree_flatten_with_path(
        nnx.state(model_or_abstract))[0] if isinstance(v, jax.ShapeDtypeStruct)]
    if leftover:
      raise CheckpointError(f"model has abstract non-parameter state after restoring params "
                            f"(e.g. {leftover[0]!r}); build it with real values")
    return model_or_abstract
  new_state = jax.tree.map(lambda v: v.replace(v.get_value()) if _is_var(v) else v, state,
                           is_leaf=_is_var)
  nnx.replace_by_pure_dict(new_state, restored)
  return new_state


def tree_equal(a: Any, b: Any) -> bool:
  """True if two pytrees have the same structure and bit-identical leaves."""
  la, ta = jax.tree_util.tree_flatten(to_pure(a))
  lb, tb = jax.tree_util.tree_flatten(to_pure(b))
  if ta != tb:
    return False
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
