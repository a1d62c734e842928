"""What scoring and sampling share: the context prefill, its budget, bucketing, placement.

Every row the scorer (icl_ft.inference.scoring) or the sampler (icl_ft.inference.sampling) runs
is `[BOS] + context + continuation`. The context is tokenized on its own (`encode_context`)
and prefilled once into a batch-1 KV cache (`prefill_context`: full `chunk`-token calls, then
the rest padded to its bucket), which every row then attends as a shared prefix. Lengths are
padded to buckets (`bucket_length`: powers of two up to 1024, then multiples of 512) so few
shapes are compiled. `check_length` is the context budget: the context plus the longest
continuation must fit the model's maximum length, else `ContextTooLongError` (with the token
counts, so callers can shrink the context). `Placement` puts inputs on an optional mesh:
batches sharded over ("data", "fsdp") (`sharding.data_sharding`), the batch-1 cache
replicated; a batch size must be a multiple of the data-parallel size (`check_batch`).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from icl_ft import sharding


class ContextTooLongError(ValueError):
  """The context plus the longest question does not fit the model's maximum length."""

  def __init__(self, message: str, *, context_tokens: int, question_tokens: int, max_len: int):
    super().__init__(message)
    self.context_tokens = context_tokens
    self.question_tokens = question_tokens
    self.max_len = max_len

  @property
  def excess(self) -> int:
    return self.context_tokens + self.question_tokens - self.max_len


def bucket_length(n: int, minimum: int = 16) -> int:
  """Padded length for n tokens: a power of two up to 1024, then a multiple of 512."""
  n = max(int(n), 1)
  if n <= 1024:
    return max(minimum, 1 << (n - 1).bit_length())
  return 512 * math.ceil(n / 512)


# ---------------------------------------------------------------------------
# Tokens and the context budget
# ---------------------------------------------------------------------------


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
  """Token ids of each text (no BOS), batched when the tokenizer can."""
  if hasattr(tokenizer, "encode_batch"):
    return [list(x) for x in tokenizer.encode_batch(list(texts))]
  return [list(tokenizer.encode(t)) for t in texts]


def encode_context(tokenizer: Any, context: str | None) -> list[int]:
  """[BOS] + tokens of the context ("" / None: just BOS)."""
  return [int(tokenizer.bos_id)] + (encode_texts(tokenizer, [context])[0] if context else [])


def check_length(context_tokens: int, rows: Sequence[Any], max_len: int | None,
                 what: str = "context") -> None:
  """Raises ContextTooLongError if context + the longest suffix exceeds `max_len`.

  `rows` are the continuations to score or sample after the context (anything with a
  `suffix` of token ids, e.g. `icl_ft.inference.scoring.encode_questions`' rows).
  """
  if max_len is None or not rows:
    return
  longest = max(len(r.suffix) for r in rows)
  if context_tokens + longest > max_len:
    over = context_tokens + longest - max_len
    raise ContextTooLongError(
        f"{what} ({context_tokens} tokens incl. BOS) plus the longest question ({longest} tokens) "
        f"is {context_tokens + longest} tokens, {over} more than the model's maximum length {max_len}",
        context_tokens=context_tokens, question_tokens=longest, max_len=max_len)


def model_max_len(model: Any) -> int | None:
  """The model's maximum sequence length (`config.max_seq_len`), None if it declares none."""
  cfg = getattr(model, "config", None) or getattr(model, "cfg", None)
  value = getattr(cfg, "max_seq_len", None)
  return int(value) if value else None


# ---------------------------------------------------------------------------
# Placement and the prefill
# ---------------------------------------------------------------------------


