"""Tests for icl_ft.model.tokenizer."""

import dataclasses

import pytest

from icl_ft.model import tokenizer as tokenizer_lib
from icl_ft.model.tokenizer import Tokenizer, train_sentencepiece

CORPUS = [
    "The dax is a wug. Every wug is a blicket.",
    "Zorblat visited the café 123 times in 2024!",
    "A glorp is taller than a fendle, and fendles are red.",
    "Who is the parent of Tom Cruise? Mary Lee Pfeiffer.",
] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = tmp_path_factory.mktemp("spm") / "tok.model"
  return train_sentencepiece(CORPUS, 320, path, user_defined_symbols=["<start_of_turn>", "<end_of_turn>"])


@dataclasses.dataclass(frozen=True)
class _Cfg:
  vocab_size: int


def test_special_ids(tok):
  assert tok.vocab_size == 320
  assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
  assert tok.id_to_piece(0) == "<pad>"


@pytest.mark.parametrize("text", [
    "The dax is a wug.",
    "  two  spaces,\nnewline\tand tab ",
    "Unicode: 中文, ünïcödé, emoji 🙂 and digits 0123456789",
    "",
    "<start_of_turn>user\nHi<end_of_turn>",
])
def test_round_trip(tok, text):
  ids = tok.encode(text)
  assert all(0 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text
  assert tok.decode(tok.encode(text, add_bos=True, add_eos=True)) == text


def test_bos_eos_and_batch(tok):
  ids = tok.encode("The dax", add_bos=True, add_eos=True)
  assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
  assert ids[1:-1] == tok.encode("The dax")
  batch = tok.encode_batch(["The dax", "a wug"], add_bos=True)
  assert batch == [tok.encode("The dax", add_bos=True), tok.encode("a wug", add_bos=True)]


def test_user_defined_symbol_is_one_piece(tok):
  ids = tok.encode("<start_of_turn>")
  assert len(ids) == 1 and tok.id_to_piece(ids[0]) == "<start_of_turn>"


def test_ids_are_stable_across_retraining(tok, tmp_path):
  again = train_sentencepiece(CORPUS, 320, tmp_path / "again.model",
                              user_defined_symbols=["<start_of_turn>", "<end_of_turn>"])
  assert again.serialized_model == tok.serialized_model
  assert again.encode("Zorblat is a wug") == tok.encode("Zorblat is a wug")
  reloaded = Tokenizer(tok.path)
  assert reloaded.encode("Zorblat is a wug") == tok.encode("Zorblat is a wug")
  assert Tokenizer(model_proto=tok.serialized_model).vocab_size == 320


def test_pickle(tok):
  import pickle

  clone = pickle.loads(pickle.dumps(tok))
  assert clone.encode("a wug") == tok.encode("a wug") and clone.path == tok.path


def test_encode_with_offsets(tok):
  ids, start = tok.encode_with_offsets("The dax is", " a wug")
  assert ids[0] == tok.bos_id
  assert ids[:start] == tok.encode("The dax is", add_bos=True)
  assert ids[start:] == tok.encode(" a wug")
  assert tok.decode(ids[start:]) == " a wug"
  pairs = [("The dax is", " a wug"), ("Q:", " blicket")]
  assert tok.encode_batch_with_offsets(pairs) == [tok.encode_with_offsets(p, c) for p, c in pairs]


def test_check_model(tok):
  tok.check_model(_Cfg(vocab_size=320))
  with pytest.raises(ValueError, match=r"320 pieces.*vocab_size is 256"):
    tok.check_model(_Cfg(vocab_size=256))
  with pytest.raises(ValueError, match=r"320 pieces.*vocab_size is 384"):
    tok.check_model(_Cfg(vocab_size=384))
  tok.check_model(_Cfg(vocab_size=384), allow_padding=True)

  @dataclasses.dataclass(frozen=True)
  class Declared:
    vocab_size: int
    tokenizer_vocab_size: int

  tok.check_model(Declared(vocab_size=384, tokenizer_vocab_size=320))
  assert (256000, 256128) in tokenizer_lib.KNOWN_PADDED_VOCABS


def test_errors(tmp_path):
  with pytest.raises(ValueError, match="minimum"):
    train_sentencepiece(CORPUS, 100, tmp_path / "x.model")
  with pytest.raises(ValueError, match="empty"):
    train_sentencepiece([], 300, tmp_path / "x.model")
  with pytest.raises(FileNotFoundError, match="nope.model"):
    Tokenizer(tmp_path / "nope.model")
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="not a SentencePiece model"):
    Tokenizer(bad)
  small = train_sentencepiece(["ab ab"], 5000, tmp_path / "small.model", hard_vocab_limit=False)
  assert small.vocab_size < 5000
  assert small.decode(small.encode("anything at all")) == "anything at all"
