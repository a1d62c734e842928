"""Model configurations: a frozen `ModelConfig` and named presets (Gemma 1, 2, 3 and tiny).

  cfg = get_preset("gemma2_2b")                    # published sizes
  cfg = get_preset("tiny", dtype="bfloat16")       # overrides replace fields
  cfg.attention_types                              # ("local", "global", ...) one per layer

Published sizes (google-deepmind/gemma):

  preset        L   D     F      N   H    K   window  rope local/global (scale)  q scalar  caps
  gemma1_2b     18  2048  16384  8   256  1   -       10k (global only)          256       -
  gemma1_7b     28  3072  24576  16  256  16  -       10k (global only)          256       -
  gemma2_2b     26  2304  9216   8   256  4   4096    10k / 10k                  256       50/30
  gemma2_9b     42  3584  14336  16  256  8   4096    10k / 10k                  256       50/30
  gemma2_27b    46  4608  36864  32  128  16  4096    10k / 10k                  144       50/30
  gemma3_270m   18  640   2048   4   256  1   512     10k / 1M                   256       -
  gemma3_1b     26  1152  6912   4   256  1   512     10k / 1M                   256       -
  gemma3_4b     34  2560  10240  8   256  4   1024    10k / 1M (x8)              256       -
  gemma3_12b    48  3840  15360  16  256  8   1024    10k / 1M (x8)              256       -
  gemma3_27b    62  5376  21504  32  128  16  1024    10k / 1M (x8)              168       -

(L layers, D embed_dim, F hidden_dim = width of each of the gate / up projections, N query
heads, H head_dim, K kv heads; q scalar: queries are multiplied by q_scalar ** -0.5; caps:
attention-logit / final-logit soft caps.) Gemma 1 has no post norms; Gemma 2 and 3 have post
attention / feed-forward norms; Gemma 3 has QK-norm. Attention patterns: Gemma 1 all global;
Gemma 2 alternates local, global (starting local); Gemma 3 repeats 5 local then 1 global.
Gemma 1 and 2 checkpoints embed 256128 rows for the 256000-piece tokenizer
(`tokenizer_vocab_size`); Gemma 3 has 262144 of both.

Sliding window convention (same as Gemma and Hugging Face): on a local layer a query at
position i sees keys at positions j with i - window < j <= i (`window` keys, itself included).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

GLOBAL = "global"
LOCAL = "local"
FAMILIES = ("gemma1", "gemma2", "gemma3")

GEMMA2_PATTERN = (LOCAL, GLOBAL)
GEMMA3_PATTERN = (LOCAL,) * 5 + (GLOBAL,)


def attention_pattern(pattern: Sequence[str], num_layers: int) -> tuple[str, ...]:
  """`pattern` repeated (and cut) to `num_layers` entries."""
  pattern = tuple(pattern)
  return tuple(pattern[i % len(pattern)] for i in range(num_layers))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and numerics of a Gemma-style decoder (see the module docstring)."""

  name: str
  family: str                           # "gemma1" | "gemma2" | "gemma3"
  num_layers: int
  embed_dim: int
  hidden_dim: int                       # width of each of the MLP gate / up projections
  num_heads: int
  head_dim: int
  num_kv_heads: int
  vocab_size: int                       # embedding rows (= logits width)
  max_seq_len: int                      # published context length (informational)
  attention_types: tuple[str, ...]      # per layer: "global" | "local"
  sliding_window: int | None = None     # local layers: keys with i - window < j <= i
  local_rope_base: float = 10_000.0
  global_rope_base: float = 10_000.0
  local_rope_scale: float = 1.0         # positions are divided by the scale (linear scaling)
  global_rope_scale: float = 1.0
  query_pre_attn_scalar: float | None = None  # queries * scalar ** -0.5; None = head_dim
  attn_logit_softcap: float | None = None     # cap * tanh(logits / cap) before masking
  final_logit_softcap: float | None = None
  use_post_attn_norm: bool = False
  use_post_ffw_norm: bool = False
  use_qk_norm: bool = False
  rms_norm_eps: float = 1e-6
  tokenizer_vocab_size: int | None = None  # real tokenizer pieces if < vocab_size (padding rows)
  dtype: str = "bfloat16"               # compute dtype
  param_dtype: str = "float32"

  def __post_init__(self):
    # Lists (e.g. from a JSON / ConfigDict round trip) become tuples so the config hashes.
    if not isinstance(self.attention_types, tuple):
      object.__setattr__(self, "attention_types", tuple(self.attention_types))
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""
    if self.family not in FAMILIES:
      raise ValueError(f"family {self.family!r} is not one of {FAMILIES}")
    for f in ("num_layers", "embed_dim", "hidden_dim", "num_heads", "head_dim", "num_kv_heads",
              "vocab_size", "max_seq_len"):
      if int(getattr(self, f)) <= 0:
        raise ValueError(f"{f}={getattr(self, f)!r} must be positive")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even (RoPE)")
    if len(self.attention_types) != self.num_layers:
      raise ValueError(f"attention_types has {len(self.attention_types)} entries for "
                       f"num_layers={self.num_layers}")
    bad = [t for t in self.attention_types if t not in (GLOBAL, LOCAL)]
    if bad:
      raise ValueError(f"attention type {bad[0]!r} is not 'global' or 'local'")
    if LOCAL in self.attention_types and (self.sliding_window is None or self.sliding_window <= 0):
      raise ValueError(f"sliding_window={self.sliding_window!r} must be positive when layers "
                       "are local")
    if self.tokenizer_vocab_size is not None and self.tokenizer_vocab_size > self.vocab_size:
      raise ValueError(f"tokenizer_vocab_size={self.tokenizer_vocab_size} exceeds "
                       f"vocab_size={self.vocab_size}")

  # ---- derived -------------------------------------------------------------------------
  @property
  def query_scale(self) -> float:
    """The factor queries are multiplied by before q.k."""
    scalar = self.head_dim if self.query_pre_attn_scalar is None else self.query_pre_attn_scalar
    return float(scalar) ** -0.5

  @property
  def num_groups(self) -> int:
    """Query heads per kv head (1 = multi-head, num_heads = multi-query)."""
    return self.num_heads // self.num_kv_heads

  def rope_base(self, layer: int) -> float:
    return self.local_rope_base if self.attention_types[layer] == LOCAL else self.global_rope_base

  def rope_scale(self, layer: int) -> float:
    return self.local_rope_scale if self.attention_types[layer] == LOCAL else self.global_rope_scale

  def window(self, layer: int) -> int | None:
    """The sliding window of `layer` (None on global layers)."""
    return self.sliding_window if self.attention_types[layer] == LOCAL else None

  def replace(self, **overrides: Any) -> "ModelConfig":
    return replace(self, **overrides)


