"""Batched autoregressive decoding with the KV cache: prefill, then one compiled decode loop.

    sampler = Sampler(model, tokenizer, batch_size=32, mesh=mesh)
    context = sampler.prefill("shared text ...")          # once (None: BOS only)
    outs = sampler.generate(prompts, SamplingParams(max_new_tokens=64, stop=("\\n\\n",)),
                            context=context)              # any number of calls reuse it

Every row is `[BOS] + context + prompt + generated`. The context is tokenized separately
from each prompt and prefilled once at batch 1 (`prefill.prefill_context`, chunked, the same
code as the scorer) and every row attends it as a shared prefix (`model(..., prefix=)`: read
once per step for all rows, never repeated to the batch); each batch's rows get their own
cache for prompt and generated tokens only (on a mesh, born sharded along the batch), the
prompts are right-padded to a bucketed length and prefilled in one call (padding has
segment id 0, so it is never attended), and then a
`jax.lax.while_loop` inside one jit samples a token, updates the per-row stop state and
runs the model on that token, until `max_new_tokens` or every row has stopped. Positions
continue each row's own text (`n_ctx + len(prompt) + t`), so padding changes nothing.

Stop strings are matched inside the loop exactly, on bytes: each stop string is a KMP
automaton whose transition over a whole token is precomputed per (state, token id) from the
token's bytes (`stop_tables`), so a row stops on the token that completes the string however
the tokenizer splits it. EOS also stops a row. Returned text is cut before the first stop
string.

Sampling: greedy (`temperature == 0`) or softmax(logits / temperature) restricted to the
smallest top-probability set of mass >= `top_p`. Row i of a `generate` call draws from
`fold_in(fold_in(PRNGKey(seed), i), step)`: the same seed gives the same text regardless of
batch size, mesh, or how the prompts are split into batches.

Longer than 450 lines: the decode loop, its stop automaton and its sampling rule are one
compiled program, kept in one file so the loop's state reads in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from icl_ft.inference import prefill
from icl_ft.model import config as model_config
from icl_ft.model import layers

FINISH_REASONS = ("stop", "eos", "length")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to decode: length, temperature / nucleus, stop strings, seed."""

  max_new_tokens: int = 128
  temperature: float = 0.0  # 0 = greedy (argmax)
  top_p: float = 1.0  # nucleus mass; 1 = the whole distribution
  stop: tuple[str, ...] = ()  # a row stops on the token that completes any of these
  stop_at_eos: bool = True
  seed: int = 0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if isinstance(self.stop, str):
      object.__setattr__(self, "stop", (self.stop,))
    if any(not s for s in self.stop):
      raise ValueError(f"stop strings must be non-empty, got {self.stop!r}")
    object.__setattr__(self, "stop", tuple(self.stop))

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self) | {"stop": list(self.stop)}


@dataclasses.dataclass(frozen=True)
class Completion:
  """One generated continuation."""

  text: str  # decoded, cut before the first stop string
  token_ids: tuple[int, ...]  # generated tokens, including the stopping one
  finish_reason: str  # "stop" | "eos" | "length"


@dataclasses.dataclass(frozen=True)
class PrefilledContext:
  """A shared context in a batch-1 KV cache (reuse it across `generate` calls)."""

  ids: tuple[int, ...]  # [BOS] + context tokens
  cache: Any  # batch-1 KVCache of the context: `slots` slots, all written
  logprobs: jax.Array  # [V] log p(. | context)
  slots: int  # padded context length in the cache
  room: int  # prompt + generated tokens the context leaves within the model's max length

  @property
  def num_tokens(self) -> int:
    return len(self.ids)


# ---------------------------------------------------------------------------
# Stop strings: per-token KMP transitions
# ---------------------------------------------------------------------------


def token_bytes(tokenizer: Any) -> list[bytes]:
  """The bytes each token id contributes to decoded text (control ids: none)."""
  control = {int(tokenizer.bos_id), int(tokenizer.eos_id), int(tokenizer.pad_id)}
  out = []
  for i in range(int(tokenizer.vocab_size)):
    piece = tokenizer.id_to_piece(i)
    m = _BYTE_PIECE.match(piece)
    if i in control:
      out.append(b"")
    elif m:
      out.append(bytes([int(m.group(1), 16)]))
    else:
      out.append(piece.replace("\u2581", " ").encode("utf-8"))
  return out


def _kmp_failure(pattern: bytes) -> list[int]:
  fail = [0] * len(pattern)
  k = 0
  for i in range(1, len(pattern)):
    while k and pattern[i] != pattern[k]:
      k = fail[k - 1]
    if pattern[i] == pattern[k]:
      k += 1
    fail[i] = k
  return fail


