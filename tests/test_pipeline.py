"""Tests for icl_ft.pipeline: formats, tokenization, packing, epochs, resume, host sharding."""

import collections
import json

import numpy as np
import pytest

from icl_ft.datasets import records
from icl_ft.datasets import simple_reversals
from icl_ft.datasets import syllogisms
from icl_ft.model.tokenizer import train_sentencepiece
from icl_ft.pipeline import formats
from icl_ft.pipeline import loader

SEQ_LEN = 256


def _doc(doc_id, sentences, text=None, **metadata):
  return records.Document(id=doc_id, text=text if text is not None else " ".join(sentences),
                          sentences=tuple(sentences), metadata=metadata)


# Multi-sentence documents (incl. one without `sentences`, as an augmentation trace may be).
TOY = records.Dataset(name="toy", train=(
    _doc("a", ["Femp are taller than glon.", "Glon live near the river.", "Nobody has seen a femp."]),
    _doc("b", ["Trop is a zept."]),
    _doc("c", [], text="An augmented trace: glon are shorter than femp.", strategy="local"),
    _doc("d", ["All yomp are troff.", "Some troff are blick.", "No blick are wug.", "Wugs sing."]),
), tests={})


@pytest.fixture(scope="module")
def reversals():
  return simple_reversals.generate(simple_reversals.SCALES["paper"])


@pytest.fixture(scope="module")
def mixed():
  """A multi-sentence dataset: small syllogisms (3 sentences each) plus TOY."""
  syl = syllogisms.generate(syllogisms.SCALES["small"])
  return records.Dataset(name="mixed", train=syl.train + TOY.train, tests={})


@pytest.fixture(scope="module")
def tok(tmp_path_factory, reversals, mixed):
  texts = [d.text for d in reversals.train + mixed.train]
  return train_sentencepiece(texts, 600, tmp_path_factory.mktemp("spm") / "tok.model",
                             hard_vocab_limit=False)


def _iterator(dataset, tok, fmt="split_independent", **kw):
  kw = {"seq_len": SEQ_LEN, "global_batch_size": 4, "seed": 0, "shard_index": 0, "shard_count": 1,
        "with_example_ids": True, **kw}
  return loader.make_train_iterator(dataset, tok, fmt=fmt, **kw)


def _batches(it, n=None):
  return list(it) if n is None else [next(it) for _ in range(n)]


def _segments(batch):
  """(example index, row, start, end) of every packed segment in a batch."""
  out = []
  for row in range(batch["segment_ids"].shape[0]):
    seg = batch["segment_ids"][row]
    for s in range(1, int(seg.max()) + 1):
      where = np.flatnonzero(seg == s)
      ids = set(batch["example_ids"][row, where].tolist())
      assert len(ids) == 1, f"segment {s} of row {row} mixes examples {ids}"
      out.append((ids.pop(), row, int(where[0]), int(where[-1]) + 1))
  return out


def _assert_equal_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# ---- formats -----------------------------------------------------------------------------


def test_format_names_and_unknown_format():
  assert formats.FORMATS == ("document", "split_independent", "split_cumulative")
  with pytest.raises(ValueError, match="unknown training format 'sentences'.*document, split_independent"):
    formats.examples(TOY, "sentences")


def test_formats_examples():
  doc = formats.examples(TOY, "document")
  assert [e.source_id for e in doc] == ["a", "b", "c", "d"]
  assert all(e.context == "" for e in doc) and doc[0].target == TOY.train[0].text

  ind = formats.examples(TOY, "split_independent")
  assert [e.source_id for e in ind] == ["a/0", "a/1", "a/2", "b/0", "c/0", "d/0", "d/1", "d/2", "d/3"]
  assert all(e.context == "" for e in ind)
  assert ind[1].target == "Glon live near the river."
  assert ind[4].target == TOY.train[2].text  # no sentences: the text is the one sentence

  cum = formats.examples(TOY, "split_cumulative")
  assert [e.source_id for e in cum] == [e.source_id for e in ind]
  assert cum[0] == formats.Example("", "Femp are taller than glon.", "a/0")
  assert cum[2] == formats.Example("Femp are taller than glon. Glon live near the river.",
                                   " Nobody has seen a femp.", "a/2")
  assert cum[8].context == "All yomp are troff. Some troff are blick. No blick are wug."
  for e in cum:
    assert e.context + e.target == " ".join(s for s in [e.context, e.target.lstrip()] if s)


def test_formats_errors():
  with pytest.raises(ValueError, match="no training documents"):
    formats.examples(records.Dataset(name="empty", train=(), tests={}), "document")
  dup = records.Dataset(name="dup", train=(TOY.train[0], TOY.train[0]), tests={})
  with pytest.raises(ValueError, match="duplicate document id 'a'"):
    formats.examples(dup, "document")


