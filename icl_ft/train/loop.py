"""The training loop: `train(config) -> TrainResult` (config from configs/train.py).

Order of work (everything that can fail on bad input fails before anything is written):

1. `sharding.initialize_distributed(config.multihost)` (if enabled) - before any device is touched.
2. Build the mesh (`sharding.mesh_from_config`; the config is validated by the caller:
   `icl_ft.config.checks`); load the model and
   tokenizer (`icl_ft.model.loader.load_model`: an orbax or official checkpoint, or a fresh
   init; on a resume `icl_ft.model.builder.for_restore`, filled from the training checkpoint);
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
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import tqdm
from flax import nnx

from icl_ft import fileio
from icl_ft import sharding
from icl_ft.config import schema
from icl_ft.model import builder
from icl_ft.model import checkpoints as ckpt_lib
from icl_ft.model import loader as model_loader
from icl_ft.pipeline import formats
from icl_ft.pipeline import loader as data_loader
from icl_ft.train import checkpoints as train_checkpoints
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
# Config checks
# ---------------------------------------------------------------------------




def check_batch(config: Any, mesh) -> None:
  """The global batch must split evenly over the data-parallel axes and the processes."""
  dp = sharding.data_parallel_size(mesh)
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


def batch_fingerprint(batch: Mapping[str, np.ndarray]) -> str:
  """A short hash of a host-local batch (tokens, positions, segment ids, loss mask)."""
  h = hashlib.sha1()
  for k in data_loader.BATCH_KEYS:
    h.update(np.ascontiguousarray(batch[k], dtype=np.int32).tobytes())
  return h.hexdigest()[:16]


def batch_example_ids(example_ids: np.ndarray, positions: np.ndarray,
                      segment_ids: np.ndarray) -> list[int]:
  """The example index of every segment in the batch (row by row, in packing order)."""
  starts = (positions == 0) & (segment_ids > 0)
  return [int(x) for x in example_ids[starts]]


def _make_iterator(config: Any, tokenizer, mesh, *, dataset_dir: str, fmt: str,
                   num_epochs: int | None, with_ids: bool):
  kwargs = {}
  bins = int(config.data.num_packing_bins)
  if bins:
    kwargs["num_packing_bins"] = bins
  return data_loader.make_train_iterator(
      dataset_dir, tokenizer, fmt=fmt, seq_len=int(config.data.seq_len),
      global_batch_size=int(config.data.batch_size), seed=int(config.data.seed),
      num_epochs=num_epochs, with_example_ids=with_ids, mesh=mesh, **kwargs)


def _to_global(batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  return data_loader.to_global({k: batch[k] for k in data_loader.BATCH_KEYS}, mesh)


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


def train(config: Any, *, devices: Sequence[Any] | None = None, model: Any = None,
          tokenizer: Any = None) -> TrainResult:
  """Finetunes per `config` (configs/train.py), holding `config.workdir`'s lock (see `_train`).

  A second process training into the same workdir is refused at once (fileio.RunDirLockedError).
  """
  sharding.initialize_distributed(config.multihost)
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
  sharding.initialize_distributed(config.multihost)
  mesh, rules = sharding.mesh_from_config(config.mesh, devices)
  check_batch(config, mesh)

  # Tokenizer and data first: data errors (empty dataset, too-long examples) surface before
  # any model is built.
  model_cfg = None
  if model is None:
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
  ckpt_dir, existing = train_checkpoints.existing_steps(config, model, model_cfg, mesh, rules)

  if model is None and existing:
    # Resuming: the parameters come from the training checkpoint, so the model is built
    # abstract (nothing allocated, model.checkpoint not read).
    model = builder.for_restore(model_cfg, mesh, rules)
  elif model is None:
    model, _ = model_loader.load_model(config.model, mesh, rules)
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
    manager = train_checkpoints.TrainCheckpointManager(
        ckpt_dir, every=int(ck.every), keep=int(ck.keep), async_save=bool(ck.async_save))
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
    train_checkpoints.warn_changed_schedule(manager.read_meta(start_step), config, start_step,
                                            ckpt_dir)

  records: list[dict[str, Any]] = []
  log_every = int(config.log.every)
  eval_every = int(config.eval.every) if config.eval.dataset_dir else 0
  progress = None
  if is_main and config.log.progress and start_step < total_steps:
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
        meta.update(train_checkpoints.schedule_settings(config))
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