def stop_tables(pieces: Sequence[bytes], stops: Sequence[str], vocab_rows: int) -> np.ndarray:
  """int32 [S, M, vocab_rows]: KMP state after a token, per stop string and state.

  State q < len(stop) = bytes of the stop string matched so far; a transition reaching
  len(stop) means the token completed it (M = the longest stop string's length rounded up
  to a multiple of 8; rows past a stop string's length are unused). Ids past the tokenizer (padding rows) keep
  the state.
  """
  patterns = [s.encode("utf-8") for s in stops]
  m_max = -(-max(len(p) for p in patterns) // 8) * 8  # bucketed: fewer compiled shapes
  table = np.zeros((len(patterns), m_max, vocab_rows), np.int32)
  for si, pat in enumerate(patterns):
    fail = _kmp_failure(pat)
    m = len(pat)
    # delta[q][byte]: the byte-level automaton (dense only over the bytes that occur).
    delta: dict[tuple[int, int], int] = {}

    def step(q: int, b: int) -> int:
      key = (q, b)
      if key not in delta:
        k = q
        while k and pat[k] != b:
          k = fail[k - 1]
        delta[key] = k + 1 if pat[k] == b else 0
      return delta[key]

    for q in range(m):
      for v in range(vocab_rows):
        if v >= len(pieces):
          table[si, q, v] = q
          continue
        s = q
        for b in pieces[v]:
          s = step(s, b)
          if s == m:
            break
        table[si, q, v] = s
  return table


@functools.lru_cache(maxsize=16)
def _cached_tables(tokenizer_key: int, stops: tuple[str, ...], vocab_rows: int,
                   pieces: tuple[bytes, ...]) -> np.ndarray:
  del tokenizer_key
  return stop_tables(pieces, stops, vocab_rows)


# ---------------------------------------------------------------------------
# Compiled steps
# ---------------------------------------------------------------------------


def _sample(logits: jax.Array, row_keys: jax.Array, step: jax.Array, temperature: jax.Array,
            top_p: jax.Array, greedy: jax.Array) -> jax.Array:
  """Token ids [B] from logits [B, V] (any per-row shift); `greedy` (a traced bool) picks argmax.

  `lax.cond` runs one branch, so greedy decoding never pays for the nucleus sort nor for the
  step's random keys (row i draws with `fold_in(row_keys[i], step)`), and greedy and sampled
  decoding share one compiled program.
  """

  def argmax(logits):
    return layers.argmax(logits)

  def nucleus(logits):
    keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(row_keys)
    scaled = logits.astype(jnp.float32) / temperature
    probs = jax.nn.softmax(scaled, axis=-1)
    sorted_probs = jnp.sort(probs, axis=-1)[:, ::-1]  # [B, V] descending
    before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass of the larger ones
    kept = jnp.where(before < top_p, sorted_probs, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)  # smallest kept probability
    scaled = jnp.where(probs >= threshold, scaled, -jnp.inf)
    return jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)

  return jax.lax.cond(greedy, argmax, nucleus, logits)


def phase_bounds(prompt_slots: int, max_new: int) -> tuple[int, ...]:
  """Own-cache slots of each decode phase: doubling from the prompt's bucket to all it needs.

  A decode step attends every slot of the rows' own cache, written or not, so the loop runs
  in phases whose caches grow (prompt + generated tokens so far, rounded up to the next bound):
  early steps read a short cache. Doubling keeps the phases (each its own compiled loop body)
  few -- at most log2(total / prompt) + 1 -- and each one halves what the steps before it read.
  """
  total = prompt_slots + max_new  # the last step writes slot total - 1
  bounds, bound = [], max(int(prompt_slots), 1)
  while bound * 2 < total:
    bound *= 2
    bounds.append(bound)
  return (*bounds, total)


