"""One device mesh for everything, logical-axis-name -> mesh-axis rules, distributed init.

The mesh has axes ("data", "fsdp", "tensor"). Parameters carry logical axis names in their
flax `out_sharding` metadata (e.g. ("vocab", "embed")); activations are annotated with
`constrain(x, ("batch", "length", "embed"))`. A rules table maps each logical name to a mesh
axis, a tuple of mesh axes, or None (replicated), MaxText style:

  batch -> ("data", "fsdp")      embed -> "fsdp"
  vocab, heads, kv_heads, mlp -> "tensor"
  everything else (length, head_dim, layers, ...) -> None

A mesh axis is used at most once per array: dimensions are resolved left to right and a
dimension whose mesh axes are already taken by an earlier one is replicated instead (so an
activation [batch, length, embed] gets P(("data", "fsdp"), None, None)). Rules from a config
update the defaults (`resolve_rules`).

This module imports no model code: functions that build a module take its constructor
(`init_fn`); the Transformer's own builder is `icl_ft.model.builder`.

Typical use:

  mesh, rules = mesh_from_config(config.mesh)       # or make_mesh({"data": -1, ...})
  model = create_sharded(init_fn, mesh, rules)       # parameters are born sharded
  with use_mesh(mesh):                               # activates mesh + rules for constrain()
    logits, _ = jax.jit(...)(...)
"""

from __future__ import annotations

import contextlib
import math
import os
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from flax.core import spmd as flax_spmd
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from icl_ft.config import schema

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None

DEFAULT_RULES: Mapping[str, MeshAxes] = types.MappingProxyType({
    # activations
    "batch": ("data", "fsdp"),
    "length": None,
    "kv_length": None,
    # parameters (and the matching activation dimensions)
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "kv_head_dim": None,
    "mlp": "tensor",
    "layers": None,
    "norm": None,
    "stack": None,  # e.g. the leading 2 of a fused gating einsum, or q/k/v stacking
    "qkv": None,
    "kv": None,
})


# ---------------------------------------------------------------------------
# Mesh
# ---------------------------------------------------------------------------


def mesh_shape(sizes: Mapping[str, int], num_devices: int | None = None) -> tuple[int, int, int]:
  """Resolves {"data": -1, "fsdp": 2, "tensor": 1} against the device count."""
  num_devices = jax.device_count() if num_devices is None else num_devices
  unknown = set(sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axis {sorted(unknown)}; the axes are {MESH_AXES}")
  shape = [int(sizes.get(a, 1)) for a in MESH_AXES]
  free = [i for i, s in enumerate(shape) if s == -1]
  if len(free) > 1:
    raise ValueError(f"mesh {dict(sizes)}: at most one axis may be -1")
  bad = [MESH_AXES[i] for i, s in enumerate(shape) if s == 0 or s < -1]
  if bad:
    raise ValueError(f"mesh {dict(sizes)}: axis size of {bad} must be positive or -1")
  known = math.prod(s for s in shape if s != -1)
  if free:
    if num_devices % known:
      raise ValueError(f"mesh {dict(sizes)}: {num_devices} devices are not divisible by "
                       f"the fixed axes' product {known}")
    shape[free[0]] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh {dict(sizes)} has {math.prod(shape)} devices "
                     f"({'x'.join(map(str, shape))}) but {num_devices} are available")
  return tuple(shape)  # type: ignore[return-value]