class Placement:
  """Where inputs go: an optional mesh (and rules), its context, input shardings, fetches."""

  def __init__(self, mesh: Any, rules: Any):
    self.mesh = mesh
    self.rules = rules

  def context(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    return sharding.use_mesh(self.mesh, self.rules)

  def batch(self, x: np.ndarray) -> jax.Array:
    """A global [B, ...] array from the (identical on every process) host batch."""
    if self.mesh is None:
      return jnp.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding.data_sharding(self.mesh, self.rules),
                                        lambda index: x[index])

  @staticmethod
  def fetch(x: jax.Array) -> np.ndarray:
    """A (possibly sharded across processes) result as a host numpy array."""
    if jax.process_count() > 1 and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  def data_parallel(self) -> int:
    """How many batch shards (1 without a mesh)."""
    if self.mesh is None:
      return 1
    return sharding.data_parallel_size(self.mesh, self.rules)

  def new(self, make: Any, batch: int) -> Any:
    """The pytree `make()` builds (e.g. an empty [batch, ...] KV cache), created under jit;
    on a mesh, leaves with a leading `batch` dimension are born sharded along the batch."""
    if self.mesh is None:
      return jax.jit(make)()
    batch_axes = sharding.data_sharding(self.mesh, self.rules).spec[0]

    def one(x):
      spec = PartitionSpec(batch_axes) if x.ndim >= 1 and x.shape[0] == batch else PartitionSpec()
      return NamedSharding(self.mesh, spec)

    return jax.jit(make, out_shardings=jax.tree.map(one, jax.eval_shape(make)))()


def prefill_context(graphdef: Any, state: Any, context_ids: Sequence[int], *, chunk: int = 1024
                    ) -> tuple[Any, jax.Array, int]:
  """Prefills `context_ids` into a batch-1 KV cache, in chunks; (cache, logprobs, slots).

  Full `chunk`-token calls, then the rest padded to its bucket (segment id 0), so the cache
  holds few empty slots. The cache has `slots` entries (the padded context length,
  `end_index`), all written: callers attend it as a shared prefix (`model(..., prefix=)`), so
  it needs no room after the context; `logprobs` [V] is log p(. | context) at its last token. Call
  under the mesh context (`Placement.context()`) when sharded; shared by the scorer
  (icl_ft.inference.scoring) and the sampler (icl_ft.inference.sampling).
  """
  ids = list(context_ids)
  n = len(ids)
  if n < 1:
    raise ValueError("the context needs at least one token (BOS)")
  chunk = max(int(chunk), 1)
  sizes = [chunk] * (n // chunk)
  if n % chunk:
    sizes.append(min(bucket_length(n % chunk), chunk) if sizes else bucket_length(n))
  padded = sum(sizes)
  tokens = np.zeros((1, padded), np.int32)
  tokens[0, :n] = ids
  positions = np.arange(padded, dtype=np.int32)[None]
  segments = (np.arange(padded) < n).astype(np.int32)[None]
  model = nnx.merge(graphdef, state)
  cache = model.init_cache(1, padded)
  first, start = None, 0
  for size in sizes:
    sl = slice(start, start + size)
    last = min(n - 1 - start, size - 1)  # the context's last token in the final chunk
    first, cache = _prefill_fn(graphdef, state, cache, tokens[:, sl], positions[:, sl],
                               segments[:, sl], np.int32(last))
    start += size
  return cache, first, padded


def check_batch(batch_size: int, placement: Placement) -> None:
  """ValueError unless `batch_size` is a positive multiple of the data-parallel size."""
  dp = placement.data_parallel()
  if batch_size < 1 or batch_size % dp:
    raise ValueError(f"batch_size {batch_size} must be a positive multiple of the data-parallel "
                     f"size {dp} (mesh axes data x fsdp)")


# The jitted step is module-level with the model's graphdef static, so every prefill of the
# same model architecture shares its compilations.


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(2,))
def _prefill_fn(graphdef, state, cache, tokens, positions, segments, last):
  """One context chunk into the cache; log p(. | context so far) at in-chunk index `last`."""
  model = nnx.merge(graphdef, state)
  logits, cache = model(tokens, positions, segments, cache=cache, logits_at=last[None])
  return jax.nn.log_softmax(logits[0, 0].astype(jnp.float32)), cache