def _grow(cache: Any, slots: int) -> Any:
  """`cache` with empty slots appended up to `slots` (segment id 0: never attended)."""
  extra = slots - cache.max_len

  def pad(x, axis):
    return jnp.pad(x, [(0, extra if a == axis else 0) for a in range(x.ndim)])

  return dataclasses.replace(cache, k=tuple(pad(x, 3) for x in cache.k),  # [B, K, H, S]
                             v=tuple(pad(x, 2) for x in cache.v),
                             positions=pad(cache.positions, 1),
                             segment_ids=pad(cache.segment_ids, 1))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _generate_fn(graphdef, max_new, state, prefix, cache, ctx_logprobs, tokens, positions,
                 segments, lengths, row_ids, active, allowed, tables, stop_lengths, eos_id, seed,
                 greedy, temperature, top_p):
  """Prompt prefill + the decode loop; (generated [B, T], counts [B], reasons [B], steps).

  prefix: the batch-1 context cache every row continues; cache: the rows' own (empty) cache
  for the prompt, `bounds[0]` slots. The decode runs in phases, bounds = `phase_bounds(prompt
  slots, max_new)`: phase i's steps write slots [bounds[i-1], bounds[i]) of a cache of bounds[i]
  slots (bounds[-1] = prompt + max_new). lengths [B]: real prompt tokens per row (0: the first
  token comes from the context). active [B]: false on the batch's padding rows (they start
  done). eos_id: -1 = none. reasons: 0 length, 1 stop, 2 eos.
  """
  model = nnx.merge(graphdef, state)
  b, p_len = tokens.shape
  bounds = phase_bounds(p_len, max_new)
  # The logits of each row's last prompt token only: [B, 1, V].
  last, cache = model(tokens, positions, segments, cache=cache, prefix=prefix,
                      logits_at=jnp.maximum(lengths - 1, 0))
  last = last[:, 0]
  # [B, V]: a row's logits, or the context's log-probs; both are fine, as sampling from
  # logits is the same after any per-row shift (so the loop never normalizes them).
  first = jnp.where((lengths > 0)[:, None], last.astype(jnp.float32), ctx_logprobs[None])
  next_pos = positions[:, 0] + lengths  # [B]: position of the first generated token
  row_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(row_ids)
  num_stops = tables.shape[0]

  def body(carry, recent):
    t, cache, logits, stop_state, done, out, counts, reasons = carry
    logits = jnp.where(allowed[None], logits, -jnp.inf)
    tok = _sample(logits, row_keys, t, temperature, top_p, greedy)
    tok = jnp.where(done, 0, tok)
    out = out.at[:, t].set(tok)
    # Per stop string s: state[b, s] <- tables[s, state[b, s], tok[b]].
    new_state = tables[jnp.arange(num_stops)[None, :], stop_state, tok[:, None]]  # [B, S]
    hit_stop = jnp.any(new_state >= stop_lengths[None, :], axis=-1)
    hit_eos = tok == eos_id
    reason = jnp.where(hit_stop, 1, jnp.where(hit_eos, 2, 0))
    finished = ~done & (reason > 0)
    reasons = jnp.where(finished, reason, reasons)
    counts = jnp.where(done, counts, t + 1)
    done = done | finished
    stop_state = jnp.minimum(new_state, stop_lengths[None, :] - 1)
    pos = (next_pos + t)[:, None]
    logits, cache = model(tok[:, None], pos, jnp.ones_like(pos), cache=cache, prefix=prefix,
                          local_recent=recent)
    return t + 1, cache, logits[:, 0], stop_state, done, out, counts, reasons

  carry = (jnp.zeros((), jnp.int32), cache, first, jnp.zeros((b, num_stops), jnp.int32),
           ~active, jnp.zeros((b, max_new), jnp.int32), jnp.zeros((b,), jnp.int32),
           jnp.zeros((b,), jnp.int32))
  local = model_config.LOCAL in model.config.attention_types
  window = model.config.sliding_window if local else None  # one window for all local layers
  start = 0
  for bound in bounds:
    # Steps t < bound - p_len write slots < bound: this phase's loop runs them on a cache of
    # `bound` slots (the one before, grown), so each step reads only those.
    end = bound - p_len
    # From step `window` on, a local layer's window holds only the last `window` generated
    # tokens (slots p_len + t - window + 1 .. p_len + t): neither the prompt nor the context.
    recent = window if window is not None and start >= window else None

    def cond(carry, end=end):
      t, _, _, _, done, *_ = carry
      return (t < end) & ~jnp.all(done)

    carry = (carry[0], _grow(carry[1], bound), *carry[2:])
    carry = jax.lax.while_loop(cond, functools.partial(body, recent=recent), carry)
    start = end
  t, _, _, _, _, out, counts, reasons = carry
  return out, counts, reasons, t


# ---------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------


