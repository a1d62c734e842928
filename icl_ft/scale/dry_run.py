"""Compile-only dry runs of the train and scoring steps: memory and FLOPs per device, no weights.

`--config.dry_run=true` on `icl-ft-train` / `icl-ft-eval` calls `train_dry_run(config)` /
`eval_dry_run(config)`: the configured preset is built abstract (`icl_ft.model.builder.abstract`,
shapes and shardings only, nothing allocated) on the configured mesh, and the *real* jitted
steps are lowered and compiled with abstract inputs (`jax.ShapeDtypeStruct` carrying their
shardings):

- train: `icl_ft.train.step.TrainStep`'s train step (params and AdamW state donated) on a
  [data.batch_size, data.seq_len] batch;
- eval: `icl_ft.inference.prefill`'s prefill step (batch 1, `scoring.prefill_chunk` tokens into a cache
  of the context's slots) and suffix step (`scoring.batch_size` rows of `max_suffix_len`
  tokens attending that batch-1 cache as a shared prefix). The context length is the real one
  when the datasets and tokenizer are configured (tokenization only), else
  `dry_run_context_tokens`.

XLA's `compiled.memory_analysis()` gives per-device argument, output, alias and temp bytes;
the peak of a step is arguments + outputs - aliased (donated) + temp. `cost_analysis()` gives
the FLOPs of the per-device program. Both are compared with `icl_ft.scale.memory.estimate`.
`check_fits` raises `DoesNotFitError` (a ValueError: the binaries print one `error:` line and
exit 1) when the peak exceeds the device memory: `device_memory_gib` from the config, else what
the device reports (`memory_stats()["bytes_limit"]`; CPU reports nothing, then nothing is
checked).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from icl_ft import sharding
from icl_ft.evaluation import contexts
from icl_ft.evaluation import evaluate
from icl_ft.inference import prefill
from icl_ft.inference import scoring
from icl_ft.model import builder
from icl_ft.model import loader
from icl_ft.pipeline import loader as data_loader
from icl_ft.scale import memory
from icl_ft.train import loop
from icl_ft.train import optimizer as optimizer_lib
from icl_ft.train import step as step_lib

GiB = 1024**3


class DoesNotFitError(ValueError):
  """The compiled step needs more memory per device than the device has."""

@dataclasses.dataclass(frozen=True)
class CompiledStep:
  """XLA's per-device accounting of one compiled step."""
  name: str
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  flops: float  # per device (the SPMD-partitioned program)
  compile_s: float

  @property
  def peak_bytes(self) -> int:
    """Arguments + outputs not aliased to a donated argument + temporaries + code."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes


@dataclasses.dataclass(frozen=True)
class DryRunReport:
  """What a dry run measured (bytes per device) next to the estimator's numbers."""
  binary: str  # "train" | "eval"
  preset: str
  mesh_shape: dict[str, int]
  num_params: int
  params_bytes: int  # per device, from the parameters' shardings
  optimizer_bytes: int  # AdamW moments (train) / KV caches (eval), per device
  steps: tuple[CompiledStep, ...]
  estimate: Any  # icl_ft.scale.memory.MemoryEstimate
  device_memory_bytes: int | None
  tokens_per_step: int
  notes: tuple[str, ...] = ()

  @property
  def peak_bytes(self) -> int:
    return max(s.peak_bytes for s in self.steps)

  @property
  def fits(self) -> bool:
    return self.device_memory_bytes is None or self.peak_bytes <= self.device_memory_bytes

  def lines(self) -> list[str]:
    """The human-readable report, one line per fact."""
    g = lambda b: f"{b / GiB:.3f} GiB"
    est = self.estimate
    mesh = " x ".join(f"{k}={v}" for k, v in self.mesh_shape.items())
    out = [f"dry run ({self.binary}): {self.preset}, {self.num_params:,} params, mesh {mesh}"]
    second = "AdamW moments" if self.binary == "train" else "KV caches"
    out.append(f"  per device: params {g(self.params_bytes)}, {second} {g(self.optimizer_bytes)}")
    for s in self.steps:
      out.append(f"  {s.name}: arguments {g(s.argument_bytes)}, outputs {g(s.output_bytes)} "
                 f"(aliased {g(s.alias_bytes)}), temp {g(s.temp_bytes)}, peak {g(s.peak_bytes)}; "
                 f"{s.flops / 1e12:.3f} TFLOP per device per step; compiled in {s.compile_s:.1f} s")
    if self.binary == "train":
      s = self.steps[0]
      n_dev = math.prod(self.mesh_shape.values())
      analytic = 6 * self.num_params * self.tokens_per_step
      out.append(f"  FLOPs: {s.flops * n_dev / 1e12:.2f} TFLOP per step over all devices "
                 f"(6 x params x tokens = {analytic / 1e12:.2f})")
      out.append(f"  estimator: params + AdamW {g(est.params + est.optimizer)} vs XLA arguments "
                 f"{g(s.argument_bytes)} ({_ratio(s.argument_bytes, est.params + est.optimizer)}); "
                 f"grads + gathered weights + activations {g(est_temp(est))} vs XLA temp "
                 f"{g(s.temp_bytes)} ({_ratio(s.temp_bytes, est_temp(est))}); "
                 f"total {g(est.total_training)} vs XLA peak {g(s.peak_bytes)} "
                 f"({_ratio(s.peak_bytes, est.total_training)})")
    else:
      out.append(f"  estimator: params {g(est.params)} + KV caches {g(self.optimizer_bytes)} vs "
                 f"XLA arguments of the suffix step {g(self.steps[-1].argument_bytes)}")
    out.extend(f"  note: {n}" for n in self.notes)
    limit = ("unknown (not checked)" if self.device_memory_bytes is None
             else g(self.device_memory_bytes))
    verdict = "fits" if self.fits else "DOES NOT FIT"
    out.append(f"  peak {g(self.peak_bytes)} per device; device memory {limit}: {verdict}")
    return out


