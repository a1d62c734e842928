"""Training checkpoints and resuming: orbax CheckpointManager of params, opt_state, step,
data_iter, meta; the checks a run makes on the checkpoints it finds before resuming.

The on-disk layout (one directory per kept step, `params/` the same as a params-only
checkpoint) is described in `icl_ft.model.checkpoints`, which restores a step's params for
evaluation; `TrainCheckpointManager` writes the steps and resumes a run from them exactly (the
grain iterator state included). `existing_steps` refuses or checks what a run directory
already holds before anything is allocated; each step records the learning-rate schedule it
was trained with (`schedule_settings`) so a resume under another one warns
(`warn_changed_schedule`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from icl_ft.config import schema
from icl_ft.model import builder
from icl_ft.model import checkpoints as ckpt_lib


class TrainCheckpointManager:
  """orbax CheckpointManager for training: params, opt_state, step, data_iter (grain), meta.

  Saves every `every` steps (and whenever `save(force=True)`), keeps the newest `keep`,
  asynchronously by default (the arrays are copied off the device before `save` returns;
  the files are written in the background and committed atomically). `latest_step()` is the
  newest complete step; `restore()` resumes from it.
  """

  def __init__(self, directory: str | os.PathLike[str], *, every: int, keep: int = 3,
               async_save: bool = True):
    self.directory = ckpt_lib.abs_dir(directory)
    if every < 1:
      raise ValueError(f"checkpoint.every must be >= 1, got {every}")
    if keep < 1:
      raise ValueError(f"checkpoint.keep must be >= 1, got {keep}")
    if self.directory.exists() and not self.directory.is_dir():
      raise ckpt_lib.CheckpointError(f"checkpoint directory {self.directory} is a file")
    if self.directory.exists() and ckpt_lib.is_complete(self.directory):
      raise ckpt_lib.CheckpointError(f"{self.directory} is a params-only checkpoint, not a "
                                     f"training checkpoint directory")
    self.every = every
    # Which steps to save is decided in `save` (orbax would also save the first step).
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=1,
        max_to_keep=keep,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save,
    )
    self._mngr = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest complete step, or None."""
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def read_meta(self, step: int) -> dict[str, Any]:
    return ckpt_lib.read_meta(self.directory / str(step))

  def check_compatible(self, step: int, params: Any) -> None:
    """One-line CheckpointError if step's params differ in shape from `params`."""
    ckpt_lib.check_shapes(ckpt_lib.saved_param_shapes(self.directory / str(step)),
                          ckpt_lib.param_shapes(params), str(self.directory / str(step)))

  def save(self, step: int, params: Any, opt_state: Any, data_iter: Any,
           meta: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
    """Saves the step if it is due (a multiple of `every`) or `force`; returns whether it did."""
    if not force and step % self.every:
      return False
    params = ckpt_lib.to_pure(params)
    info = {"kind": "train", "step": int(step), "param_shapes": ckpt_lib.param_shapes(params),
            **dict(meta or {})}
    items = {
        ckpt_lib.PARAMS: ocp.args.StandardSave(params),
        ckpt_lib.OPT_STATE: ocp.args.StandardSave(opt_state),
        ckpt_lib.STEP: ocp.args.JsonSave({"step": int(step)}),
        ckpt_lib.META: ocp.args.JsonSave(info),
    }
    if data_iter is not None:
      items[ckpt_lib.DATA_ITER] = grain.checkpoint.CheckpointSave(data_iter)
    return self._mngr.save(int(step), args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_params: Any, abstract_opt_state: Any,
              data_iter: Any) -> tuple[Any, Any, int]:
    """(params, opt_state, step) of `step`; sets `data_iter`'s state in place."""
    self.check_compatible(step, abstract_params)
    items = {
        ckpt_lib.PARAMS: ocp.args.StandardRestore(abstract_params),
        ckpt_lib.OPT_STATE: ocp.args.StandardRestore(abstract_opt_state),
        ckpt_lib.STEP: ocp.args.JsonRestore(),
    }
    if data_iter is not None:
      item = self.directory / str(step) / ckpt_lib.DATA_ITER
      if not item.is_dir():
        raise ckpt_lib.CheckpointError(
            f"checkpoint {self.directory / str(step)} has no {ckpt_lib.DATA_ITER} item")
      mine = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
      if not (item / mine).exists():
        found = sorted(p.name for p in item.iterdir() if p.name.endswith(".json"))
        raise ckpt_lib.CheckpointError(
            f"checkpoint {self.directory / str(step)} holds the data iterator state of "
            f"{found or 'no processes'}, not {mine}: resume with the same number of processes")
      items[ckpt_lib.DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
    with ckpt_lib.unreadable_as_error(self.directory / str(step)):
      out = self._mngr.restore(int(step), args=ocp.args.Composite(**items))
    ckpt_lib.check_finite(out[ckpt_lib.PARAMS], f"checkpoint {self.directory / str(step)}")
    return out[ckpt_lib.PARAMS], out[ckpt_lib.OPT_STATE], int(out[ckpt_lib.STEP]["step"])

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are committed."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()

  def __enter__(self) -> "TrainCheckpointManager":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def existing_steps(config: Any, model: Any, model_cfg: Any, mesh: Any, rules: Any
                   ) -> tuple[str | None, list[int]]:
  """(checkpoint dir or None when disabled, its complete steps), checked against the run.

  Steps already there with `checkpoint.resume=false` are refused; otherwise the newest is
  checked to be of this model's shapes (`model`, else the abstract `model_cfg` model: nothing
  allocated) and, for a configured model, of its preset. One-line errors.
  """
  ck = config.checkpoint
  if int(ck.every) <= 0:
    return None, []
  ckpt_dir = ck.dir or os.path.join(os.fspath(config.workdir), "checkpoints")
  existing = ckpt_lib.checkpoint_steps(ckpt_dir)
  if existing and not ck.resume:
    raise ValueError(f"checkpoint directory {ckpt_dir} already has steps {existing}; set "
                     f"checkpoint.resume=true to continue or use a new directory")
  if existing:
    if model is None:
      _, abs_state, _ = builder.abstract(model_cfg, mesh, rules)
      shapes = ckpt_lib.param_shapes(ckpt_lib.param_state(abs_state))
    else:
      shapes = ckpt_lib.param_shapes(ckpt_lib.param_state(model))
    ckpt_lib.check_shapes(
        ckpt_lib.saved_param_shapes(ckpt_lib.resolve_params_dir(ckpt_dir, existing[-1])),
        shapes, os.path.join(ckpt_dir, str(existing[-1])))
    if model_cfg is not None:
      ckpt_lib.check_preset(os.path.join(ckpt_dir, str(existing[-1])), config.model.preset)
  return ckpt_dir, existing


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
