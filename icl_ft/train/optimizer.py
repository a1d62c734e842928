"""The optax optimizer: AdamW with warmup + cosine / constant / linear decay and clipping.

    tx, schedule = make_optimizer(config.optimizer, total_steps=config.steps)

Config fields (`configs/train.py`, `optimizer` block):
  learning_rate: peak learning rate (paper: 3e-4).
  schedule: "constant" (after warmup), "cosine" (warmup then cosine decay to
    learning_rate * final_lr_fraction at total_steps), or "linear" (same, linearly).
  warmup_steps: linear warmup from 0 over this many steps (0 = none).
  final_lr_fraction: end of the decay as a fraction of the peak.
  b1, b2, eps, weight_decay: AdamW.
  clip_norm: clip the global gradient norm to this (0 = no clipping).
"""

from __future__ import annotations

from typing import Any

import optax

SCHEDULES = ("constant", "cosine", "linear")


def make_schedule(cfg: Any, total_steps: int) -> optax.Schedule:
  """Learning-rate schedule from the optimizer config block."""
  lr = float(cfg.learning_rate)
  warmup = int(cfg.warmup_steps)
  kind = str(cfg.schedule)
  final = lr * float(cfg.final_lr_fraction)
  if kind not in SCHEDULES:
    raise ValueError(f"unknown optimizer.schedule {kind!r}; known: {', '.join(SCHEDULES)}")
  if not 0 < lr < float("inf"):  # NaN too: it would train to NaN parameters
    raise ValueError(f"optimizer.learning_rate must be > 0 and finite, got {lr}")
  if warmup < 0:
    raise ValueError(f"optimizer.warmup_steps must be >= 0, got {warmup}")
  decay_steps = max(int(total_steps) - warmup, 1)
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps, alpha=final / lr)
  else:
    main = optax.linear_schedule(lr, final, decay_steps)
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(cfg: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(AdamW without its learning rate, the learning-rate schedule) from the optimizer config.

  The transformation is clip -> scale_by_adam -> add_decayed_weights, i.e. `optax.adamw` up to
  its last factor; the train step multiplies its output by `-schedule(step)`, computed on the
  host and passed in as an argument. Equal to `full_optimizer` step for step, but the compiled
  step does not depend on the schedule (no recompilation when steps / warmup / lr change).
  """
  name = str(cfg.name)
  if name != "adamw":
    raise ValueError(f"unknown optimizer.name {name!r}; known: adamw")
  schedule = make_schedule(cfg, total_steps)
  parts = []
  clip = float(cfg.clip_norm)
  if clip < 0:
    raise ValueError(f"optimizer.clip_norm must be >= 0, got {clip}")
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  parts.append(optax.scale_by_adam(b1=float(cfg.b1), b2=float(cfg.b2),
                                   eps=float(cfg.eps)))
  weight_decay = float(cfg.weight_decay)
  if weight_decay:
    parts.append(optax.add_decayed_weights(weight_decay))
  return optax.chain(*parts), schedule


def full_optimizer(cfg: Any, total_steps: int) -> optax.GradientTransformation:
  """The same optimizer as one optax transformation (clip + `optax.adamw(schedule)`)."""
  tx, schedule = make_optimizer(cfg, total_steps)
  return optax.chain(tx, optax.scale_by_learning_rate(schedule))