# ------------------------------------------------------------------------------------------
# Presets
# ------------------------------------------------------------------------------------------

_GEMMA12_VOCAB = 256_128   # embedding rows of the Gemma 1 / 2 checkpoints
_GEMMA12_TOKENS = 256_000  # pieces of their tokenizer
_GEMMA3_VOCAB = 262_144


def _gemma1(name, num_layers, embed_dim, hidden_dim, num_heads, head_dim, num_kv_heads):
  return ModelConfig(
      name=name, family="gemma1", num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, head_dim=head_dim, num_kv_heads=num_kv_heads,
      vocab_size=_GEMMA12_VOCAB, tokenizer_vocab_size=_GEMMA12_TOKENS, max_seq_len=8192,
      attention_types=(GLOBAL,) * num_layers)


def _gemma2(name, num_layers, embed_dim, hidden_dim, num_heads, head_dim, num_kv_heads,
            query_pre_attn_scalar):
  return ModelConfig(
      name=name, family="gemma2", num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, head_dim=head_dim, num_kv_heads=num_kv_heads,
      vocab_size=_GEMMA12_VOCAB, tokenizer_vocab_size=_GEMMA12_TOKENS, max_seq_len=8192,
      attention_types=attention_pattern(GEMMA2_PATTERN, num_layers), sliding_window=4096,
      query_pre_attn_scalar=query_pre_attn_scalar, attn_logit_softcap=50.0,
      final_logit_softcap=30.0, use_post_attn_norm=True, use_post_ffw_norm=True)


def _gemma3(name, num_layers, embed_dim, hidden_dim, num_heads, head_dim, num_kv_heads,
            sliding_window, global_rope_scale, query_pre_attn_scalar, max_seq_len):
  return ModelConfig(
      name=name, family="gemma3", num_layers=num_layers, embed_dim=embed_dim,
      hidden_dim=hidden_dim, num_heads=num_heads, head_dim=head_dim, num_kv_heads=num_kv_heads,
      vocab_size=_GEMMA3_VOCAB, max_seq_len=max_seq_len,
      attention_types=attention_pattern(GEMMA3_PATTERN, num_layers),
      sliding_window=sliding_window, local_rope_base=10_000.0, global_rope_base=1_000_000.0,
      global_rope_scale=global_rope_scale, query_pre_attn_scalar=query_pre_attn_scalar,
      use_post_attn_norm=True, use_post_ffw_norm=True, use_qk_norm=True)


# Tiny models for tests and the embedded default: cheap, with a window short enough that
# test sequences exceed it. Float32 compute (CPU tests); override dtype for accelerators.
_TINY = dict(num_layers=4, embed_dim=128, hidden_dim=256, num_heads=4, head_dim=32,
             vocab_size=1024, max_seq_len=4096, dtype="float32")

_TINY_DEFAULT = ModelConfig(
    name="tiny_default", family="gemma3", num_layers=4, embed_dim=128, hidden_dim=256,
    num_heads=4, head_dim=32, num_kv_heads=2, vocab_size=1024, max_seq_len=2048,
    attention_types=(LOCAL, GLOBAL, LOCAL, GLOBAL), sliding_window=128,
    local_rope_base=10_000.0, global_rope_base=1_000_000.0, use_post_attn_norm=True,
    use_post_ffw_norm=True, use_qk_norm=True, dtype="float32")

