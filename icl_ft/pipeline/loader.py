"""grain input pipeline: Dataset -> format -> tokenize -> pack -> global batches on the mesh.

    it = loader.make_train_iterator(dataset, tokenizer, fmt="split_independent", seq_len=256,
                                    global_batch_size=16, seed=0)
    batch = next(it)                       # host-local numpy TrainBatch, [B / process_count, L]
    arrays = loader.to_global(batch, mesh)  # global jax.Arrays, batch sharded over (data, fsdp)
    state = it.get_state(); ...; it.set_state(state)   # exact resume (JSON-serializable state)

Pipeline (all grain, in this order):

1. `formats.examples(dataset, fmt)` -> examples; each is tokenized once, eagerly:
   `[BOS] + encode(context) + encode(target) + [EOS]` (context and target are encoded
   separately, so the boundary never merges into one piece).
2. `grain.MapDataset.source(...).shuffle(seed).repeat(num_epochs)`: a fresh permutation per
   epoch (grain reseeds the shuffle with `seed + epoch`), epochs back to back.
3. `packing.PackIterDataset`: many whole examples per row of `seq_len` tokens;
   `num_packing_bins` rows are open at a time (default: about one epoch's worth of rows,
   clamped to [8, 64]); an example goes into the row it fills most tightly, and when it fits
   in none the fullest row is emitted and the example starts a new one.
4. `.batch(global_batch_size)`; a final short batch is padded with empty rows (all zeros).
5. Each host keeps its contiguous slice of rows of every global batch.

Every host packs the *global* stream and keeps its slice (rather than packing a shard of the
examples): all hosts produce the same number of batches, epochs end at the same step on every
host, and the global batches are identical whatever the number of processes. The datasets are
small (thousands of short examples), so packing everything on every host is cheap.

Epochs: examples of epoch e all come before those of epoch e+1 in the stream, but packing and
batching run across the boundary (a row may hold the last examples of one epoch and the first
of the next; no padding is spent on epoch ends). With a finite `num_epochs`, every example
appears exactly `num_epochs` times in total and the iterator then ends.

Too-long examples: an example with more than `seq_len` tokens raises a ValueError at
construction (naming the longest one), never truncated or split: splitting would drop context
the loss relies on. Choose `seq_len` from the data.

Batch layout: see `TrainBatch`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

import grain
import jax
import jax.numpy as jnp
import numpy as np

from icl_ft import sharding
from icl_ft.datasets import records
from icl_ft.pipeline import formats, packing

BATCH_KEYS: tuple[str, ...] = ("tokens", "positions", "segment_ids", "loss_mask")
EXAMPLE_IDS_KEY = "example_ids"
# Default rows open at a time: about one epoch's worth, clamped to this range. More bins pack
# tighter, but rows open across many epochs of a tiny dataset would interleave those epochs.
MIN_PACKING_BINS, MAX_PACKING_BINS = 8, 64


class TrainBatch(TypedDict):
  """One batch: int32 arrays [B, L] (numpy on the host, jax.Array after `to_global`).

  tokens:      token ids; `pad_id` (0) where segment_ids == 0.
  positions:   position of each token inside its example, restarting at 0 for each
               segment (0 on padding).
  segment_ids: 1..k for the k examples packed into a row (in order), 0 on padding.
  loss_mask:   aligned to the *inputs* (logits): loss_mask[b, i] == 1 iff the prediction made
               at position i, i.e. of the next token tokens[b, i + 1], is trained. That is the
               case exactly when tokens[b, i + 1] is a target token or the EOS ending the
               target, in the same segment. So: run the model on the full row,
               `logits = model(tokens, positions, segment_ids)`, take `targets =
               next_tokens(tokens)` and average the cross-entropy over loss_mask. The last
               token of every segment (its EOS) and padding have loss_mask 0, so the last
               column is always 0 and the shift never crosses a segment boundary.

  With `with_example_ids=True` the batch also has `example_ids`: int32 [B, L], the index (into
  `formats.examples(dataset, fmt)`) of the example each token belongs to, -1 on padding.
  """

  tokens: Any
  positions: Any
  segment_ids: Any
  loss_mask: Any


def next_tokens(tokens):
  """The training targets: `tokens` shifted left by one along the last axis (0 at the end).

  Numpy in, numpy out; anything else goes through jax.numpy.
  """
  if isinstance(tokens, np.ndarray):
    out = np.zeros_like(tokens)
    out[..., :-1] = tokens[..., 1:]
    return out
  return jnp.concatenate([tokens[..., 1:], jnp.zeros_like(tokens[..., :1])], axis=-1)


# ---- dataset loading ---------------------------------------------------------------------


def load_dataset(dataset: Any) -> records.Dataset:
  """The training documents as a `records.Dataset`, from any of the accepted sources.

  Accepts a `records.Dataset`; a dataset directory written by `records.write_dataset`
  (train.jsonl + card.json); a TFDS dataset prepared by `icl_ft.datasets.tfds_builders`
  (array_record) as its builder or its version directory (the one holding
  dataset_info.json); or the random-access source of its `train` split
  (`builder.as_data_source()["train"]`, `tfds.data_source(...)["train"]`).
  """
  if isinstance(dataset, records.Dataset):
    return dataset
  if isinstance(dataset, (str, os.PathLike)):
    path = os.fspath(dataset)
    if os.path.isfile(os.path.join(path, records.CARD_FILE)):
      return records.read_dataset(path, splits=())
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
      raise ValueError(f"{path}: neither a dataset directory ({records.CARD_FILE}) nor a prepared TFDS "
                       "dataset (dataset_info.json)")
    # TFDS (seconds to import) only on this input path; dataset directories do without it.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    try:  # a truncated or corrupted array_record file fails deep in the readers
      return load_dataset(tfds.builder_from_directory(path))
    except Exception as e:  # pylint: disable=broad-except
      detail = " ".join(str(e).split()) or type(e).__name__
      raise ValueError(f"{path}: cannot read the TFDS dataset (a truncated or corrupted "
                       f"array_record file?): {detail}") from e
  if hasattr(dataset, "as_data_source"):  # a TFDS builder
    name = dataset.info.full_name
    dataset = dataset.as_data_source()["train"]
  else:
    name = type(dataset).__name__
  if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
    # tfds_builders imports TFDS (seconds): only for TFDS sources.
    from icl_ft.datasets import tfds_builders  # pylint: disable=g-import-not-at-top

    train = tuple(tfds_builders.to_document(dataset[i]) for i in range(len(dataset)))
    return records.Dataset(name=name, train=train, tests={})
  raise TypeError(f"cannot read training documents from a {type(dataset).__name__}")


# ---- tokenization ------------------------------------------------------------------------


def _encode_all(tokenizer, texts: Sequence[str]) -> list[list[int]]:
  if hasattr(tokenizer, "encode_batch"):
    return [list(ids) for ids in tokenizer.encode_batch(list(texts))]
  return [list(tokenizer.encode(t)) for t in texts]


def tokenize_examples(examples: Sequence[formats.Example], tokenizer) -> list[dict[str, np.ndarray]]:
  """Token ids and input-aligned loss masks of each example (see `TrainBatch`).

  Each element: {"tokens": int32 [n], "loss_mask": int32 [n], "example_ids": int32 [n]}, with
  tokens = [BOS] + encode(context) + encode(target) + [EOS] and loss_mask 1 on the n_target + 1
  positions whose next token is a target token or the final EOS.
  """
  contexts = _encode_all(tokenizer, [e.context for e in examples])
  targets = _encode_all(tokenizer, [e.target for e in examples])
  bos, eos = int(tokenizer.bos_id), int(tokenizer.eos_id)
  out = []
  for index, (example, ctx, tgt) in enumerate(zip(examples, contexts, targets)):
    if not tgt:
      raise ValueError(f"example {example.source_id!r}: target encodes to no tokens")
    tokens = np.asarray([bos, *ctx, *tgt, eos], dtype=np.int32)
    loss_mask = np.zeros(len(tokens), dtype=np.int32)
    # Position i predicts token i + 1; the targets are tokens[1 + len(ctx):] (target + EOS).
    loss_mask[len(ctx) : len(tokens) - 1] = 1
    out.append({
        "tokens": tokens,
        "loss_mask": loss_mask,
        EXAMPLE_IDS_KEY: np.full(len(tokens), index, dtype=np.int32),
    })
  return out


def _check_lengths(examples: Sequence[formats.Example], elements: Sequence[Mapping[str, np.ndarray]],
                   seq_len: int) -> None:
  lengths = np.array([len(e["tokens"]) for e in elements])
  too_long = np.flatnonzero(lengths > seq_len)
  if too_long.size:
    worst = int(too_long[np.argmax(lengths[too_long])])
    raise ValueError(
        f"{too_long.size} example(s) longer than seq_len={seq_len} tokens (longest: "
        f"{examples[worst].source_id!r} with {lengths[worst]} tokens incl. BOS/EOS); "
        f"raise seq_len to at least {lengths.max()}")


# ---- the pipeline ------------------------------------------------------------------------


def _process_index_and_count() -> tuple[int, int]:
  return jax.process_index(), jax.process_count()


class _FinishBatch:
  """Pads a short final global batch with empty rows, keeps this host's rows."""

  def __init__(self, global_batch_size: int, shard_index: int, shard_count: int,
               pad_values: Mapping[str, int]):
    self._rows = global_batch_size
    per_host = global_batch_size // shard_count
    self._slice = slice(shard_index * per_host, (shard_index + 1) * per_host)
    self._pad_values = pad_values

  def __call__(self, packed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    missing = self._rows - packed["segment_ids"].shape[0]
    result = {}
    for key, value in packed.items():
      value = np.asarray(value, dtype=np.int32)
      if missing:
        fill = self._pad_values.get(key, 0)
        value = np.concatenate([value, np.full((missing, value.shape[1]), fill, np.int32)])
      result[key] = value[self._slice]
    return result


def make_train_dataset(
    dataset: Any,
    tokenizer,
    *,
    fmt: str,
    seq_len: int,
    global_batch_size: int,
    seed: int = 0,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_packing_bins: int | None = None,
    with_example_ids: bool = False,
    mesh=None,
) -> grain.IterDataset:
  """The grain IterDataset behind `make_train_iterator` (same arguments)."""
  formats.check_format(fmt)
  if seq_len < 2:
    raise ValueError(f"seq_len must be >= 2, got {seq_len}")
  if global_batch_size < 1:
    raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be >= 1 or None (repeat forever), got {num_epochs}")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  if (shard_index is None) != (shard_count is None):
    raise ValueError("pass both shard_index and shard_count, or neither (then jax.process_index/count)")
  if shard_index is None:
    shard_index, shard_count = _process_index_and_count()
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise ValueError(f"bad shard: shard_index={shard_index}, shard_count={shard_count}")
  if global_batch_size % shard_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible by the process count "
                     f"{shard_count}")
  if mesh is not None and global_batch_size % sharding.data_parallel_size(mesh):
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible by the data-parallel "
                     f"size {sharding.data_parallel_size(mesh)} (mesh axes data x fsdp)")

  data = load_dataset(dataset)
  exs = formats.examples(data, fmt)
  elements = tokenize_examples(exs, tokenizer)
  _check_lengths(exs, elements, seq_len)
  if num_packing_bins is None:
    epoch_rows = -(-sum(len(e["tokens"]) for e in elements) // seq_len)
    num_packing_bins = min(max(epoch_rows, MIN_PACKING_BINS), MAX_PACKING_BINS)

  if not with_example_ids:  # packing depends on lengths only: the same rows either way
    elements = [{k: e[k] for k in ("tokens", "loss_mask")} for e in elements]
  # Padding in packed rows and in the empty rows of a short last batch alike.
  pad_values = {"tokens": int(getattr(tokenizer, "pad_id", 0)), EXAMPLE_IDS_KEY: -1}
  source = grain.MapDataset.source(elements).shuffle(seed=seed).repeat(num_epochs)
  ds = packing.PackIterDataset(source, seq_len=seq_len, num_bins=num_packing_bins,
                               pad_values=pad_values)
  ds = ds.batch(global_batch_size, drop_remainder=False)
  return ds.map(_FinishBatch(global_batch_size, shard_index, shard_count, pad_values))


def make_train_iterator(
    dataset: Any,
    tokenizer,
    *,
    fmt: str,
    seq_len: int,
    global_batch_size: int,
    seed: int = 0,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_packing_bins: int | None = None,
    with_example_ids: bool = False,
    mesh=None,
) -> grain.DatasetIterator:
  """A checkpointable grain iterator of host-local `TrainBatch`es.

  Args:
    dataset: a `records.Dataset`, a dataset directory (train.jsonl + card.json), or a TFDS
      array_record dataset from `tfds_builders` (see `load_dataset`).
    tokenizer: `icl_ft.model.tokenizer.Tokenizer` (anything with encode/encode_batch, bos_id,
      eos_id, pad_id).
    fmt: one of `formats.FORMATS`.
    seq_len: L, tokens per row.
    global_batch_size: rows per global batch; each host yields global_batch_size / shard_count.
    seed: shuffling seed (examples per epoch and packed rows); same seed, same batches.
    num_epochs: passes over the data; None repeats forever.
    shard_index, shard_count: this host's slice of every global batch; default
      jax.process_index() / jax.process_count().
    num_packing_bins: rows open at a time (default about one epoch's rows, clamped to
      [8, 64]); more bins, less padding.
    with_example_ids: add `example_ids` (see `TrainBatch`), for tests and debugging.
    mesh: if given, check now that global_batch_size divides over its data x fsdp axes.

  Returns:
    A `grain.DatasetIterator`; `get_state()` / `set_state()` resume exactly (the state is
    JSON-serializable; `grain.checkpoint.CheckpointSave/Restore` store it with orbax).

  Raises:
    ValueError (one line): unknown format, empty dataset, an example longer than seq_len,
    global_batch_size not divisible by shard_count (or the mesh's data-parallel size).
  """
  return iter(make_train_dataset(
      dataset, tokenizer, fmt=fmt, seq_len=seq_len, global_batch_size=global_batch_size,
      seed=seed, num_epochs=num_epochs, shard_index=shard_index, shard_count=shard_count,
      num_packing_bins=num_packing_bins, with_example_ids=with_example_ids, mesh=mesh))


# ---- onto the mesh -----------------------------------------------------------------------


def to_global(batch: Mapping[str, Any], mesh) -> dict[str, Any]:
  """Host-local batch -> global jax.Arrays sharded with `sharding.data_sharding(mesh)`.

  The global batch has `process_count` times the local rows. Raises ValueError if that is not
  divisible by the mesh's data-parallel size (data x fsdp).
  """
  local_rows = int(np.shape(batch["tokens"])[0])
  global_rows = local_rows * jax.process_count()
  dp = sharding.data_parallel_size(mesh)
  if global_rows % dp:
    raise ValueError(f"global batch of {global_rows} rows is not divisible by the data-parallel "
                     f"size {dp} (mesh axes data x fsdp)")
  data_sharding = sharding.data_sharding(mesh)
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    out[key] = jax.make_array_from_process_local_data(
        data_sharding, value, (global_rows, *value.shape[1:]))
  return out


# ---- measurement -------------------------------------------------------------------------


def packing_efficiency(iterator_or_batches: Iterable[Mapping[str, Any]],
                       max_batches: int | None = None) -> float:
  """Fraction of non-padding tokens (segment_ids != 0) over the batches (consumes them).

  Pass a finite iterator (num_epochs set) or `max_batches`; padding rows of a short final
  batch count as padding.
  """
  used = total = 0
  for i, batch in enumerate(iterator_or_batches):
    if max_batches is not None and i >= max_batches:
      break
    segment_ids = np.asarray(batch["segment_ids"])
    used += int(np.count_nonzero(segment_ids))
    total += segment_ids.size
  if total == 0:
    raise ValueError("packing_efficiency: no batches")
  return used / total