def est_temp(est: Any) -> int:
  """The estimator's counterpart of XLA's temp size for a training step."""
  return est.grads + est.weights + est.activations


def _ratio(measured: float, estimated: float) -> str:
  return f"XLA / estimate = {measured / estimated:.2f}" if estimated else "no estimate"


def compiled_step(name: str, compiled: Any, compile_s: float) -> CompiledStep:
  """Reads memory_analysis() and cost_analysis() of a compiled executable."""
  mem = compiled.memory_analysis()
  if mem is None:
    raise ValueError("this backend reports no memory analysis for compiled programs")
  cost = compiled.cost_analysis()
  if isinstance(cost, Sequence) and not isinstance(cost, Mapping):  # older JAX: one per program
    cost = cost[0] if cost else {}
  flops = float((cost or {}).get("flops", 0.0))
  return CompiledStep(name=name, argument_bytes=int(mem.argument_size_in_bytes),
                      output_bytes=int(mem.output_size_in_bytes),
                      alias_bytes=int(mem.alias_size_in_bytes),
                      temp_bytes=int(mem.temp_size_in_bytes),
                      code_bytes=int(getattr(mem, "generated_code_size_in_bytes", 0) or 0),
                      flops=flops, compile_s=compile_s)


def device_memory_bytes(config: Any) -> int | None:
  """`config.device_memory_gib` in bytes, else the device's reported limit, else None."""
  gib = float(config.device_memory_gib or 0.0)
  if gib > 0:
    return int(gib * GiB)
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  # CPU and some plugins raise / return None
    stats = None
  limit = (stats or {}).get("bytes_limit")
  return int(limit) if limit else None


def check_fits(report: DryRunReport) -> None:
  """Raises DoesNotFitError (one line) when the peak exceeds the device memory."""
  if report.fits:
    return
  mesh = ",".join(f"{k}={v}" for k, v in report.mesh_shape.items())
  worst = max(report.steps, key=lambda s: s.peak_bytes)
  raise DoesNotFitError(
      f"{report.preset} ({report.binary}, mesh {mesh}) needs {worst.peak_bytes / GiB:.2f} GiB per "
      f"device in its {worst.name} (arguments {worst.argument_bytes / GiB:.2f}, temp "
      f"{worst.temp_bytes / GiB:.2f}), more than the {report.device_memory_bytes / GiB:.2f} GiB of "
      f"device memory (config.device_memory_gib); use more fsdp/tensor devices, a smaller "
      f"batch or sequence, or a bigger topology")


