"""A SentencePiece model rebuilt in memory from a GGUF file's tokenizer metadata.

llama.cpp's converter stores a SentencePiece ("llama") tokenizer as three parallel arrays,
`tokenizer.ggml.tokens`, `.scores` and `.token_type` (its own type codes, which equal
SentencePiece's: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), plus the
special ids and `add_space_prefix`. Three things differ from the original Gemma 3
`tokenizer.model` and are undone here:

  - `<unk>` is stored as CONTROL: SentencePiece needs exactly one UNKNOWN piece, so the
    piece at `unknown_token_id` becomes UNKNOWN.
  - the chat turn markers `<start_of_turn>` / `<end_of_turn>` are stored as CONTROL, which
    SentencePiece never matches in text; they become USER_DEFINED so that a chat prompt's
    markers encode to their ids (as in the original model and in Hugging Face's tokenizer).
  - user-defined whitespace runs ("  ", "   ", ...) are stored with literal spaces, which
    never match once SentencePiece has escaped spaces to U+2581; the spaces become U+2581.

The rest is Gemma's SentencePiece setup: BPE, byte fallback, identity normalization with
whitespace escaping, no dummy prefix (from `add_space_prefix`), no whitespace trimming.
`gguf` is imported by the caller (icl_ft.model.gguf_checkpoint); this module needs only the
field values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sentencepiece import sentencepiece_model_pb2 as pb

SPACE = "\u2581"  # SentencePiece's escaped space
TURN_MARKERS = ("<start_of_turn>", "<end_of_turn>")

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def tokenizer_fields(reader: Any) -> dict[str, Any]:
  """The `tokenizer.ggml.*` fields of a `gguf.GGUFReader` as Python values."""
  out = {}
  for key, field in reader.fields.items():
    if key.startswith("tokenizer.ggml."):
      out[key[len("tokenizer.ggml."):]] = field.contents()
  return out


def sentencepiece_proto(fields: Mapping[str, Any]) -> bytes:
  """A serialized SentencePiece ModelProto from `tokenizer_fields(reader)`."""
  if fields.get("model") != "llama":
    raise ValueError(f"GGUF tokenizer model {fields.get('model')!r} is not a SentencePiece "
                     "('llama') tokenizer")
  tokens: Sequence[str] = fields["tokens"]
  scores: Sequence[float] = fields["scores"]
  types: Sequence[int] = fields["token_type"]
  if not len(tokens) == len(scores) == len(types):
    raise ValueError(f"GGUF tokenizer arrays differ in length: {len(tokens)} tokens, "
                     f"{len(scores)} scores, {len(types)} types")
  unk = int(fields["unknown_token_id"])
  proto = pb.ModelProto()
  for i, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
    kind = int(kind)
    if i == unk:
      kind = UNKNOWN
    elif piece in TURN_MARKERS:
      kind = USER_DEFINED
    if kind == USER_DEFINED and piece.strip(" ") == "":
      piece = piece.replace(" ", SPACE)
    if kind not in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE):
      raise ValueError(f"GGUF token {i} ({piece!r}) has unknown type {kind}")
    proto.pieces.add(piece=piece, score=float(score), type=kind)

  t = proto.trainer_spec
  t.model_type = pb.TrainerSpec.BPE
  t.vocab_size = len(tokens)
  t.byte_fallback = True
  t.unk_id, t.bos_id, t.eos_id = unk, int(fields["bos_token_id"]), int(fields["eos_token_id"])
  t.pad_id = int(fields.get("padding_token_id", -1))
  t.unk_piece, t.bos_piece, t.eos_piece = tokens[t.unk_id], tokens[t.bos_id], tokens[t.eos_id]
  if t.pad_id >= 0:
    t.pad_piece = tokens[t.pad_id]
  n = proto.normalizer_spec
  n.name = "identity"
  n.add_dummy_prefix = bool(fields.get("add_space_prefix", False))
  n.remove_extra_whitespaces = False
  n.escape_whitespaces = True
  return proto.SerializeToString()