class Sampler:
  """Generates continuations of prompts, optionally after a shared prefilled context.

  Args:
    model: the Transformer (`init_cache`, `__call__(..., cache=)`).
    tokenizer: a Tokenizer (`encode_batch`, `decode`, `id_to_piece`, special ids).
    batch_size: rows per compiled call (fixed; the last batch is padded). On a mesh, a
      multiple of the data-parallel size (data x fsdp).
    max_len: the model's maximum sequence length (default `model.config.max_seq_len`).
    prefill_chunk: context tokens per prefill call.
    mesh, rules: shard batches and the cache on this mesh (None: default placement).
  """

  def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 32,
               max_len: int | None = None, prefill_chunk: int = 1024, mesh: Any = None,
               rules: Any = None):
    self.tokenizer = tokenizer
    self.batch_size = int(batch_size)
    self._mesh = prefill.Placement(mesh, rules)
    prefill.check_batch(self.batch_size, self._mesh)
    self.max_len = prefill.model_max_len(model) if max_len is None else int(max_len)
    self.prefill_chunk = int(prefill_chunk)
    self._graphdef, self._state = nnx.split(model)
    self._init_cache = model.init_cache
    self._empty: dict[int, Any] = {}
    self.vocab_rows = int(model.config.vocab_size)
    n_tok = int(tokenizer.vocab_size)
    if n_tok > self.vocab_rows:
      raise ValueError(f"tokenizer has {n_tok} pieces but the model only {self.vocab_rows} rows")
    allowed = np.arange(self.vocab_rows) < n_tok  # never sample padding rows
    self._allowed = allowed
    self._pieces: tuple[bytes, ...] | None = None
    self.stats = {"prefill_s": 0.0, "decode_s": 0.0, "rows": 0, "generated_tokens": 0,
                  "decode_steps": 0}

  @staticmethod
  def compiles() -> int:
    """Compiled variants of the generate step so far (all samplers of this process)."""
    return _generate_fn._cache_size()  # pylint: disable=protected-access

  # -- context -------------------------------------------------------------
  def prefill(self, context: str | None = None, *, room: int = 512,
              context_ids: Sequence[int] | None = None) -> PrefilledContext:
    """Prefills `[BOS] + context` once, leaving `room` cache slots for prompt + generation."""
    ids = (list(context_ids) if context_ids is not None
           else prefill.encode_context(self.tokenizer, context))
    room = int(room)
    if self.max_len is not None and len(ids) + room > self.max_len:
      raise prefill.ContextTooLongError(
          f"context ({len(ids)} tokens incl. BOS) plus room for prompt and generation ({room} "
          f"tokens) is {len(ids) + room} tokens, {len(ids) + room - self.max_len} more than the "
          f"model's maximum length {self.max_len}",
          context_tokens=len(ids), question_tokens=room, max_len=self.max_len)
    start = time.perf_counter()
    with self._mesh.context():
      cache, logprobs, slots = prefill.prefill_context(
          self._graphdef, self._state, ids, chunk=self.prefill_chunk)
    jax.block_until_ready(logprobs)
    self.stats["prefill_s"] += time.perf_counter() - start
    return PrefilledContext(tuple(ids), cache, logprobs, slots, room)

  # -- generation ------------------------------------------------------------
  def _empty_cache(self, length: int) -> Any:
    """The rows' own empty cache of `length` slots (made once per length: never donated,
    so every batch starts from the same one)."""
    if length not in self._empty:
      make = functools.partial(self._init_cache, self.batch_size, length)
      self._empty[length] = self._mesh.new(make, self.batch_size)
    return self._empty[length]

  def _tables(self, stops: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    if not stops:  # a never-completed dummy automaton (same shapes as one short stop string)
      return np.zeros((1, 8, self.vocab_rows), np.int32), np.full((1,), 1 << 30, np.int32)
    if self._pieces is None:
      self._pieces = tuple(token_bytes(self.tokenizer))
    table = _cached_tables(id(self.tokenizer), stops, self.vocab_rows, self._pieces)
    return table, np.asarray([len(s.encode("utf-8")) for s in stops], np.int32)

  def generate(self, prompts: Sequence[str], params: SamplingParams = SamplingParams(), *,
               context: PrefilledContext | None = None, progress: bool = False,
               desc: str = "sampling") -> list[Completion]:
    """Completions of each prompt after `context` (None: `[BOS]` only), in order."""
    prompts = list(prompts)
    ids = self.tokenizer.encode_batch(prompts) if prompts else []
    return self.generate_ids(ids, params, context=context, progress=progress, desc=desc)

  def generate_ids(self, prompt_ids: Sequence[Sequence[int]],
                   params: SamplingParams = SamplingParams(), *,
                   context: PrefilledContext | None = None, progress: bool = False,
                   desc: str = "sampling") -> list[Completion]:
    """`generate` for already tokenized prompts."""
    prompt_ids = [list(p) for p in prompt_ids]
    if not prompt_ids:
      return []
    t_new = int(params.max_new_tokens)
    longest = max(len(p) for p in prompt_ids)
    p_len = prefill.bucket_length(longest)
    if context is None:
      context = self.prefill(None, room=p_len + t_new)
    if p_len + t_new > context.room:
      # The bucket may exceed the room; the exact need is what must fit.
      if longest + t_new > context.room:
        raise prefill.ContextTooLongError(
            f"longest prompt ({longest} tokens) plus max_new_tokens ({t_new}) is "
            f"{longest + t_new} tokens, more than the {context.room} slots left after the context",
            context_tokens=context.num_tokens, question_tokens=longest + t_new,
            max_len=context.num_tokens + context.room)
      p_len = context.room - t_new
    tables, stop_lengths = self._tables(params.stop)
    greedy = params.temperature == 0
    eos = np.int32(self.tokenizer.eos_id if params.stop_at_eos else -1)
    b = self.batch_size
    n_ctx = context.num_tokens
    # Longest prompts first: batches of similar length; results go back in input order.
    order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
    results: list[Completion | None] = [None] * len(prompt_ids)
    bar = None
    if progress:
      bar = tqdm(total=len(prompt_ids), desc=desc, unit="row")
    start = time.perf_counter()
    with self._mesh.context():
      for s in range(0, len(order), b):
        batch = order[s:s + b]
        tokens = np.zeros((b, p_len), np.int32)
        segments = np.zeros((b, p_len), np.int32)
        lengths = np.zeros((b,), np.int32)
        rows = np.zeros((b,), np.int32)
        active = np.zeros((b,), bool)
        active[:len(batch)] = True
        for j, i in enumerate(batch):
          k = len(prompt_ids[i])
          tokens[j, :k] = prompt_ids[i]
          segments[j, :k] = 1
          lengths[j] = k
          rows[j] = i
        positions = np.tile(n_ctx + np.arange(p_len, dtype=np.int32), (b, 1))
        put = self._mesh.batch
        out, counts, reasons, steps = _generate_fn(
            self._graphdef, t_new, self._state, context.cache,
            self._empty_cache(phase_bounds(p_len, t_new)[0]),
            context.logprobs, put(tokens), put(positions), put(segments), put(lengths),
            put(rows), put(active), self._allowed,
            tables, stop_lengths, eos, np.uint32(params.seed), np.bool_(greedy),
            np.float32(max(params.temperature, 1e-6)), np.float32(params.top_p))
        out, counts = self._mesh.fetch(out), self._mesh.fetch(counts)
        reasons = self._mesh.fetch(reasons)
        self.stats["decode_steps"] += int(steps)
        for j, i in enumerate(batch):
          gen = [int(x) for x in out[j, :counts[j]]]
          results[i] = self._completion(gen, int(reasons[j]), params.stop)
          self.stats["generated_tokens"] += len(gen)
        self.stats["rows"] += len(batch)
        if bar is not None:
          bar.update(len(batch))
    if bar is not None:
      bar.close()
    self.stats["decode_s"] += time.perf_counter() - start
    return results  # type: ignore[return-value]

  def _completion(self, gen: list[int], reason: int, stops: tuple[str, ...]) -> Completion:
    eos = int(self.tokenizer.eos_id)
    text = self.tokenizer.decode([t for t in gen if t != eos])
    cut = [text.index(s) for s in stops if s in text]
    if cut:
      text = text[:min(cut)]
    return Completion(text, tuple(gen), {0: "length", 1: "stop", 2: "eos"}[reason])


def generate(model: Any, tokenizer: Any, prompts: Sequence[str],
             params: SamplingParams = SamplingParams(), *, context: str | None = None,
             batch_size: int = 32, mesh: Any = None, rules: Any = None,
             progress: bool = False) -> list[Completion]:
  """Completions of `prompts` after a shared `context` (prefilled once)."""
  sampler = Sampler(model, tokenizer, batch_size=batch_size, mesh=mesh, rules=rules)
  ids = tokenizer.encode_batch(list(prompts)) if prompts else []
  room = prefill.bucket_length(max((len(p) for p in ids), default=1)) + params.max_new_tokens
  if sampler.max_len is not None:
    n_ctx = len(prefill.encode_context(tokenizer, context))
    room = min(room, max(sampler.max_len - n_ctx, 0))
  prefilled = sampler.prefill(context, room=room)
  return sampler.generate_ids(ids, params, context=prefilled, progress=progress)