def _abstract(x: Any, target: Any) -> Any:
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=target)


def _compile(name: str, jitted: Any, mesh: Any, rules: Any, *args: Any) -> CompiledStep:
  # Nothing runs, so on CPU skip LLVM's optimizations (most of the compile time); buffer
  # assignment, hence memory_analysis(), happens before them and is unaffected.
  options = ({"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
             if jax.default_backend() == "cpu" else None)
  start = time.perf_counter()
  with sharding.use_mesh(mesh, rules):
    compiled = jitted.lower(*args).compile(compiler_options=options)
  return compiled_step(name, compiled, time.perf_counter() - start)


def train_dry_run(config: Any) -> DryRunReport:
  """Compiles the training step of `config` (configs/train.py) abstractly; see the module doc."""
  cfg = loader.model_config_from(config.model)
  mesh, rules = sharding.mesh_from_config(config.mesh)
  loop.check_batch(config, mesh)
  batch_size, seq_len = int(config.data.batch_size), int(config.data.seq_len)
  graphdef, abs_state, _ = builder.abstract(cfg, mesh, rules)
  params = nnx.to_pure_dict(nnx.filter_state(abs_state, nnx.Param))
  rest = nnx.filter_state(abs_state, nnx.Not(nnx.Param))
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  tx, _ = optimizer_lib.make_optimizer(config.optimizer, int(config.steps))
  abs_opt, opt_shardings = step_lib.opt_state_shardings(tx, params, param_shardings, mesh)
  stepper = step_lib.TrainStep(graphdef=graphdef, rest=rest, tx=tx,
                               param_shardings=param_shardings, opt_shardings=opt_shardings,
                               mesh=mesh, rules=rules)
  data = sharding.data_sharding(mesh, rules)
  batch = {k: jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32, sharding=data)
           for k in data_loader.BATCH_KEYS}
  lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=sharding.replicated(mesh))
  # The real step's jit (TrainStep wraps it in a mesh context when called with arrays).
  step = _compile("train step", stepper._train, mesh, rules,  # pylint: disable=protected-access
                  params, abs_opt, rest, batch, lr)
  est = memory.estimate(cfg, mesh, batch_size, seq_len, rules)
  return DryRunReport(
      binary="train", preset=cfg.name, mesh_shape=dict(mesh.shape), num_params=est.num_params,
      params_bytes=est.params, optimizer_bytes=est.optimizer, steps=(step,), estimate=est,
      device_memory_bytes=device_memory_bytes(config), tokens_per_step=batch_size * seq_len)


def _context_tokens(config: Any) -> tuple[int, int, str]:
  """(context tokens incl. BOS, longest prompt + choice, where from) for the eval dry run."""
  dirs = evaluate.parse_list(config.datasets)
  tok_path = config.model.tokenizer
  if dirs and tok_path:
    cfg = loader.model_config_from(config.model)
    tokenizer = loader.load_tokenizer(config.model, cfg)
    fmt = evaluate.prompt_format(config)
    loaded = evaluate.load_datasets(dirs, evaluate.parse_list(config.splits))
    budgets = [contexts.plan_contexts(n, ds, str(config.condition), tokenizer, fmt,
                                      int(config.icl.subsample),
                                      int(config.icl.seed), int(cfg.max_seq_len),
                                      bool(config.icl.shards))
               for n, ds, _ in loaded]
    ctx = max(len(p.context_ids) for plans, _ in budgets for p in plans)
    longest = max(n for _, n in budgets)
    return ctx, longest, "the configured datasets"
  return (int(config.dry_run_context_tokens),
          int(config.dry_run_suffix_tokens),
          "config.dry_run_context_tokens / dry_run_suffix_tokens (no datasets + tokenizer set)")


