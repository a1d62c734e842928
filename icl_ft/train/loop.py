"""The training loop: `train(config) -> TrainResult` (config from configs/train.py).

Order of work (everything that can fail on bad input fails before anything is written):

1. `initialize_distributed(config.multihost)` (if enabled) - before any device is touched.
2. Build the mesh (the config is validated by the caller: icl_ft.config.checks); load the model and tokenizer
   (`icl_ft.model.loader.load_model`: an orbax or official checkpoint, or a fresh init);
   build the grain iterator (`icl_ft.pipeline.loader.make_train_iterator`).
3. Optimizer (`optimizer.make_optimizer`) and the jitted step (`step.TrainStep`).
4. If the checkpoint directory has a complete step: check it is of this model's shape, and
   restore params, optimizer state and the iterator state from the latest step; else
   initialize the optimizer state.
5. Loop to `config.steps`: next batch -> global arrays -> train step. Metrics of step t are
   read after step t+1 has been dispatched (the device never waits for the host), except on
   checkpoint steps: the loss and every parameter must be finite before the state is saved.
   A NaN/inf loss or parameter raises `NonFiniteLossError`; no checkpoint is written for it,
   so the last one (finite, and named in the error) stays the newest.
6. A final checkpoint at `config.steps`; pending asynchronous saves are waited for.

Exact resume: the checkpoint of step k holds the parameters and optimizer state after k
updates and the iterator state after k batches, so a restarted run computes steps k+1, ...
from exactly the same state and data as an uninterrupted one (same devices and mesh: the
compiled step is the same program, so results are bit-identical on CPU and deterministic
backends).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from icl_ft.config import schema
from icl_ft.model import checkpoints as ckpt_lib
from icl_ft.train import metrics as metrics_lib
from icl_ft.train import optimizer as optimizer_lib
from icl_ft.train import step as step_lib

log = logging.getLogger(__name__)

EXAMPLE_IDS_KEY = "example_ids"


class NonFiniteLossError(FloatingPointError):
  """The training loss or parameters became NaN or infinite; the run stopped without
  checkpointing them."""


@dataclasses.dataclass
class TrainResult:
  """What `train` returns.

  model: the trained model (global arrays on the mesh), tokenizer: its tokenizer.
  step: the last step trained (== config.steps). start_step: the step resumed from (0 for a
  fresh run). records: the per-step records this call logged (every process has them).
  final_loss: the loss of the last step trained here (None if nothing was trained).
  checkpoint_dir: where checkpoints went (None if disabled). workdir: the run directory.
  compiles: how many train-step executables were compiled (1: no retrace; 0: no step ran).
  """

  model: Any
  tokenizer: Any
  step: int
  start_step: int
  records: list[dict[str, Any]]
  final_loss: float | None
  checkpoint_dir: str | None
  workdir: str
  mesh: Any = None
  compiles: int = 0


# ---------------------------------------------------------------------------
# Multi-host
# ---------------------------------------------------------------------------


MULTIHOST_ENV = "ICL_FT_MULTIHOST"


def multihost_requested(mh: Any) -> bool:
  """Whether to initialize: `mh.initialize`, or ICL_FT_MULTIHOST=1 (launch_tpu.sh's `run`)."""
  if os.environ.get(MULTIHOST_ENV, "").strip().lower() in ("1", "true", "yes"):
    return True
  return bool(mh is not None and mh.initialize)


def initialize_distributed(mh: Any) -> bool:
  """`jax.distributed.initialize` from the `multihost` config block; returns whether it ran.

  The one place every binary decides this: it runs when `mh.initialize` is true or the
  environment has ICL_FT_MULTIHOST=1 (then a missing block means all fields unset).
  Unset fields come from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, then
  from JAX's cluster auto-detection. On CPU the cross-process collectives implementation
  (`jax_cpu_collectives_implementation`) is set to `mh.cpu_collectives` ("gloo") first.
  Idempotent: a second call in an initialized process does nothing.
  """
  if not multihost_requested(mh):
    return False
  mh = schema.MultihostConfig() if mh is None else mh
  if jax.distributed.is_initialized():
    return True
  collectives = mh.cpu_collectives
  if collectives:
    jax.config.update("jax_cpu_collectives_implementation", collectives)
  address = mh.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num = int(mh.num_processes) or int(os.environ.get("JAX_NUM_PROCESSES", 0) or 0)
  pid = int(mh.process_id)
  if pid < 0 and os.environ.get("JAX_PROCESS_ID", "") != "":
    pid = int(os.environ["JAX_PROCESS_ID"])
  kwargs: dict[str, Any] = {}
  if address:
    kwargs["coordinator_address"] = address
  if num:
    kwargs["num_processes"] = num
  if pid >= 0:
    kwargs["process_id"] = pid
  jax.distributed.initialize(**kwargs)
  return True


# ---------------------------------------------------------------------------
# Config checks
# ---------------------------------------------------------------------------


def _mesh_sizes(mesh_cfg: Any) -> dict[str, int]:
  return {a: int(getattr(mesh_cfg, a)) for a in ("data", "fsdp", "tensor")}


def _rules(mesh_cfg: Any) -> dict[str, Any] | None:
  return dict(mesh_cfg.rules) or None


def check_batch(config: Any, mesh) -> None:
  """The global batch must split evenly over the data-parallel axes and the processes."""
  dp = int(mesh.shape["data"]) * int(mesh.shape["fsdp"])
  b = int(config.data.batch_size)
  if b % dp:
    raise ValueError(f"config.data.batch_size={b} is not divisible by the data-parallel size {dp} "
                     f"(mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']})")
  if b % jax.process_count():
    raise ValueError(f"config.data.batch_size={b} is not divisible by the process count "
                     f"{jax.process_count()}")


# ---------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------


def load_model(config: Any, mesh, rules=None):
  """(model, tokenizer) via icl_ft.model.loader.load_model (rules passed if it takes them)."""
  from icl_ft.model import loader  # pylint: disable=g-import-not-at-top

  params = inspect.signature(loader.load_model).parameters
  if "rules" in params:
    return loader.load_model(config.model, mesh, rules=rules)
  return loader.load_model(config.model, mesh)


def _transformer_init(model_cfg):
  from icl_ft.model.transformer import Transformer  # pylint: disable=g-import-not-at-top

  return lambda: Transformer(model_cfg, rngs=nnx.Rngs(params=0))


def make_mesh(config: Any, devices: Sequence[Any] | None = None):
  from icl_ft import sharding  # pylint: disable=g-import-not-at-top

  return sharding.make_mesh(_mesh_sizes(config.mesh), devices=devices)


def batch_fingerprint(batch: Mapping[str, np.ndarray]) -> str:
  """A short hash of a host-local batch (tokens, positions, segment ids, loss mask)."""
  h = hashlib.sha1()
  for k in step_lib.BATCH_KEYS:
    h.update(np.ascontiguousarray(batch[k], dtype=np.int32).tobytes())
  return h.hexdigest()[:16]


def batch_example_ids(example_ids: np.ndarray, positions: np.ndarray,
                      segment_ids: np.ndarray) -> list[int]:
  """The example index of every segment in the batch (row by row, in packing order)."""
  starts = (positions == 0) & (segment_ids > 0)
  return [int(x) for x in example_ids[starts]]


def _make_iterator(config: Any, tokenizer, mesh, *, dataset_dir: str, fmt: str,
                   num_epochs: int | None, with_ids: bool):
  from icl_ft.pipeline import loader as data_loader  # pylint: disable=g-import-not-at-top

  kwargs = {}
  bins = int(config.data.num_packing_bins)
  if bins:
    kwargs["num_packing_bins"] = bins
  return data_loader.make_train_iterator(
      dataset_dir, tokenizer, fmt=fmt, seq_len=int(config.data.seq_len),
      global_batch_size=int(config.data.batch_size), seed=int(config.data.seed),
      num_epochs=num_epochs, with_example_ids=with_ids, mesh=mesh, **kwargs)


def _to_global(batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  from icl_ft.pipeline import loader as data_loader  # pylint: disable=g-import-not-at-top

  return data_loader.to_global({k: batch[k] for k in step_lib.BATCH_KEYS}, mesh)


def _fetch(metrics: Mapping[str, jax.Array]) -> dict[str, float]:
  return {k: float(np.asarray(v)) for k, v in jax.device_get(dict(metrics)).items()}


def evaluate(config: Any, stepper: step_lib.TrainStep, params, tokenizer, mesh) -> dict[str, float]:
  """Held-out loss / accuracy over up to eval.num_batches batches of one pass."""
  ev = config.eval
  it = _make_iterator(config, tokenizer, mesh, dataset_dir=ev.dataset_dir,
                      fmt=ev.format or config.data.format, num_epochs=1,
                      with_ids=False)
  total = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
  for i, batch in enumerate(it):
    if i >= int(ev.num_batches):
      break
    sums = _fetch(stepper.eval(params, _to_global(batch, mesh)))
    for k in total:
      total[k] += sums[k]
  n = max(total["count"], 1.0)
  return {"eval_loss": total["loss_sum"] / n, "eval_accuracy": total["correct"] / n,
          "eval_tokens": total["count"]}


def check_params_finite(params: Any, step_no: int, last_saved: int | None) -> None:
  """NonFiniteLossError naming the first NaN/inf parameter after `step_no`'s update."""
  bad = ckpt_lib.nonfinite_leaves(params)
  if bad:
    raise NonFiniteLossError(
        f"non-finite parameters after step {step_no} ({len(bad)} arrays, e.g. {bad[0]!r}); "
        f"stopped without saving them (last good checkpoint: "
        f"{'step ' + str(last_saved) if last_saved else 'none'})")


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def schedule_settings(config: Any) -> dict[str, Any]:
  """What sets the learning-rate schedule (stored in each checkpoint's metadata)."""
  opt = config.optimizer
  return {"steps": int(config.steps),
          "optimizer": schema.plain(opt)}


def changed_schedule(saved_meta: Mapping[str, Any], config: Any) -> str | None:
  """`field old -> new, ...` where `config` changes the schedule a checkpoint was trained with.

  None when nothing changed, or the checkpoint predates these settings.
  """
  if "steps" not in saved_meta or "optimizer" not in saved_meta:
    return None
  old = {"steps": saved_meta["steps"], **{f"optimizer.{k}": v for k, v in saved_meta["optimizer"].items()}}
  current = schedule_settings(config)
  new = {"steps": current["steps"], **{f"optimizer.{k}": v for k, v in current["optimizer"].items()}}
  diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
           if old.get(k) != new.get(k)]
  return ", ".join(diffs) or None


def warn_changed_schedule(saved_meta: Mapping[str, Any], config: Any, step: int, where: str) -> None:
  """One `warning:` line on stderr (process 0) when a resume changes the lr schedule or steps."""
  diffs = changed_schedule(saved_meta, config)
  if diffs and jax.process_index() == 0:
    print(f"warning: resuming {where} at step {step} with a different schedule than it was trained "
          f"with: {diffs} (the remaining steps follow the new values; use a new workdir to start over)",
          file=sys.stderr, flush=True)


def train(config: Any, *, devices: Sequence[Any] | None = None, model: Any = None,
          tokenizer: Any = None) -> TrainResult:
  """Finetunes per `config` (configs/train.py), holding `config.workdir`'s lock (see `_train`).

  A second process training into the same workdir is refused at once (fileio.RunDirLockedError).
  """
  from icl_ft import fileio  # pylint: disable=g-import-not-at-top

  initialize_distributed(config.multihost)
  with fileio.run_dir_lock(config.workdir, "training run", enabled=jax.process_index() == 0):
    return _train(config, devices=devices, model=model, tokenizer=tokenizer)


def _train(config: Any, *, devices: Sequence[Any] | None = None, model: Any = None,
           tokenizer: Any = None) -> TrainResult:
  """Finetunes per `config` (configs/train.py), resuming from its latest checkpoint.

  Args:
    config: the training ConfigDict.
    devices: build the mesh from these devices instead of all (tests).
    model, tokenizer: use these instead of `load_model(config.model)` (the model is moved
      onto the mesh per its logical axes).

  Raises:
    ValueError (one line) for bad input: config, format, batch size vs mesh, empty dataset,
    a checkpoint directory of another model or preset. NonFiniteLossError on a NaN/inf loss
    or parameter.
  """
  from icl_ft import sharding  # pylint: disable=g-import-not-at-top

  initialize_distributed(config.multihost)
  mesh = make_mesh(config, devices)
  rules = _rules(config.mesh)
  check_batch(config, mesh)

  # Tokenizer and data first: data errors (empty dataset, too-long examples) surface before
  # any model is built.
  model_cfg = None
  if model is None:
    from icl_ft.model import loader as model_loader  # pylint: disable=g-import-not-at-top

    model_cfg = model_loader.model_config_from(config.model)
    if tokenizer is None:
      tokenizer = model_loader.load_tokenizer(config.model, model_cfg)
  if tokenizer is None:
    raise ValueError("config.model.tokenizer is required for training (a SentencePiece .model)")
  if hasattr(tokenizer, "check_model"):
    target_cfg = model_cfg if model_cfg is not None else getattr(model, "config", None)
    if target_cfg is not None:
      tokenizer.check_model(target_cfg)
  with_ids = bool(config.log.batch_ids)
  data_iter = _make_iterator(config, tokenizer, mesh, dataset_dir=config.data.dataset_dir,
                             fmt=config.data.format, num_epochs=None, with_ids=with_ids)
  total_steps = int(config.steps)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps)

  # Existing checkpoints: refuse (resume=false) or check they are of this model's shape,
  # before anything is allocated or written.
  ck = config.checkpoint
  ckpt_dir = None
  existing: list[int] = []
  if int(ck.every) > 0:
    ckpt_dir = ck.dir or os.path.join(os.fspath(config.workdir), "checkpoints")
    existing = ckpt_lib.checkpoint_steps(ckpt_dir)
    if existing and not ck.resume:
      raise ValueError(f"checkpoint directory {ckpt_dir} already has steps {existing}; set "
                       f"checkpoint.resume=true to continue or use a new directory")
    if existing:
      if model is None:
        _, abs_state, _ = sharding.abstract_transformer(model_cfg, mesh, rules)
        shapes = ckpt_lib.param_shapes(ckpt_lib.param_state(abs_state))
      else:
        shapes = ckpt_lib.param_shapes(ckpt_lib.param_state(model))
      ckpt_lib.check_shapes(
          ckpt_lib.saved_param_shapes(ckpt_lib.resolve_params_dir(ckpt_dir, existing[-1])),
          shapes, os.path.join(ckpt_dir, str(existing[-1])))
      if model_cfg is not None:
        ckpt_lib.check_preset(os.path.join(ckpt_dir, str(existing[-1])), config.model.preset)

  if model is None and existing:
    # Resuming: the parameters come from the training checkpoint, so the model is built
    # abstract (nothing allocated, model.checkpoint not read).
    model = sharding.create_for_restore(_transformer_init(model_cfg), mesh, rules)
  elif model is None:
    model, _ = load_model(config, mesh, rules)
  else:
    sharding.shard_model_state(model, mesh, rules)

  # The preset of the model trained (what a restore of these checkpoints is checked against).
  preset = getattr(getattr(model, "config", None), "name", None) or config.model.preset
  graphdef, params_state, rest = step_lib.split_model(model)
  params = nnx.to_pure_dict(params_state)
  param_shardings = jax.tree.map(lambda x: x.sharding, params)
  abstract_params = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
  abstract_opt, opt_shardings = step_lib.opt_state_shardings(tx, abstract_params, param_shardings,
                                                             mesh)
  stepper = step_lib.TrainStep(graphdef=graphdef, rest=rest, tx=tx,
                               param_shardings=param_shardings, opt_shardings=opt_shardings,
                               mesh=mesh, rules=rules)

  workdir = os.fspath(config.workdir)
  manager = None
  start_step = 0
  if ckpt_dir is not None:
    manager = ckpt_lib.TrainCheckpointManager(ckpt_dir, every=int(ck.every), keep=int(ck.keep),
                                              async_save=bool(ck.async_save))
    latest = manager.latest_step()
    if existing and latest != existing[-1]:
      raise ValueError(f"checkpoint directory {ckpt_dir}: orbax sees latest step {latest} but "
                       f"step {existing[-1]} is complete; inspect the directory")
    if latest is not None:
      del params  # the restored state replaces the initial one
      params, opt_state, start_step = manager.restore(latest, abstract_params, abstract_opt,
                                                      data_iter)
  if start_step == 0:
    opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)

  is_main = jax.process_index() == 0
  writer = metrics_lib.MetricsWriter(workdir, enabled=is_main,
                                     tensorboard=bool(config.log.tensorboard))
  writer.truncate_after(start_step)
  if start_step:
    log.info("resumed from %s at step %d", ckpt_dir, start_step)
    warn_changed_schedule(manager.read_meta(start_step), config, start_step, ckpt_dir)

  records: list[dict[str, Any]] = []
  log_every = int(config.log.every)
  eval_every = int(config.eval.every) if config.eval.dataset_dir else 0
  progress = None
  if is_main and config.log.progress and start_step < total_steps:
    import tqdm  # pylint: disable=g-import-not-at-top

    progress = tqdm.tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                         dynamic_ncols=True)

  last_saved = start_step if start_step else None
  pending: tuple[int, Any, dict[str, Any]] | None = None  # (step, device metrics, host info)
  t0 = time.perf_counter()
  tokens_seen = 0.0
  final_loss = None

  def finish(step_no: int, dev_metrics, info: dict[str, Any]) -> dict[str, Any]:
    nonlocal tokens_seen, final_loss
    m = _fetch(dev_metrics)
    if not math.isfinite(m["loss"]):
      raise NonFiniteLossError(
          f"non-finite loss {m['loss']} at step {step_no}; stopped without saving it "
          f"(last good checkpoint: {'step ' + str(last_saved) if last_saved else 'none'})")
    tokens_seen += m["tokens"]
    final_loss = m["loss"]
    elapsed = max(time.perf_counter() - t0, 1e-9)
    record = {**m, "tokens_per_s": tokens_seen / elapsed, **info}
    if step_no % log_every == 0 or step_no == total_steps:
      writer.write(step_no, record)
    records.append({"step": step_no, **record})
    if progress is not None:
      progress.update(step_no - progress.n)
      progress.set_postfix(loss=f"{m['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
    return record

  try:
    for step_no in range(start_step + 1, total_steps + 1):
      try:
        host_batch = next(data_iter)
      except StopIteration:
        raise ValueError("the training data iterator ended early") from None
      info: dict[str, Any] = {"batch_hash": batch_fingerprint(host_batch)}
      if with_ids:
        info["example_ids"] = batch_example_ids(
            np.asarray(host_batch[EXAMPLE_IDS_KEY]), np.asarray(host_batch["positions"]),
            np.asarray(host_batch["segment_ids"]))
      batch = _to_global(host_batch, mesh)
      # optax convention: update t (1-based) uses schedule(t - 1).
      learning_rate = float(schedule(step_no - 1))
      info["learning_rate"] = learning_rate
      params, opt_state, dev_metrics = stepper.train(params, opt_state, batch, learning_rate)
      if pending is not None:
        finish(*pending)
        pending = None
      due_save = manager is not None and (step_no % int(ck.every) == 0 or step_no == total_steps)
      due_eval = eval_every and (step_no % eval_every == 0 or step_no == total_steps)
      if due_save or due_eval or step_no == total_steps:
        finish(step_no, dev_metrics, info)  # the loss must be finite before saving
      else:
        pending = (step_no, dev_metrics, info)
      if due_save or step_no == total_steps:
        # A step's loss is that of the parameters before its update: finite parameters
        # are checked as well, or a NaN update would be saved as the last good state.
        check_params_finite(params, step_no, last_saved)
      if due_save:
        meta = {"preset": preset,
                "model": schema.plain(config.model),
                "data": schema.plain(config.data),
                "process_count": jax.process_count()}
        meta.update(schedule_settings(config))
        manager.save(step_no, params, opt_state, data_iter, meta, force=True)
        last_saved = step_no
      if due_eval:
        ev = evaluate(config, stepper, params, tokenizer, mesh)
        writer.write(step_no, ev)
        records[-1].update(ev)
    if pending is not None:
      finish(*pending)
      pending = None
  finally:
    if progress is not None:
      progress.close()
    writer.close()
    if manager is not None:
      manager.close()

  trained = nnx.merge(graphdef, params, rest)
  return TrainResult(model=trained, tokenizer=tokenizer, step=max(total_steps, start_step),
                     start_step=start_step, records=records, final_loss=final_loss,
                     checkpoint_dir=ckpt_dir, workdir=workdir, mesh=mesh,
                     compiles=stepper.cache_size())