# ---- tokenization ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_tokenization_and_loss_mask(tok, fmt):
  exs = formats.examples(TOY, fmt)
  for ex, el in zip(exs, loader.tokenize_examples(exs, tok)):
    tokens, mask = el["tokens"], el["loss_mask"]
    ctx = tok.encode(ex.context)
    assert tokens.dtype == np.int32 and mask.dtype == np.int32
    assert tokens.tolist() == [tok.bos_id, *ctx, *tok.encode(ex.target), tok.eos_id]
    # The mask is aligned to the inputs: position i trains the prediction of token i + 1.
    trained = tokens[1:][mask[:-1] == 1]
    assert tok.decode(trained) == ex.target  # exactly the target sentence (+ EOS, dropped by decode)
    assert trained[-1] == tok.eos_id and len(trained) == len(tokens) - 1 - len(ctx)
    assert mask[-1] == 0
    if fmt != "split_cumulative":
      assert mask[:-1].all()  # no context: everything after BOS is trained


def test_cumulative_loss_mask_covers_only_target(tok):
  exs = formats.examples(TOY, "split_cumulative")
  last = loader.tokenize_examples(exs, tok)[2]  # "a/2": two sentences of context
  n_ctx = len(tok.encode(exs[2].context))
  assert not last["loss_mask"][:n_ctx].any()
  assert last["loss_mask"][n_ctx:-1].all()


# ---- packing -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_packed_rows_are_well_formed(tok, mixed, fmt):
  exs = formats.examples(mixed, fmt)
  elements = loader.tokenize_examples(exs, tok)
  batches = _batches(_iterator(mixed, tok, fmt, seq_len=64, num_epochs=1))
  seen = collections.Counter()
  for batch in batches:
    assert set(batch) == {*loader.BATCH_KEYS, loader.EXAMPLE_IDS_KEY}
    for key in batch:
      assert batch[key].shape == (4, 64) and batch[key].dtype == np.int32
    seg, pos, tokens = batch["segment_ids"], batch["positions"], batch["tokens"]
    pad = seg == 0
    assert (tokens[pad] == tok.pad_id).all() and not batch["loss_mask"][pad].any()
    assert not pos[pad].any() and (batch["example_ids"][pad] == -1).all()
    assert not batch["loss_mask"][:, -1].any()
    for row in range(seg.shape[0]):
      used = seg[row][seg[row] > 0]
      # segment ids 1..k, in order, padding only at the end
      assert used.tolist() == sorted(used.tolist()) and (seg[row][len(used):] == 0).all()
      if used.size:
        assert set(used.tolist()) == set(range(1, int(used.max()) + 1))
    for index, row, start, end in _segments(batch):
      seen[index] += 1
      np.testing.assert_array_equal(pos[row, start:end], np.arange(end - start))
      np.testing.assert_array_equal(tokens[row, start:end], elements[index]["tokens"])
      np.testing.assert_array_equal(batch["loss_mask"][row, start:end], elements[index]["loss_mask"])
      assert not batch["loss_mask"][row, end - 1]  # never train across a segment boundary
  assert seen == collections.Counter(range(len(exs)))


def test_cumulative_batch_loss_mask_is_the_target_sentence(tok, mixed):
  exs = formats.examples(mixed, "split_cumulative")
  batch = next(_iterator(mixed, tok, "split_cumulative", global_batch_size=2))
  targets = loader.next_tokens(batch["tokens"])
  checked = 0
  for index, row, start, end in _segments(batch):
    trained = targets[row, start:end][batch["loss_mask"][row, start:end] == 1]
    assert trained[-1] == tok.eos_id
    assert trained[:-1].tolist() == tok.encode(exs[index].target)
    checked += exs[index].context != ""
  assert checked > 0


def test_next_tokens_numpy_and_jax():
  import jax.numpy as jnp

  x = np.array([[5, 6, 7], [8, 9, 10]], np.int32)
  np.testing.assert_array_equal(loader.next_tokens(x), [[6, 7, 0], [9, 10, 0]])
  np.testing.assert_array_equal(np.asarray(loader.next_tokens(jnp.asarray(x))), [[6, 7, 0], [9, 10, 0]])


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_packing_efficiency_simple_reversals(tok, reversals, fmt):
  # Steady state (training repeats forever): ~5 epochs of batches at the paper's batch size 16.
  elements = loader.tokenize_examples(formats.examples(reversals, fmt), tok)
  epoch_rows = sum(len(e["tokens"]) for e in elements) / SEQ_LEN
  it = _iterator(reversals, tok, fmt, global_batch_size=16, with_example_ids=False)
  eff = loader.packing_efficiency(it, max_batches=int(5 * epoch_rows / 16))
  assert eff >= 0.95, f"{fmt}: packing efficiency {eff:.3f}"


def test_one_epoch_packs_every_token(tok, reversals):
  elements = loader.tokenize_examples(formats.examples(reversals, "document"), tok)
  batches = _batches(_iterator(reversals, tok, "document", global_batch_size=8, num_epochs=1))
  used = sum(int(np.count_nonzero(b["segment_ids"])) for b in batches)
  assert used == sum(len(e["tokens"]) for e in elements)
  # A short final batch is padded to full size with empty rows.
  assert all(b["tokens"].shape == (8, SEQ_LEN) for b in batches)
  rows = len(batches) * 8
  assert loader.packing_efficiency(batches) == pytest.approx(used / (rows * SEQ_LEN))


# ---- epochs, determinism, resume ---------------------------------------------------------


def test_each_example_once_per_epoch(tok, mixed):
  exs = formats.examples(mixed, "split_cumulative")
  for num_epochs in (1, 3):
    batches = _batches(_iterator(mixed, tok, "split_cumulative", num_epochs=num_epochs))
    counts = collections.Counter(exs[i].source_id for b in batches for i, *_ in _segments(b))
    assert counts == {e.source_id: num_epochs for e in exs}


def test_epochs_are_reshuffled(tok, reversals):
  def order(it, n):
    return [i for b in _batches(it, n) for i, *_ in _segments(b)]
  one = order(_iterator(reversals, tok, "document", num_epochs=2, global_batch_size=8), 3)
  first = order(_iterator(reversals, tok, "document", num_epochs=2, global_batch_size=8), 3)
  assert one == first
  batches = _batches(_iterator(reversals, tok, "document", num_epochs=2, global_batch_size=8))
  ids = [i for b in batches for i, *_ in _segments(b)]
  assert len(ids) == 2000 and ids[:1000] != ids[1000:]


def test_determinism_with_seed(tok, mixed):
  a = _batches(_iterator(mixed, tok, "split_independent", seed=3), 6)
  b = _batches(_iterator(mixed, tok, "split_independent", seed=3), 6)
  c = _batches(_iterator(mixed, tok, "split_independent", seed=4), 6)
  _assert_equal_batches(a, b)
  assert any((x["tokens"] != y["tokens"]).any() for x, y in zip(a, c))


@pytest.mark.parametrize("skip", [0, 1, 5, 13])
def test_resume_from_state(tok, mixed, skip):
  uninterrupted = _batches(_iterator(mixed, tok, "split_cumulative"), skip + 8)
  it = _iterator(mixed, tok, "split_cumulative")
  _batches(it, skip)
  state = json.loads(json.dumps(it.get_state()))  # what the orbax grain handler stores
  resumed = _iterator(mixed, tok, "split_cumulative")
  resumed.set_state(state)
  _assert_equal_batches(_batches(resumed, 8), uninterrupted[skip:])


def test_resume_with_orbax(tok, mixed, tmp_path):
  import grain
  import orbax.checkpoint as ocp

  uninterrupted = _batches(_iterator(mixed, tok), 7)
  it = _iterator(mixed, tok)
  _batches(it, 3)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  resumed = _iterator(mixed, tok)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.restore(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(resumed)))
  _assert_equal_batches(_batches(resumed, 4), uninterrupted[3:])


# ---- host sharding -----------------------------------------------------------------------


def test_two_hosts_cover_each_example_once(tok, mixed):
  exs = formats.examples(mixed, "split_independent")
  full = _batches(_iterator(mixed, tok, num_epochs=1))
  hosts = [_batches(_iterator(mixed, tok, num_epochs=1, shard_index=i, shard_count=2)) for i in (0, 1)]
  assert len(hosts[0]) == len(hosts[1]) == len(full)  # hosts stay in lockstep
  for whole, h0, h1 in zip(full, *hosts):
    assert h0["tokens"].shape == (2, SEQ_LEN)
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([h0[key], h1[key]]), whole[key])
  ids = [i for h in hosts for b in h for i, *_ in _segments(b)]
  assert collections.Counter(ids) == collections.Counter(range(len(exs)))


# ---- inputs and errors -------------------------------------------------------------------


def test_dataset_directory_and_tfds_inputs(tok, tmp_path):
  from icl_ft.datasets import tfds_builders

  expected = _batches(_iterator(TOY, tok, "split_cumulative", num_epochs=1))
  records.write_dataset(TOY, tmp_path / "toy")
  _assert_equal_batches(_batches(_iterator(tmp_path / "toy", tok, "split_cumulative", num_epochs=1)),
                        expected)
  builder = tfds_builders.build_from_directory(tmp_path / "toy", data_dir=tmp_path / "tfds")
  for source in (builder, builder.data_dir, builder.as_data_source()["train"]):
    _assert_equal_batches(_batches(_iterator(source, tok, "split_cumulative", num_epochs=1)), expected)


def test_errors(tok, mixed):
  with pytest.raises(ValueError, match="unknown training format 'doc'"):
    _iterator(mixed, tok, "doc")
  with pytest.raises(ValueError, match="no training documents"):
    _iterator(records.Dataset(name="empty", train=(), tests={}), tok)
  with pytest.raises(ValueError, match="not divisible by the process count 3"):
    _iterator(mixed, tok, global_batch_size=4, shard_index=0, shard_count=3)
  with pytest.raises(ValueError, match=r"longer than seq_len=8 tokens \(longest: '.+/\d' with \d+ tokens.*raise seq_len"):
    _iterator(mixed, tok, "split_cumulative", seq_len=8)
  with pytest.raises(ValueError, match="neither a dataset directory"):
    _iterator("/nonexistent/dir", tok)


def test_to_global_and_data_parallel_divisibility(tok, mixed):
  import jax
  from icl_ft import sharding

  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  batch = next(_iterator(mixed, tok, global_batch_size=8, mesh=mesh))
  arrays = loader.to_global(batch, mesh)
  assert set(arrays) == set(batch)
  for key, value in arrays.items():
    assert isinstance(value, jax.Array) and value.shape == (8, SEQ_LEN)
    assert value.sharding.is_equivalent_to(sharding.data_sharding(mesh), 2)
    np.testing.assert_array_equal(np.asarray(value), batch[key])
  with pytest.raises(ValueError, match="not divisible by the data-parallel size 8"):
    _iterator(mixed, tok, global_batch_size=4, mesh=mesh)
  with pytest.raises(ValueError, match="global batch of 4 rows is not divisible by the data-parallel size 8"):
    loader.to_global(next(_iterator(mixed, tok, global_batch_size=4)), mesh)


# ---- the model sees packed examples as if alone ------------------------------------------


@pytest.mark.parametrize("preset", ["tiny_gemma2", "tiny_gemma3"])
def test_packed_logits_equal_unpacked(tok, mixed, preset):
  import jax.numpy as jnp
  from flax import nnx
  from icl_ft.model import config as model_config
  from icl_ft.model import transformer

  cfg = model_config.get_preset(preset, dtype="float32", param_dtype="float32")
  assert cfg.vocab_size >= tok.vocab_size
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(params=0))
  forward = nnx.jit(lambda m, t, p, s: m(t, p, s)[0])
  length = 96
  batch = next(_iterator(mixed, tok, "split_cumulative", seq_len=length, global_batch_size=2))
  keys = ("tokens", "positions", "segment_ids")
  packed = forward(model, *(jnp.asarray(batch[k]) for k in keys))
  segments = _segments(batch)
  assert len(segments) > 2
  # Each example alone in its own row: positions from 0, one segment, padding after it.
  alone = {k: np.zeros((len(segments), length), np.int32) for k in keys}
  for i, (_, row, start, end) in enumerate(segments):
    alone["tokens"][i, : end - start] = batch["tokens"][row, start:end]
    alone["positions"][i, : end - start] = np.arange(end - start)
    alone["segment_ids"][i, : end - start] = 1
  # Run in chunks of the packed batch's shape: one compilation per preset.
  pad = -len(segments) % 2
  alone = {k: np.concatenate([v, np.zeros((pad, length), np.int32)]) for k, v in alone.items()}
  ref = np.concatenate([forward(model, *(jnp.asarray(alone[k][i : i + 2]) for k in keys))
                        for i in range(0, len(segments) + pad, 2)])
  for i, (_, row, start, end) in enumerate(segments):
    np.testing.assert_allclose(np.asarray(packed[row, start:end]), np.asarray(ref[i, : end - start]),
                               atol=1e-4, rtol=1e-4)
  # Control: the same rows as one long segment do leak across examples.
  merged = forward(model, jnp.asarray(batch["tokens"]), jnp.asarray(batch["positions"]),
                   jnp.asarray((batch["segment_ids"] > 0).astype(np.int32)))
  _, row, start, end = next(s for s in segments if s[2] > 0)
  assert not np.allclose(np.asarray(merged[row, start:end]), np.asarray(packed[row, start:end]), atol=1e-4)