def eval_dry_run(config: Any) -> DryRunReport:
  """Compiles the scoring steps of `config` (configs/eval.py) abstractly; see the module doc."""
  cfg = loader.model_config_from(config.model)
  mesh, rules = sharding.mesh_from_config(config.mesh)
  batch_size = int(config.scoring.batch_size)
  dp = sharding.data_parallel_size(mesh)
  if batch_size < 1 or batch_size % dp:
    raise ValueError(f"config.scoring.batch_size={batch_size} must be a positive multiple of the "
                     f"data-parallel size {dp} (mesh data x fsdp)")
  ctx, longest, source = _context_tokens(config)
  if ctx + longest > cfg.max_seq_len:
    raise ValueError(f"context ({ctx} tokens) plus the longest question ({longest}) exceeds "
                     f"{cfg.name}'s max_seq_len {cfg.max_seq_len}")
  chunk = max(int(config.scoring.prefill_chunk), 1)
  # The same slot arithmetic as ContextScorer._prefill: full chunks, then the rest bucketed.
  sizes = [chunk] * (ctx // chunk)
  if ctx % chunk:
    sizes.append(min(prefill.bucket_length(ctx % chunk), chunk) if sizes
                 else prefill.bucket_length(ctx))
  suffix_len = prefill.bucket_length(longest)
  slots = sum(sizes)  # the context only: suffix rows attend it as a shared prefix

  graphdef, abs_state, _ = builder.abstract(cfg, mesh, rules)
  state = abs_state  # the scorer's nnx.split(model) state, abstract
  model = nnx.merge(graphdef, abs_state)  # for init_cache's shapes only
  replicated = sharding.replicated(mesh)
  cache1 = jax.eval_shape(lambda: model.init_cache(1, slots))
  cache1 = jax.tree.map(lambda x: _abstract(x, replicated), cache1)
  longest_chunk = max(sizes)
  ints = lambda shape, s: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=s)
  data = sharding.data_sharding(mesh, rules)
  # The prefill's and scorer's module-level jitted steps (the graphdef is their static first
  # argument).
  prefill_step = _compile("prefill step", prefill._prefill_fn, mesh, rules,  # pylint: disable=protected-access
                          graphdef, state, cache1, ints((1, longest_chunk), replicated),
                          ints((1, longest_chunk), replicated),
                          ints((1, longest_chunk), replicated), ints((), replicated))
  first = jax.ShapeDtypeStruct((cfg.vocab_size,), jnp.float32, sharding=replicated)
  mask = jax.ShapeDtypeStruct((batch_size, suffix_len), jnp.bool_, sharding=data)
  suffix_step = _compile("suffix step", scoring._suffix_fn, mesh, rules,  # pylint: disable=protected-access
                         graphdef, scoring.vocab_chunk(mesh), state, cache1, first, ints((batch_size, suffix_len), data),
                         ints((batch_size, suffix_len), data), ints((batch_size, suffix_len), data),
                         mask)
  est = memory.estimate(cfg, mesh, batch_size, suffix_len, rules)

  def per_device(tree) -> int:
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
               for x in jax.tree.leaves(tree))

  cache_bytes = per_device(cache1)
  notes = (f"context {ctx} tokens ({len(sizes)} prefill chunk(s) of <= {chunk}), questions "
           f"<= {longest} tokens (suffix {suffix_len}), cache {slots} slots: from {source}",)
  return DryRunReport(
      binary="eval", preset=cfg.name, mesh_shape=dict(mesh.shape), num_params=est.num_params,
      params_bytes=est.params, optimizer_bytes=cache_bytes, steps=(prefill_step, suffix_step), estimate=est,
      device_memory_bytes=device_memory_bytes(config), tokens_per_step=batch_size * suffix_len,
      notes=notes)


def run(config: Any, kind: str) -> DryRunReport:
  """The dry run of `kind` ("train" | "eval"), printed (process 0); DoesNotFitError if too big."""
  report = train_dry_run(config) if kind == "train" else eval_dry_run(config)
  if jax.process_index() == 0:
    print("\n".join(report.lines()), flush=True)
  check_fits(report)
  return report