def make_mesh(sizes: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes ("data", "fsdp", "tensor") (Auto axis types); -1 = the rest."""
  sizes = {"data": -1, "fsdp": 1, "tensor": 1} if sizes is None else dict(sizes)
  if devices is None:
    shape = mesh_shape(sizes)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
  shape = mesh_shape(sizes, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=list(devices))


def mesh_from_config(mesh_cfg: Any, devices: Sequence[jax.Device] | None = None
                     ) -> tuple[Mesh, dict[str, MeshAxes]]:
  """(mesh, rules) from a mesh block (`icl_ft.config.schema.MeshConfig`; on `devices`, else all)."""
  sizes = {a: int(getattr(mesh_cfg, a)) for a in MESH_AXES}
  return make_mesh(sizes, devices=devices), resolve_rules(dict(mesh_cfg.rules) or None)


def data_parallel_size(mesh: Mesh, rules: Mapping[str, Any] | None = None) -> int:
  """Number of batch shards on `mesh`: the sizes of the mesh axes that `data_sharding`
  splits the batch over (data x fsdp by default), multiplied."""
  spec = data_sharding(mesh, rules).spec
  axes = spec[0] if len(spec) else None
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  return math.prod(int(mesh.shape[a]) for a in axes)


def configured_data_parallel_size(sizes: Mapping[str, int]) -> int | None:
  """`data_parallel_size` from a config's axis sizes, before a mesh exists (default rules):
  data x fsdp, or None when either is -1 (known only with the devices)."""
  if sizes["data"] == -1 or sizes["fsdp"] == -1:
    return None
  return sizes["data"] * sizes["fsdp"]


# ---------------------------------------------------------------------------
# Multi-host
# ---------------------------------------------------------------------------


MULTIHOST_ENV = "ICL_FT_MULTIHOST"


def multihost_requested(mh: Any) -> bool:
  """Whether to initialize: `mh.initialize`, or ICL_FT_MULTIHOST=1 (launch_tpu.sh's `run`)."""
  if os.environ.get(MULTIHOST_ENV, "").strip().lower() in ("1", "true", "yes"):
    return True
  return bool(mh is not None and mh.initialize)


def initialize_distributed(mh: Any) -> bool:
  """`jax.distributed.initialize` from the `multihost` config block; returns whether it ran.

  The one place every binary decides this: it runs when `mh.initialize` is true or the
  environment has ICL_FT_MULTIHOST=1 (then a missing block means all fields unset).
  Unset fields come from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, then
  from JAX's cluster auto-detection. On CPU the cross-process collectives implementation
  (`jax_cpu_collectives_implementation`) is set to `mh.cpu_collectives` ("gloo") first.
  Idempotent: a second call in an initialized process does nothing.
  """
  if not multihost_requested(mh):
    return False
  mh = schema.MultihostConfig() if mh is None else mh
  if jax.distributed.is_initialized():
    return True
  collectives = mh.cpu_collectives
  if collectives:
    jax.config.update("jax_cpu_collectives_implementation", collectives)
  address = mh.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num = int(mh.num_processes) or int(os.environ.get("JAX_NUM_PROCESSES", 0) or 0)
  pid = int(mh.process_id)
  if pid < 0 and os.environ.get("JAX_PROCESS_ID", "") != "":
    pid = int(os.environ["JAX_PROCESS_ID"])
  kwargs: dict[str, Any] = {}
  if address:
    kwargs["coordinator_address"] = address
  if num:
    kwargs["num_processes"] = num
  if pid >= 0:
    kwargs["process_id"] = pid
  jax.distributed.initialize(**kwargs)
  return True


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------


def _as_axes(value: Any) -> MeshAxes:
  if value is None or isinstance(value, str):
    return value
  value = tuple(value)
  return value if value else None


def resolve_rules(rules: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None
                  ) -> dict[str, MeshAxes]:
  """DEFAULT_RULES updated with `rules` (a mapping or (name, axes) pairs; lists -> tuples)."""
  out = dict(DEFAULT_RULES)
  if rules is None:
    return out
  items = rules.items() if isinstance(rules, Mapping) else rules
  for name, axes in items:
    axes = _as_axes(axes)
    for a in (axes,) if isinstance(axes, str) else (axes or ()):
      if a not in MESH_AXES:
        raise ValueError(f"sharding rule {name!r} -> {axes!r}: {a!r} is not a mesh axis {MESH_AXES}")
    out[str(name)] = axes
  return out


def logical_to_spec(logical: Sequence[str | None] | None,
                    rules: Mapping[str, MeshAxes] | None = None) -> PartitionSpec:
  """PartitionSpec for logical axis names; a mesh axis is used at most once (left wins)."""
  rules = _current_rules() if rules is None else resolve_rules(rules)
  if not logical:
    return PartitionSpec()
  used: set[str] = set()
  out: list[MeshAxes] = []
  for name in logical:
    if name is None:
      out.append(None)
      continue
    if name not in rules:
      raise ValueError(f"logical axis {name!r} has no sharding rule; known: {sorted(rules)}")
    axes = rules[name]
    tup = (axes,) if isinstance(axes, str) else tuple(axes or ())
    if not tup or used.intersection(tup):
      out.append(None)
      continue
    used.update(tup)
    out.append(axes)
  return PartitionSpec(*out)


def logical_to_sharding(logical: Sequence[str | None] | None, mesh: Mesh,
                        rules: Mapping[str, MeshAxes] | None = None) -> NamedSharding:
  """NamedSharding on `mesh` for an array with the given logical axis names."""
  return NamedSharding(mesh, logical_to_spec(logical, rules))


# The rules active inside `use_mesh` (for `constrain`), else DEFAULT_RULES.
_RULES_STACK: list[dict[str, MeshAxes]] = []


def _current_rules() -> dict[str, MeshAxes]:
  return _RULES_STACK[-1] if _RULES_STACK else resolve_rules(None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Mapping[str, Any] | None = None) -> Iterator[Mesh]:
  """Activates `mesh` (jax.set_mesh) and the rules used by `constrain` and flax metadata."""
  resolved = resolve_rules(rules)
  _RULES_STACK.append(resolved)
  try:
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(tuple(resolved.items())):
      yield mesh
  finally:
    _RULES_STACK.pop()


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
  """Sharding constraint on an activation by logical names; a no-op without an active mesh.

  The mesh is the one set by `use_mesh` / `jax.set_mesh`; the rules are those of the innermost
  `use_mesh` (else DEFAULT_RULES). Both are read when the function is traced, and jit caches
  on the mesh but not on the rules: use one rules table per process (as the binaries do).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(MESH_AXES).issubset(mesh.axis_names):
    return x
  if x.ndim != len(logical):
    raise ValueError(f"constrain: array of rank {x.ndim} got {len(logical)} logical names {tuple(logical)}")
  spec = logical_to_spec(logical, _current_rules())
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def data_sharding(mesh: Mesh, rules: Mapping[str, Any] | None = None) -> NamedSharding:
  """Sharding of [B, L] token batches: batch over ("data", "fsdp") by default."""
  return logical_to_sharding(("batch", "length"), mesh, resolve_rules(rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


def variable_logical_axes(v: nnx.Variable) -> tuple[str | None, ...] | None:
  """The logical axis names a Variable carries in its metadata (None if it has none)."""
  meta = v.get_metadata()
  names = meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")
  if not names:
    return None
  return tuple(names)


def _is_var(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def state_specs(state: Any, rules: Mapping[str, Any] | None = None) -> Any:
  """PartitionSpec for each Variable of an nnx State (same tree, Variables replaced)."""
  resolved = resolve_rules(rules)

  def one(path, v):
    value = v.get_value() if _is_var(v) else v
    if not hasattr(value, "shape"):
      return PartitionSpec()
    logical = variable_logical_axes(v) if _is_var(v) else None
    if logical is None:
      return PartitionSpec()
    if len(logical) != len(value.shape):
      raise ValueError(f"parameter {jax.tree_util.keystr(path)} of shape {tuple(value.shape)} "
                       f"has {len(logical)} logical axis names {logical}")
    try:
      return logical_to_spec(logical, resolved)
    except ValueError as e:
      raise ValueError(f"parameter {jax.tree_util.keystr(path)}: {e}") from None

  return jax.tree_util.tree_map_with_path(one, state, is_leaf=_is_var)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """`spec` with every dimension that its mesh axes do not divide evenly replicated instead.

  E.g. Gemma 3 1B has one kv head: with tensor=4 its kv projections are replicated over
  "tensor" rather than failing. Parameters are small relative to such meshes, so this is safe.
  """
  out = []
  for i, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    n = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
    out.append(axes if shape[i] % n == 0 else None)
  while out and out[-1] is None:
    out.pop()
  return PartitionSpec(*out)


def state_shardings(state: Any, mesh: Mesh, rules: Mapping[str, Any] | None = None) -> Any:
  """NamedSharding for each leaf of an nnx State (unevenly divisible dims replicated)."""
  specs = state_specs(state, rules)

  def one(v, spec):
    value = v.get_value() if _is_var(v) else v
    shape = tuple(getattr(value, "shape", ()))
    return NamedSharding(mesh, fit_spec(spec, shape, mesh))

  return jax.tree.map(one, state, specs, is_leaf=_is_var)


def abstract_model(init_fn: Callable[[], nnx.Module], mesh: Mesh,
                   rules: Mapping[str, Any] | None = None) -> tuple[Any, Any, Any]:
  """(graphdef, abstract state with shardings, shardings) without allocating anything."""
  with nnx.use_eager_sharding(False):
    abs_model = nnx.eval_shape(init_fn)
  graphdef, abs_state = nnx.split(abs_model)
  shardings = state_shardings(abs_state, mesh, rules)

  def with_sharding(v, s):
    return v.replace(jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype, sharding=s))

  abs_state = jax.tree.map(with_sharding, abs_state, shardings, is_leaf=_is_var)
  return graphdef, abs_state, shardings


def create_sharded(init_fn: Callable[[], nnx.Module], mesh: Mesh,
                   rules: Mapping[str, Any] | None = None) -> nnx.Module:
  """Runs `init_fn` under jit with out_shardings, so every parameter is born sharded."""
  graphdef, _, shardings = abstract_model(init_fn, mesh, rules)

  def init():
    with nnx.use_eager_sharding(False):
      return nnx.state(init_fn())

  state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def create_for_restore(init_fn: Callable[[], nnx.Module], mesh: Mesh,
                       rules: Mapping[str, Any] | None = None) -> nnx.Module:
  """A module whose nnx.Params are abstract (ShapeDtypeStruct with target sharding), ready to
  be filled by a checkpoint restore; any other state (e.g. rng counters) is real. No
  parameter is initialized (XLA drops the unused initializers)."""
  graphdef, abs_state, _ = abstract_model(init_fn, mesh, rules)
  params, rest = nnx.split_state(abs_state, nnx.Param, ...)
  if jax.tree.leaves(rest):
    def init_rest():
      with nnx.use_eager_sharding(False):
        return nnx.state(init_fn(), nnx.Not(nnx.Param))

    rest = jax.jit(init_rest, out_shardings=state_shardings(rest, mesh, rules))()
  return nnx.merge(graphdef, params, rest)


def shard_model_state(model_or_state: Any, mesh: Mesh,
                      rules: Mapping[str, Any] | None = None) -> Any:
  """Moves an existing model (in place; returned) or nnx State onto `mesh` per the rules."""
  if isinstance(model_or_state, nnx.Module):
    state = nnx.state(model_or_state)
    shardings = state_shardings(state, mesh, rules)
    nnx.update(model_or_state, jax.device_put(state, shardings))
    return model_or_state
  shardings = state_shardings(model_or_state, mesh, rules)
  return jax.device_put(model_or_state, shardings)
