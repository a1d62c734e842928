"""Shared helpers for the model tests: random models, inputs, and the Hugging Face oracle."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from icl_ft.model import config as model_config
from icl_ft.model import layers
from icl_ft.model.transformer import Transformer


def make_model(preset: str = "tiny", seed: int = 0, randomize_norms: bool = True,
               **overrides) -> Transformer:
  """A float32 model of `preset`; norm scales random (not 0) so (1 + scale) is exercised."""
  cfg = model_config.get_preset(preset, dtype="float32", **overrides)
  model = Transformer(cfg, rngs=nnx.Rngs(params=seed))
  if randomize_norms:
    rng = np.random.default_rng(seed + 1)
    for _, node in nnx.iter_graph(model):
      if isinstance(node, layers.RMSNorm):
        scale = np.asarray(node.scale[...])
        node.scale.set_value(jnp.asarray(rng.normal(0, 0.3, scale.shape), scale.dtype))
  return model


def random_tokens(rng: np.random.Generator, batch: int, length: int, vocab: int) -> np.ndarray:
  return rng.integers(0, vocab, size=(batch, length)).astype(np.int32)


def padded_inputs(tokens: np.ndarray, lengths, left: bool = False):
  """(tokens, positions, segment_ids) with each row's first `lengths[b]` tokens real, padded
  on the right (or the left); padding has token 0, position 0, segment 0."""
  b, l = tokens.shape
  toks = np.zeros_like(tokens)
  pos = np.zeros((b, l), np.int32)
  seg = np.zeros((b, l), np.int32)
  for i, n in enumerate(lengths):
    sl = slice(l - n, l) if left else slice(0, n)
    toks[i, sl] = tokens[i, :n]
    pos[i, sl] = np.arange(n)
    seg[i, sl] = 1
  return toks, pos, seg


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
  """max |a - b| / max |b|."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ---- Hugging Face oracle ---------------------------------------------------------------------


def hf_config(cfg: model_config.ModelConfig):
  """The transformers config equivalent to `cfg` (eager attention)."""
  import transformers  # pylint: disable=g-import-not-at-top

  common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim,
                intermediate_size=cfg.hidden_dim, num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
                max_position_embeddings=cfg.max_seq_len, tie_word_embeddings=True,
                attn_implementation="eager")
  layer_types = ["sliding_attention" if t == "local" else "full_attention"
                 for t in cfg.attention_types]
  scalar = cfg.head_dim if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar
  scalar = int(scalar) if float(scalar).is_integer() else scalar  # HF wants an int

  def rope(base, scale):
    if scale == 1.0:
      return {"rope_type": "default", "rope_theta": base}
    return {"rope_type": "linear", "rope_theta": base, "factor": scale}

  if cfg.family == "gemma1":
    assert all(t == "global" for t in cfg.attention_types)
    return transformers.GemmaConfig(hidden_act="gelu_pytorch_tanh",
                                    rope_parameters=rope(cfg.global_rope_base,
                                                         cfg.global_rope_scale), **common)
  if cfg.family == "gemma2":
    assert cfg.local_rope_base == cfg.global_rope_base
    assert cfg.local_rope_scale == cfg.global_rope_scale
    return transformers.Gemma2Config(
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=scalar,
        sliding_window=cfg.sliding_window, layer_types=layer_types,
        final_logit_softcapping=cfg.final_logit_softcap,
        attn_logit_softcapping=cfg.attn_logit_softcap,
        rope_parameters=rope(cfg.global_rope_base, cfg.global_rope_scale), **common)
  return transformers.Gemma3TextConfig(
      hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=scalar,
      sliding_window=cfg.sliding_window, layer_types=layer_types,
      final_logit_softcapping=cfg.final_logit_softcap,
      attn_logit_softcapping=cfg.attn_logit_softcap,
      rope_parameters={"sliding_attention": rope(cfg.local_rope_base, cfg.local_rope_scale),
                       "full_attention": rope(cfg.global_rope_base, cfg.global_rope_scale)},
      **common)


def hf_state_dict(model: Transformer) -> dict:
  """Our parameters under Hugging Face names (torch float32 tensors, [out, in] Linear layout)."""
  import torch  # pylint: disable=g-import-not-at-top

  cfg = model.config
  t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731  (a writable copy)
  d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  sd = {"model.embed_tokens.weight": t(model.embedder.input_embedding[...]),
        "model.norm.weight": t(model.final_norm.scale[...])}
  for i, blk in enumerate(model.layers):
    p = f"model.layers.{i}."
    sd[p + "input_layernorm.weight"] = t(blk.pre_attention_norm.scale[...])
    if cfg.family == "gemma1":
      sd[p + "post_attention_layernorm.weight"] = t(blk.pre_ffw_norm.scale[...])
    else:
      sd[p + "post_attention_layernorm.weight"] = t(blk.post_attention_norm.scale[...])
      sd[p + "pre_feedforward_layernorm.weight"] = t(blk.pre_ffw_norm.scale[...])
      sd[p + "post_feedforward_layernorm.weight"] = t(blk.post_ffw_norm.scale[...])
    sd[p + "self_attn.q_proj.weight"] = t(np.asarray(blk.q[...]).reshape(d, n * h).T)
    sd[p + "self_attn.k_proj.weight"] = t(np.asarray(blk.k[...]).reshape(d, k * h).T)
    sd[p + "self_attn.v_proj.weight"] = t(np.asarray(blk.v[...]).reshape(d, k * h).T)
    sd[p + "self_attn.o_proj.weight"] = t(np.asarray(blk.o[...]).reshape(n * h, d).T)
    if cfg.use_qk_norm:
      sd[p + "self_attn.q_norm.weight"] = t(blk.query_norm.scale[...])
      sd[p + "self_attn.k_norm.weight"] = t(blk.key_norm.scale[...])
    sd[p + "mlp.gate_proj.weight"] = t(np.asarray(blk.gate[...]).T)
    sd[p + "mlp.up_proj.weight"] = t(np.asarray(blk.up[...]).T)
    sd[p + "mlp.down_proj.weight"] = t(np.asarray(blk.down[...]).T)
  return sd


def hf_model(model: Transformer):
  """A transformers CausalLM (float32, eval, eager attention) holding `model`'s weights."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  cfg = model.config
  hf_cfg = hf_config(cfg)
  cls = {"gemma1": transformers.GemmaForCausalLM, "gemma2": transformers.Gemma2ForCausalLM,
         "gemma3": transformers.Gemma3ForCausalLM}[cfg.family]
  torch.manual_seed(0)
  hf = cls(hf_cfg).to(torch.float32).eval()
  sd = hf_state_dict(model)
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  assert not unexpected, unexpected
  assert set(missing) <= {"lm_head.weight"}, missing
  assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()  # tied
  return hf


def hf_logits(hf, tokens: np.ndarray, attention_mask: np.ndarray | None = None,
              position_ids: np.ndarray | None = None) -> np.ndarray:
  """float32 logits [B, L, V] of the HF model (no cache)."""
  import torch  # pylint: disable=g-import-not-at-top

  kwargs = {"input_ids": torch.from_numpy(np.asarray(tokens, np.int64)), "use_cache": False}
  if attention_mask is not None:
    kwargs["attention_mask"] = torch.from_numpy(np.asarray(attention_mask, np.int64))
  if position_ids is not None:
    kwargs["position_ids"] = torch.from_numpy(np.asarray(position_ids, np.int64))
  with torch.no_grad():
    return hf(**kwargs).logits.float().numpy()
