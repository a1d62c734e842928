"""Building blocks: parameters with logical axis names, RMSNorm, embedder, RoPE, the weight
matmul (`einsum`, float32-accumulated with written-out gradients), GeGLU.

Every parameter is an `nnx.Param` whose flax metadata `out_sharding` holds its logical axis
names (e.g. ("vocab", "embed")); `icl_ft.sharding` maps them to mesh axes, and
`nnx.get_partition_spec(nnx.state(model))` returns them. Parameters are created without eager
sharding unless a mesh is active (so a model can be built on a single device without any
mesh; `icl_ft.model.builder.fresh` creates them sharded under jit).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import meta

Initializer = Callable[..., jax.Array]


def _mesh_active() -> bool:
  try:
    if not jax.sharding.get_abstract_mesh().empty:
      return True
  except Exception:  # pylint: disable=broad-except
    pass
  try:
    return meta.get_global_mesh() is not None
  except Exception:  # pylint: disable=broad-except
    return False


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], dtype,
          names: Sequence[str | None]) -> nnx.Param:
  """An nnx.Param initialized with `init(key, shape, dtype)`, carrying logical axis `names`."""
  if len(names) != len(shape):
    raise ValueError(f"{len(names)} logical names {tuple(names)} for shape {tuple(shape)}")
  value = init(rngs.params(), tuple(shape), dtype)
  kwargs = {} if _mesh_active() else {"eager_sharding": False}
  return nnx.Param(value, out_sharding=tuple(names), **kwargs)


def fan_in_init(fan_in: int) -> Initializer:
  """Normal with stddev 1/sqrt(fan_in) (variance-preserving for a projection)."""
  return nnx.initializers.normal(stddev=float(fan_in) ** -0.5)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / rms(x) * (1 + scale) over the last axis, computed in float32, returned in x.dtype.

  Its gradient is written out (a custom VJP): differentiated as written, XLA:CPU makes extra
  passes over x and materializes (1 + scale) broadcast to x's shape.
  """
  return _rms_norm(x, scale, float(eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  return _rms_norm_fwd(x, scale, eps)[0]


def _rms_norm_fwd(x, scale, eps):
  xf = x.astype(jnp.float32)
  r = jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)  # [..., 1]
  y = xf * r * (1.0 + scale.astype(jnp.float32))
  return y.astype(x.dtype), (x, scale, r)


def _rms_norm_bwd(eps, residuals, dy):
  del eps  # folded into r
  x, scale, r = residuals
  xn = x.astype(jnp.float32) * r
  dy = dy.astype(jnp.float32)
  g = dy * (1.0 + scale.astype(jnp.float32))
  # d(x * r)/dx applied to g, with r = rsqrt(mean(x^2) + eps): r * (g - xn * mean(g * xn)).
  dx = r * (g - xn * jnp.mean(g * xn, axis=-1, keepdims=True))
  dscale = jnp.sum(dy * xn, axis=tuple(range(x.ndim - 1)))
  return dx.astype(x.dtype), dscale.astype(scale.dtype)


_rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


class RMSNorm(nnx.Module):
  """Gemma RMSNorm: `scale` starts at 0, the multiplier is (1 + scale)."""

  def __init__(self, dim: int, *, eps: float = 1e-6, param_dtype=jnp.float32,
               names: Sequence[str | None] = ("norm",), rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(rngs, nnx.initializers.zeros_init(), (dim,), param_dtype, names)

  def __call__(self, x: jax.Array) -> jax.Array:
    return rms_norm(x, self.scale[...], self.eps)


class Embedder(nnx.Module):
  """Token embedding [V, D], scaled by sqrt(D) on the way in, tied to the output logits."""

  def __init__(self, vocab_size: int, embed_dim: int, *, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.embed_dim = embed_dim
    # stddev 1/sqrt(D): inputs have unit scale after * sqrt(D), initial logits ~ unit scale.
    self.input_embedding = param(rngs, fan_in_init(embed_dim), (vocab_size, embed_dim),
                                 param_dtype, ("vocab", "embed"))

  def encode(self, tokens: jax.Array, dtype) -> jax.Array:
    """[B, L] int -> [B, L, D] in `dtype`, times sqrt(D) (rounded to `dtype`, as Gemma does)."""
    x = jnp.take(self.input_embedding[...], tokens, axis=0).astype(dtype)
    return x * jnp.sqrt(float(self.embed_dim)).astype(dtype)

  def decode(self, x: jax.Array) -> jax.Array:
    """[B, L, D] -> float32 logits [B, L, V] (x @ embedding.T, accumulated in float32)."""
    b, l, d = x.shape
    # One 2D gemm [B*L, D] x [V, D]^T: XLA:CPU's backward of the 3D einsum is much slower.
    logits = einsum("md,vd->mv", x.reshape(b * l, d), self.input_embedding[...], jnp.float32)
    return logits.reshape(b, l, -1)

  def target_logprobs(self, x: jax.Array, targets: jax.Array, cap: float | None,
                      chunk: int) -> jax.Array:
    """log softmax(softcap(decode(x)))[targets]: [B, L, D], [B, L] int -> [B, L] float32.

    chunk > 0: the log-normalizer is accumulated over vocabulary chunks of that many rows (a
    running max and sum of exponentials), so the [B, L, V] logits are never held: with a large
    vocabulary, writing and re-reading them costs more than the matmul (Gemma 3 270M scoring
    8 x 128 tokens on CPU: 4.8 s with the full log-softmax, 3.1 s in chunks of 16384). The
    scan walks the vocabulary axis, so callers use 0 (the full logits) on meshes that shard it.
    """
    b, l, d = x.shape
    table = self.input_embedding[...].astype(x.dtype)
    v = table.shape[0]
    flat = x.reshape(b * l, d)
    if chunk <= 0 or chunk >= v:
      logp = jax.nn.log_softmax(softcap(self.decode(x), cap), axis=-1)  # [B, L, V]
      return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    pad = -v % chunk
    chunks = jnp.pad(table, ((0, pad), (0, 0))).reshape(-1, chunk, d)  # [n, C, D]
    valid = (jnp.arange(chunks.shape[0] * chunk) < v).reshape(-1, chunk)  # [n, C]

    def step(carry, inputs):
      top, total = carry  # [M] each: running max and sum of exp(logit - max)
      w, ok = inputs
      z = softcap(jnp.einsum("md,cd->mc", flat, w, preferred_element_type=jnp.float32), cap)
      z = jnp.where(ok[None], z, -jnp.inf)
      new_top = jnp.maximum(top, z.max(axis=-1))
      total = total * jnp.exp(top - new_top) + jnp.exp(z - new_top[:, None]).sum(axis=-1)
      return (new_top, total), None

    m = b * l
    init = (jnp.full((m,), -jnp.inf, jnp.float32), jnp.zeros((m,), jnp.float32))
    (top, total), _ = jax.lax.scan(step, init, (chunks, valid))
    target = jnp.einsum("md,md->m", flat, jnp.take(table, targets.reshape(-1), axis=0),
                        preferred_element_type=jnp.float32)
    return (softcap(target, cap) - top - jnp.log(total)).reshape(b, l)


# Backends where `rope_tables` computes its tables apart from their consumers (see there).
_MATERIALIZE_ROPE = ("cpu",)


def rope_tables(positions: jax.Array, head_dim: int, *, base: float, scale: float = 1.0
                ) -> tuple[jax.Array, jax.Array]:
  """(sin, cos) float32 [B, L, 1, H/2] of the rotary angles at `positions` [B, L].

  Frequencies base ** (-2i / H); positions are divided by `scale` (linear RoPE scaling).
  Computed once per forward for all layers of one (base, scale).
  """
  fraction = 2.0 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
  inv_freq = 1.0 / (base ** fraction)                                   # [H/2]
  angles = positions.astype(jnp.float32)[..., None] / scale * inv_freq  # [B, L, H/2]
  sin_cos = lambda a: (jnp.sin(a), jnp.cos(a))  # noqa: E731
  if jax.default_backend() in _MATERIALIZE_ROPE:
    # Left to fusion, XLA:CPU computes sin and cos again for every element of q and k that
    # reads them (all heads, both halves, every layer, forward and backward). An optimization
    # barrier does not stop it (XLA:CPU drops barriers before fusion); a conditional's branch
    # does. The predicate is always true but not a constant.
    sin, cos = jax.lax.cond(jnp.min(positions) <= jnp.max(positions), sin_cos,
                            lambda a: (a, a), angles)
  else:
    sin, cos = sin_cos(angles)
  return sin[:, :, None, :], cos[:, :, None, :]


def apply_rope(x: jax.Array, tables: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotary embedding of x [B, L, N, H], half-split (dims [0, H/2) pair with [H/2, H)), in
  float32, with `rope_tables` of its positions.

  Its gradient is written out (a custom VJP): the transpose of a rotation is the rotation by
  the opposite angle, one pass like the forward, where the gradient as differentiated costs
  XLA:CPU a concatenation of the halves' partial sums.
  """
  return _rope(x, *tables)


def _rotate(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


@jax.custom_vjp
def _rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  return _rotate(x, sin, cos).astype(x.dtype)


def _rope_fwd(x, sin, cos):
  return _rope(x, sin, cos), (sin, cos)


def _rope_bwd(residuals, dy):
  sin, cos = residuals
  # The tables are functions of integer positions: no gradient flows to them.
  return _rotate(dy, -sin, cos).astype(dy.dtype), jnp.zeros_like(sin), jnp.zeros_like(cos)


_rope.defvjp(_rope_fwd, _rope_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def einsum(spec: str, x: jax.Array, w: jax.Array, out_dtype=None) -> jax.Array:
  """Einsum of activations x [M, D] and a weight w: operands in x.dtype, accumulated in
  float32, returned in out_dtype (default x.dtype); its two gradients likewise.

  A custom VJP: as differentiated by JAX, a bfloat16 step's backward matmuls take a float32
  cotangent against a bfloat16 operand or return bfloat16, and XLA:CPU runs either at about
  float32's speed; here each is bfloat16 x bfloat16 into float32, near twice that (the Gemma 3
  270M bfloat16 train step: 12.7 s -> 9.2 s). The weight's gradient comes back in w.dtype
  (float32 master weights keep a float32 gradient).
  """
  out_dtype = x.dtype if out_dtype is None else out_dtype
  return jnp.einsum(spec, x, w.astype(x.dtype), preferred_element_type=jnp.float32
                    ).astype(out_dtype)


def _einsum_fwd(spec, x, w, out_dtype):
  return einsum(spec, x, w, out_dtype), (x, w)


def _einsum_bwd(spec, out_dtype, residuals, dy):
  del out_dtype
  x, w = residuals
  operands, out = spec.split("->")
  xs, ws = operands.split(",")
  dy = dy.astype(x.dtype)
  dx = jnp.einsum(f"{out},{ws}->{xs}", dy, w.astype(x.dtype),
                  preferred_element_type=jnp.float32).astype(x.dtype)
  return dx, _weight_gradient(xs, out, ws, x, dy).astype(w.dtype)


def _weight_gradient(xs: str, out: str, ws: str, x: jax.Array, dy: jax.Array) -> jax.Array:
  """einsum(f"{xs},{out}->{ws}", x, dy) accumulated in float32.

  Both operands contract over their rows, and XLA:CPU runs such a dot outside its fast matmul
  path (bfloat16 upcast to float32). So on one CPU device the operand whose free index leads
  in w is first written out transposed: the Gemma 3 270M bfloat16 train step (8 x 128) went
  from 9.2 s to 7.0 s, float32 unchanged. Not on a mesh: there XLA shards the plain form.
  """
  mesh = jax.sharding.get_abstract_mesh()
  single_cpu = jax.default_backend() == "cpu" and (mesh.empty or mesh.size == 1)
  if single_cpu and len(xs) == len(out) == 2 and xs[0] == out[0]:
    if ws == xs[1] + out[1]:  # [D, F] = x^T dy
      return jnp.einsum(f"{xs[::-1]},{out}->{ws}", _transposed_copy(x), dy,
                        preferred_element_type=jnp.float32)
    if ws == out[1] + xs[1]:  # [V, D] = dy^T x
      return jnp.einsum(f"{out[::-1]},{xs}->{ws}", _transposed_copy(dy), x,
                        preferred_element_type=jnp.float32)
  return jnp.einsum(f"{xs},{out}->{ws}", x, dy, preferred_element_type=jnp.float32)


def _transposed_copy(x: jax.Array) -> jax.Array:
  """x.T [B, A] of x [A, B] written out row-major: a flat copy, which XLA cannot turn back
  into a transposed layout of x."""
  return jax.lax.optimization_barrier(x.T.reshape(-1)).reshape(x.shape[::-1])


einsum.defvjp(_einsum_fwd, _einsum_bwd)


def argmax(x: jax.Array) -> jax.Array:
  """Index of the first maximum along the last axis, int32 (as jnp.argmax for finite x).

  Written as a max and a min of the indices equal to it: XLA:CPU runs jnp.argmax's
  (value, index) reduce ~4x slower. A row holding NaN gives the axis size (no index).
  """
  top = jnp.max(x, axis=-1, keepdims=True)
  index = jnp.arange(x.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(x == top, index, x.shape[-1]), axis=-1)


def gelu_tanh(x: jax.Array) -> jax.Array:
  """GELU, tanh approximation (Gemma's and HF's gelu_pytorch_tanh)."""
  return jax.nn.gelu(x, approximate=True)


@jax.custom_vjp
def geglu(gate: jax.Array, up: jax.Array) -> jax.Array:
  """gelu_tanh(gate) * up, the GeGLU MLP's hidden units, with its gradient written out.

  A custom VJP: as differentiated by JAX, XLA:CPU makes three passes over [tokens, F] in the
  forward to keep the tanh and the GELU for the backward; here the forward is one pass and
  the backward recomputes them from `gate`.
  """
  return gelu_tanh(gate) * up


def _geglu_fwd(gate, up):
  return geglu(gate, up), (gate, up)


def _geglu_bwd(residuals, dh):
  gate, up = residuals
  c = jnp.sqrt(2.0 / jnp.pi).astype(gate.dtype)
  a = jnp.asarray(0.044715, gate.dtype)
  t = jnp.tanh(c * (gate + a * gate ** 3))
  cdf = 0.5 * (1.0 + t)  # gelu_tanh(g) = g * cdf
  # d(g * cdf)/dg = cdf + g * 0.5 * (1 - t^2) * c * (1 + 3 a g^2).
  dcdf = cdf + gate * (0.5 * (1.0 - t * t)) * c * (1.0 + 3.0 * a * gate * gate)
  return (dh * up * dcdf).astype(gate.dtype), (dh * gate * cdf).astype(up.dtype)


geglu.defvjp(_geglu_fwd, _geglu_bwd)


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
  """cap * tanh(x / cap); identity when cap is None."""
  if cap is None:
    return x
  return jnp.tanh(x / cap) * cap
