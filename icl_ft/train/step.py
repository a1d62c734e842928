"""The jitted train and eval steps: next-token cross-entropy masked by `loss_mask`.

The model is split once into (graphdef, params, rest) with `nnx.split(model, nnx.Param,
...)`; the step is a pure function of (params, opt_state, batch) compiled once with
`jax.jit(in_shardings, out_shardings, donate_argnums)` under the mesh, so every step reuses
one executable (no retrace) and updates the parameters and optimizer state in place.

Loss: for every position i with loss_mask[b, i] == 1 the model's logits at i predict
tokens[b, i + 1] (`icl_ft.pipeline.loader.next_tokens`); the loss is the mean cross-entropy
over all such positions of the *global* batch (not a mean of per-row means), computed in
float32 whatever the compute dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from icl_ft import sharding as sharding_lib
from icl_ft.pipeline import loader as data_loader


def masked_cross_entropy(logits: jax.Array, tokens: jax.Array, loss_mask: jax.Array
                         ) -> dict[str, jax.Array]:
  """Sums over the masked positions: loss_sum, correct (the target's logit is the row's
  maximum; a tie for it counts), count."""
  logits = logits.astype(jnp.float32)  # [B, L, V]
  targets = data_loader.next_tokens(tokens)  # [B, L]
  mask = loss_mask.astype(jnp.float32)  # [B, L]
  # One max serves the log-normalizer and the hit count: an argmax would be one more pass
  # over [B, L, V]. The log-normalizer does not depend on the max, hence stop_gradient.
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))  # [B, L]
  log_norm = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
  target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # [B, L]
  hits = (target >= top).astype(jnp.float32)
  return {"loss_sum": jnp.sum((log_norm - target) * mask), "correct": jnp.sum(hits * mask),
          "count": jnp.sum(mask)}


def _forward(graphdef, params, rest, batch) -> jax.Array:
  model = nnx.merge(graphdef, params, rest)
  logits, _ = model(batch["tokens"], batch["positions"], batch["segment_ids"])
  return logits


@dataclasses.dataclass
class TrainStep:
  """Compiled train / eval steps for one model structure, optimizer and mesh.

  Call `train(params, opt_state, batch, learning_rate) -> (params, opt_state, metrics)`
  (params and opt_state are donated; `tx` is the optimizer without its learning rate, the
  step applies `-learning_rate * update`) and `eval(params, batch) -> sums`. `metrics` are device scalars:
  loss, accuracy, grad_norm, loss_tokens, tokens (non-padding input tokens).
  """

  graphdef: Any
  rest: Any
  tx: optax.GradientTransformation
  param_shardings: Any
  opt_shardings: Any
  mesh: Any
  rules: Any = None
  train: Callable[..., Any] = dataclasses.field(init=False)
  eval: Callable[..., Any] = dataclasses.field(init=False)

  def __post_init__(self):
    graphdef, tx = self.graphdef, self.tx
    batch_sharding = sharding_lib.data_sharding(self.mesh, self.rules)
    batch_shardings = {k: batch_sharding for k in data_loader.BATCH_KEYS}
    replicated = NamedSharding(self.mesh, PartitionSpec())
    rest_shardings = jax.tree.map(lambda x: getattr(x, "sharding", replicated), self.rest)

    def loss_fn(params, rest, batch):
      logits = _forward(graphdef, params, rest, batch)
      sums = masked_cross_entropy(logits, batch["tokens"], batch["loss_mask"])
      loss = sums["loss_sum"] / jnp.maximum(sums["count"], 1.0)
      return loss, sums

    def train_step(params, opt_state, rest, batch, learning_rate):
      (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, batch)
      updates, opt_state = tx.update(grads, opt_state, params)
      updates = jax.tree.map(lambda u: (-learning_rate * u).astype(u.dtype), updates)
      params = optax.apply_updates(params, updates)
      metrics = {
          "loss": loss,
          "accuracy": sums["correct"] / jnp.maximum(sums["count"], 1.0),
          "grad_norm": optax.tree.norm(grads),
          "loss_tokens": sums["count"],
          "tokens": jnp.sum((batch["segment_ids"] > 0).astype(jnp.float32)),
      }
      return params, opt_state, metrics

    def eval_step(params, rest, batch):
      logits = _forward(graphdef, params, rest, batch)
      return masked_cross_entropy(logits, batch["tokens"], batch["loss_mask"])

    self._train = jax.jit(
        train_step,
        in_shardings=(self.param_shardings, self.opt_shardings, rest_shardings, batch_shardings,
                      replicated),
        out_shardings=(self.param_shardings, self.opt_shardings, replicated),
        donate_argnums=(0, 1))
    self._eval = jax.jit(
        eval_step, in_shardings=(self.param_shardings, rest_shardings, batch_shardings),
        out_shardings=replicated)
    self.train = self._train_call
    self.eval = self._eval_call

  def _use_mesh(self):
    return sharding_lib.use_mesh(self.mesh, self.rules)

  def _train_call(self, params, opt_state, batch: Mapping[str, jax.Array], learning_rate: float):
    with self._use_mesh():
      batch = {k: batch[k] for k in data_loader.BATCH_KEYS}
      return self._train(params, opt_state, self.rest, batch, np.float32(learning_rate))

  def _eval_call(self, params, batch: Mapping[str, jax.Array]):
    with self._use_mesh():
      return self._eval(params, self.rest, {k: batch[k] for k in data_loader.BATCH_KEYS})

  def cache_size(self) -> int:
    """Number of compiled train-step executables (1 after the first step: no retrace)."""
    return self._train._cache_size()  # pylint: disable=protected-access


def split_model(model: nnx.Module) -> tuple[Any, nnx.State, nnx.State]:
  """(graphdef, Param state, everything else) of a model."""
  return nnx.split(model, nnx.Param, ...)


def opt_state_shardings(tx: optax.GradientTransformation, abstract_params: Any,
                        param_shardings: Any, mesh) -> tuple[Any, Any]:
  """(abstract opt_state with shardings, its shardings): moments follow the parameters.

  Leaves that mirror a parameter (Adam's mu and nu) get that parameter's sharding; all
  others (step counts) are replicated. Nothing is allocated.
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract = jax.eval_shape(tx.init, abstract_params)
  shardings = optax.tree_map_params(
      tx, lambda _, s: s, abstract, param_shardings,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings
