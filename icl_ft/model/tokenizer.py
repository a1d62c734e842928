"""SentencePiece tokenizer: the official Gemma `.model` files and our own trained ones.

`Tokenizer(path)` wraps a SentencePiece model file. `train_sentencepiece` trains one
deterministically from an iterable of strings (tests and the pretraining recipe use it, so
nothing is downloaded). Trained tokenizers follow Gemma's conventions: pad 0, eos 1, bos 2,
unk 3, byte fallback, identity normalization, no dummy prefix, digits split — so
`decode(encode(text)) == text` for any text.

Vocabulary rule (`check_model`): the model's embedding table may be *larger* than the
tokenizer (padding rows that no token id reaches) but never smaller. Sizes must be equal,
unless the padding is declared: the pair is a known official one (Gemma 1 and 2 embed 256128
rows for the 256000-piece tokenizer), the model config has a field `tokenizer_vocab_size`
equal to the tokenizer's size, or the caller passes `allow_padding=True`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import sentencepiece as spm
from etils import epath

from icl_ft import fileio

# Ids of the special pieces in every tokenizer we train (the same as Gemma's).
PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3

# (tokenizer pieces, embedding rows) pairs where the extra rows are known padding.
KNOWN_PADDED_VOCABS = frozenset({(256000, 256128)})


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
  """Reads a local or remote (gs://, via etils.epath) file."""
  path = os.fspath(path)
  if "://" in path:
    return epath.Path(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()


class Tokenizer:
  """A SentencePiece tokenizer with Gemma-style special ids."""

  def __init__(self, path: str | os.PathLike[str] | None = None, *,
               model_proto: bytes | None = None):
    """Loads `path` (a `.model` file), or a serialized `model_proto`."""
    if (path is None) == (model_proto is None):
      raise ValueError("Tokenizer needs exactly one of path or model_proto")
    self.path = None if path is None else os.fspath(path)
    if model_proto is None:
      try:
        model_proto = _read_bytes(path)
      except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file not found: {self.path}") from None
    self._proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(self._proto)
    except Exception as e:  # sentencepiece raises RuntimeError/OSError variants
      raise ValueError(f"not a SentencePiece model: {self.path or '<bytes>'} ({e})") from None

  # ---- special ids -------------------------------------------------------
  @property
  def vocab_size(self) -> int:
    """Number of pieces (ids are in [0, vocab_size))."""
    return self._sp.GetPieceSize()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def pad_id(self) -> int:
    """Padding id; falls back to 0 if the model defines none (Gemma's is 0)."""
    pad = self._sp.pad_id()
    return 0 if pad < 0 else pad

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  @property
  def serialized_model(self) -> bytes:
    """The SentencePiece model proto, e.g. to copy it next to a checkpoint."""
    return self._proto

  def piece_to_id(self, piece: str) -> int:
    """Id of `piece` (the unk id if absent)."""
    return self._sp.PieceToId(piece)

  def id_to_piece(self, i: int) -> str:
    return self._sp.IdToPiece(int(i))

  # ---- encode / decode ---------------------------------------------------
  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Token ids of `text`, optionally with bos first / eos last."""
    ids = list(self._sp.EncodeAsIds(text))
    if add_bos:
      ids.insert(0, self.bos_id)
    if add_eos:
      ids.append(self.eos_id)
    return ids

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False,
                   add_eos: bool = False) -> list[list[int]]:
    """`encode` for each text (one sentencepiece call)."""
    out = [list(x) for x in self._sp.EncodeAsIds(list(texts))]
    for ids in out:
      if add_bos:
        ids.insert(0, self.bos_id)
      if add_eos:
        ids.append(self.eos_id)
    return out

  def encode_with_offsets(self, prefix: str, continuation: str, add_bos: bool = True,
                          add_eos: bool = False) -> tuple[list[int], int]:
    """Ids of `prefix + continuation` and the index where the continuation's tokens begin.

    The two parts are tokenized separately and concatenated. Tokenizing the joined string
    could merge characters across the boundary into one piece (e.g. "is" + " a" -> "is a"
    pieces that straddle it), which would make "the first answer token" ambiguous and let
    the choice change how the prompt is tokenized. Separate tokenization keeps the prompt's
    tokens identical for every choice, so scores differ only in the continuation.
    Callers should put the separating space at the start of the continuation (" B"), as
    SentencePiece attaches spaces to the following word.

    Returns:
      (ids, start): ids[start:] are the continuation's tokens (plus eos if add_eos).
    """
    head = self.encode(prefix, add_bos=add_bos)
    tail = self.encode(continuation, add_eos=add_eos)
    return head + tail, len(head)

  def encode_batch_with_offsets(self, pairs: Sequence[tuple[str, str]], add_bos: bool = True,
                                add_eos: bool = False) -> list[tuple[list[int], int]]:
    """`encode_with_offsets` for each (prefix, continuation) pair."""
    heads = self.encode_batch([p for p, _ in pairs], add_bos=add_bos)
    tails = self.encode_batch([c for _, c in pairs], add_eos=add_eos)
    return [(h + t, len(h)) for h, t in zip(heads, tails)]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; pad/bos/eos ids are dropped (SentencePiece control pieces)."""
    return self._sp.DecodeIds([int(i) for i in ids])

  # ---- checks ------------------------------------------------------------
  def check_model(self, cfg: Any, allow_padding: bool | None = None) -> None:
    """Raises ValueError unless this tokenizer fits `cfg.vocab_size` (rule in module doc)."""
    tok_v, model_v = self.vocab_size, int(cfg.vocab_size)
    if tok_v == model_v:
      return
    where = f"tokenizer {self.path or '<bytes>'} has {tok_v} pieces but the model's vocab_size is {model_v}"
    if tok_v > model_v:
      raise ValueError(f"{where}: token ids >= {model_v} would index past the embedding table")
    declared = getattr(cfg, "tokenizer_vocab_size", None)
    if allow_padding is None:
      allow_padding = (tok_v, model_v) in KNOWN_PADDED_VOCABS or declared == tok_v
    if not allow_padding:
      raise ValueError(f"{where}: sizes must match unless the extra embedding rows are declared "
                       "padding (known official pair, cfg.tokenizer_vocab_size, or allow_padding=True)")

  def __getstate__(self) -> dict[str, Any]:
    # Picklable (grain worker processes): the model proto travels, the processor is rebuilt.
    return {"path": self.path, "proto": self._proto}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(model_proto=state["proto"])
    self.path = state["path"]

  def __repr__(self) -> str:
    return f"Tokenizer(path={self.path!r}, vocab_size={self.vocab_size})"


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    output_path: str | os.PathLike[str],
    *,
    model_type: str = "bpe",
    user_defined_symbols: Sequence[str] = (),
    normalization_rule_name: str = "identity",
    character_coverage: float = 1.0,
    split_digits: bool = True,
    hard_vocab_limit: bool = True,
    max_sentence_length: int = 1 << 16,
    **extra_trainer_args: Any,
) -> Tokenizer:
  """Trains a SentencePiece model on `texts`, writes it to `output_path`, returns it.

  Deterministic: one thread, no sampling or shuffling of the input, so the same texts and
  arguments give a byte-identical model file. Special ids are pad 0, eos 1, bos 2, unk 3;
  byte fallback makes every string encodable (needs vocab_size >= 260 + len(user_defined_symbols)).
  The default "identity" normalization keeps `decode(encode(t)) == t`; "nmt_nfkc" is also
  accepted but folds some characters. With hard_vocab_limit=False a corpus too small for
  `vocab_size` yields a smaller vocabulary instead of an error.

  Args:
    texts: training strings (one sentence or document each; newlines are kept as bytes).
    vocab_size: number of pieces.
    output_path: the `.model` file to write (written atomically).
    model_type: "bpe" (default) or "unigram".
    user_defined_symbols: pieces that are always kept whole (e.g. "<start_of_turn>").
    normalization_rule_name: "identity" (default) or "nmt_nfkc".
    character_coverage: fraction of characters covered by pieces (the rest use bytes).
    split_digits: split numbers into single digits (as Gemma).
    hard_vocab_limit: error if the corpus cannot fill vocab_size.
    max_sentence_length: longest input string in bytes (longer ones are skipped by sentencepiece).
    **extra_trainer_args: passed to `SentencePieceTrainer.train`.
  """
  min_size = 4 + 256 + len(user_defined_symbols)
  if vocab_size < min_size:
    raise ValueError(f"vocab_size={vocab_size} is below the minimum {min_size} "
                     "(4 special + 256 byte pieces + user-defined symbols)")
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError("train_sentencepiece: texts is empty")
  buf = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        byte_fallback=True,
        user_defined_symbols=list(user_defined_symbols),
        normalization_rule_name=normalization_rule_name,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=split_digits,
        character_coverage=character_coverage,
        hard_vocab_limit=hard_vocab_limit,
        max_sentence_length=max_sentence_length,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
        **extra_trainer_args,
    )
  except RuntimeError as e:
    raise ValueError(f"sentencepiece training failed (vocab_size={vocab_size}): {e}") from None
  proto = buf.getvalue()
  fileio.atomic_write(output_path, proto)
  return Tokenizer(output_path)