PRESETS: dict[str, ModelConfig] = {
    "gemma1_2b": _gemma1("gemma1_2b", 18, 2048, 16384, 8, 256, 1),
    "gemma1_7b": _gemma1("gemma1_7b", 28, 3072, 24576, 16, 256, 16),
    "gemma2_2b": _gemma2("gemma2_2b", 26, 2304, 9216, 8, 256, 4, 256),
    "gemma2_9b": _gemma2("gemma2_9b", 42, 3584, 14336, 16, 256, 8, 256),
    "gemma2_27b": _gemma2("gemma2_27b", 46, 4608, 36864, 32, 128, 16, 4608 // 32),
    "gemma3_270m": _gemma3("gemma3_270m", 18, 640, 2048, 4, 256, 1, 512, 1.0, 256, 32_768),
    "gemma3_1b": _gemma3("gemma3_1b", 26, 1152, 6912, 4, 256, 1, 512, 1.0, 256, 32_768),
    "gemma3_4b": _gemma3("gemma3_4b", 34, 2560, 10240, 8, 256, 4, 1024, 8.0, 256, 131_072),
    "gemma3_12b": _gemma3("gemma3_12b", 48, 3840, 15360, 16, 256, 8, 1024, 8.0, 256, 131_072),
    "gemma3_27b": _gemma3("gemma3_27b", 62, 5376, 21504, 32, 128, 16, 1024, 8.0, 5376 // 32,
                          131_072),
    # Gemma 1 style: multi-query (like 2B), all layers global, no post norms.
    "tiny_gemma1": ModelConfig(name="tiny_gemma1", family="gemma1", num_kv_heads=1,
                               attention_types=(GLOBAL,) * 4, **_TINY),
    # Gemma 2 style: grouped-query, local/global alternating, soft caps 50 / 30.
    "tiny_gemma2": ModelConfig(
        name="tiny_gemma2", family="gemma2", num_kv_heads=2,
        attention_types=attention_pattern(GEMMA2_PATTERN, 4), sliding_window=32,
        attn_logit_softcap=50.0, final_logit_softcap=30.0, use_post_attn_norm=True,
        use_post_ffw_norm=True, **_TINY),
    # Gemma 3 style, the 5:1 pattern scaled to 4 layers (3 local, 1 global), QK-norm,
    # RoPE 10k local / 1M global.
    "tiny_gemma3": ModelConfig(
        name="tiny_gemma3", family="gemma3", num_kv_heads=2,
        attention_types=(LOCAL, LOCAL, LOCAL, GLOBAL), sliding_window=32,
        local_rope_base=10_000.0, global_rope_base=1_000_000.0, use_post_attn_norm=True,
        use_post_ffw_norm=True, use_qk_norm=True, **_TINY),
    # The embedded default (icl_ft/assets/tiny, pretrained by `icl-ft-pretrain`): Gemma 3
    # style, local and global layers alternating so that two global layers can look back over
    # a whole in-context episode; 1024 pieces (its own SentencePiece tokenizer), float32 (CPU).
    "tiny_default": _TINY_DEFAULT,
    # Its shape at twice the depth (the model-size lever of docs/pretraining.md), grown from a
    # `tiny_default` checkpoint by `icl_ft.pretrain.grow` with its new layers as identities.
    "tiny_deep": dataclasses.replace(_TINY_DEFAULT, name="tiny_deep", num_layers=8,
                                     attention_types=(LOCAL, GLOBAL) * 4),
    # Its shape with twice the attention heads and feed-forward units (the width lever),
    # grown the same way with the added heads and units silent at first.
    "tiny_wide": dataclasses.replace(_TINY_DEFAULT, name="tiny_wide", num_heads=8,
                                     num_kv_heads=4, hidden_dim=512),
}

ALIASES: dict[str, str] = {"tiny": "tiny_gemma3"}


def preset_names() -> tuple[str, ...]:
  """Every valid preset name (aliases included)."""
  return tuple(PRESETS) + tuple(ALIASES)


def replace(cfg: ModelConfig, **overrides: Any) -> ModelConfig:
  """`cfg` with fields replaced; an unknown field is a ValueError listing the valid ones.

  Changing num_layers without attention_types re-derives the pattern of the family
  (Gemma 1 global, Gemma 2 local/global, Gemma 3 5 local : 1 global; a tiny preset keeps its
  own pattern repeated).
  """
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown ModelConfig field {unknown[0]!r}; valid: {sorted(fields)}")
  if "num_layers" in overrides and "attention_types" not in overrides:
    n = int(overrides["num_layers"])
    if cfg.name.startswith("tiny") or cfg.family == "gemma1":
      pattern = cfg.attention_types
    else:
      pattern = GEMMA2_PATTERN if cfg.family == "gemma2" else GEMMA3_PATTERN
    overrides["attention_types"] = attention_pattern(pattern, n)
  return dataclasses.replace(cfg, **overrides)


def get_preset(name: str, **overrides: Any) -> ModelConfig:
  """The preset `name` (see PRESETS / ALIASES) with `overrides` applied."""
  key = ALIASES.get(name, name)
  if key not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(preset_names())}")
  cfg = PRESETS[key]
  return replace(cfg, **overrides) if overrides else cfg
