"""Per-device memory estimate for a model preset on a mesh: params, optimizer, activations.

Parameter and optimizer bytes are exact up to sharding padding: they come from the model's
abstract state (`nnx.eval_shape`, nothing allocated) and each parameter's sharding under the
rules (`icl_ft.sharding.state_shardings`). AdamW keeps two float32 moments per parameter,
sharded like the parameter; gradients are one more parameter-shaped copy (in the param dtype).

Activations are a formula (an estimate, not a measurement): what a plain (no remat) backward
pass keeps per layer for a Gemma block, plus the logits. Per layer and token, in the compute
dtype: about 10 embed-sized vectors (residual, norm inputs / outputs and their float32
intermediates, attention and MLP outputs), q/k/v ((N + 2K) * H) and the attention output
(N * H) twice (before / after RoPE or norm), and 2 hidden-sized vectors of the gated MLP (gate
and up: `layers.geglu`'s backward recomputes the GELU from the gate); plus 3 float32 [N, L] score
tensors per query token (scores, masked scores, probabilities; the local window bounds nothing
since the mask is applied to full [L, L] scores). The logits add 3 float32 B * L * V tensors
(logits, log-softmax, gradient). Soft-capping (Gemma 2: `cap * tanh(x / cap)`) keeps more for
the backward pass: one more float32 score tensor per layer when attention logits are capped,
and two more B * L * V tensors (the uncapped logits and the tanh) when the final logits are.
With them the estimate of Gemma 2 2B's step (v5p-8 mesh, batch 16 x 512) is 40.3 GiB against
XLA's 34.1 GiB peak (docs/running-on-tpu.md, tests/test_running_on_tpu_doc.py). The
coefficients were calibrated against XLA's temp size for the tiny presets on CPU (within ~20%
there). Batch is divided over the ("data", "fsdp") devices that shard it, and heads / mlp over
"tensor" as the rules say. XLA's real temp usage depends on fusion and scheduling: treat the
activation number as an order-of-magnitude guide (tests check a factor of 4).

Weights in flight (`weights`, training only): with FSDP every layer's parameters are
all-gathered over the batch-sharding axes in the forward pass and kept for the backward pass
(no remat), so the full parameters (still split over "tensor") are live in the parameter
dtype; with a compute dtype narrower than the parameters (bf16 on float32) a cast copy of each
gathered weight is counted too. That copy is an upper bound: `layers.einsum` casts each weight
where it multiplies (again in the backward pass), and XLA need not keep the forward's cast.
The Gemma 3 1B check below still matches with it counted; Gemma 2 2B's dry-run peak on 4
devices fell from 39.2 to 34.1 GiB when the matmuls moved to `layers.einsum`. Gradients of
parameters replicated over a batch axis are summed across devices (an all-reduce into a
second buffer), so `grads` counts those twice. Checked against XLA's temp size for Gemma 3 1B
(bf16 compute, batch 8 x 128) on 8 CPU devices: estimate / XLA = 0.97 with fsdp=8
(all-gathered weights dominate) and 1.10 with data=8 (replicated weights and gradients),
i.e. within 20% (tests/test_dry_run.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from icl_ft import sharding
from icl_ft.model import builder

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes per device."""

  num_params: int
  params: int
  grads: int
  optimizer: int
  activations: int
  weights: int = 0  # training: all-gathered (FSDP) weights and compute-dtype copies kept

  @property
  def total_training(self) -> int:
    return self.params + self.grads + self.optimizer + self.activations + self.weights

  @property
  def total_inference(self) -> int:
    return self.params

  def summary(self) -> str:
    g = lambda b: f"{b / GiB:.3f} GiB"
    return (f"{self.num_params:,} params; per device: params {g(self.params)}, grads {g(self.grads)}, "
            f"AdamW moments {g(self.optimizer)}, gathered / cast weights {g(self.weights)}, "
            f"activations ~{g(self.activations)}, "
            f"training total ~{g(self.total_training)}")


def _shard_bytes(shape, dtype, named_sharding) -> int:
  shard = named_sharding.shard_shape(tuple(shape))
  return int(math.prod(shard)) * np.dtype(dtype).itemsize


def param_bytes(abstract_state: Any, shardings: Any, opt_dtype=np.float32,
                num_moments: int = 2) -> tuple[int, int, int, int]:
  """(num_params, param bytes, grad bytes, optimizer bytes) per device for a sharded state."""
  leaves = jax.tree.leaves(abstract_state)
  shard_leaves = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  n = p = o = 0
  for leaf, s in zip(leaves, shard_leaves):
    n += int(math.prod(leaf.shape))
    p += _shard_bytes(leaf.shape, leaf.dtype, s)
    o += num_moments * _shard_bytes(leaf.shape, opt_dtype, s)
  return n, p, p, o


def _axis_size(mesh: Mesh, axes) -> int:
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return math.prod(mesh.shape[a] for a in axes)


def _softcapped(cfg: Any, field: str) -> int:
  """1 when `cfg.<field>` caps logits (cap * tanh(x / cap)), else 0."""
  return int(bool(getattr(cfg, field, None)))


def activation_bytes(cfg: Any, mesh: Mesh, batch_size: int, seq_len: int,
                     rules: Mapping[str, Any] | None = None) -> int:
  """Formula estimate of activations kept for the backward pass, per device (module doc)."""
  r = sharding.resolve_rules(rules)
  b = batch_size / min(_axis_size(mesh, r.get("batch")), batch_size)
  t = _axis_size(mesh, r.get("heads"))
  tm = _axis_size(mesh, r.get("mlp"))
  tv = _axis_size(mesh, r.get("vocab"))
  act = np.dtype(getattr(cfg, "dtype", "float32") or "float32").itemsize
  d, f, n, k, h = cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  per_token = (10 * d + 2 * ((n + 2 * k) * h + n * h) / t + 2 * f / tm) * act
  # scores, masked scores, probs (+ the capped scores' tanh): float32, per query token
  scores = (3 + _softcapped(cfg, "attn_logit_softcap")) * (n / t) * seq_len * 4
  per_layer = b * seq_len * (per_token + scores)
  logits = (3 + 2 * _softcapped(cfg, "final_logit_softcap")) * b * seq_len * (cfg.vocab_size / tv) * 4
  return int(cfg.num_layers * per_layer + logits)


def _axes_of(entry) -> tuple[str, ...]:
  return (entry,) if isinstance(entry, str) else tuple(entry or ())


def weight_bytes(abstract_state: Any, shardings: Any, mesh: Mesh, compute_dtype: Any,
                 rules: Mapping[str, Any] | None = None) -> tuple[int, int]:
  """(weights in flight, extra gradient buffers) per device for a training step (module doc)."""
  r = sharding.resolve_rules(rules)
  batch_axes = {a for a in _axes_of(r.get("batch")) if mesh.shape[a] > 1}
  leaves = jax.tree.leaves(abstract_state)
  shard_leaves = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  compute = np.dtype(compute_dtype).itemsize
  weights = reduce_extra = 0
  for leaf, s in zip(leaves, shard_leaves):
    used = {a for entry in s.spec for a in _axes_of(entry)}
    kept = math.prod(mesh.shape[a] for a in used if a not in batch_axes)  # e.g. "tensor"
    n_local = math.prod(leaf.shape) / kept  # elements after gathering the batch axes
    item = np.dtype(leaf.dtype).itemsize
    shard = _shard_bytes(leaf.shape, leaf.dtype, s)
    weights += int(n_local * item) - shard  # gathered copy (0 when not sharded over the batch)
    if compute < item:
      weights += int(n_local * compute)  # the compute-dtype cast kept for the backward pass
    if batch_axes - used:  # replicated over a batch axis: gradients are all-reduced
      reduce_extra += shard
  return weights, reduce_extra


def estimate(cfg: Any, mesh: Mesh, batch_size: int, seq_len: int,
             rules: Mapping[str, Any] | None = None, num_moments: int = 2) -> MemoryEstimate:
  """Per-device bytes of params, grads, AdamW moments (float32) and activations."""
  _, abs_state, _ = builder.abstract(cfg, mesh, rules)
  params_state = nnx.filter_state(abs_state, nnx.Param)
  shardings = sharding.state_shardings(params_state, mesh, rules)
  n, p, g, o = param_bytes(params_state, shardings, num_moments=num_moments)
  compute = getattr(cfg, "dtype", "float32") or "float32"
  w, reduce_extra = weight_bytes(params_state, shardings, mesh, compute, rules)
  return MemoryEstimate(num_params=n, params=p, grads=g + reduce_extra, optimizer=o,
                        activations=activation_bytes(cfg, mesh, batch_size, seq_len, rules),
                        weights=w)
