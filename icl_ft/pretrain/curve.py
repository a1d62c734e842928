"""Held-out in-context accuracy against pretraining tokens: a run's checkpoints, each scored.

    python -m icl_ft.pretrain.curve WORKDIR [--context_chars 0,2000,4000] [--episodes 8]
        [--tokens_before 0] [--label NAME] [--families celebrities,syllogisms]

Scores every checkpoint under WORKDIR/train/checkpoints that WORKDIR/heldout_curve.jsonl does
not yet hold (same context length, episodes, seed and families) with
`recipe.evaluate_in_context` (the preset and tokenizer its checkpoint metadata names) and
appends one row per checkpoint and context length. From all rows it draws WORKDIR/heldout_curve.png (against tokens: a panel per
family and split, a line per context length) and, for checkpoints scored at several lengths,
WORKDIR/heldout_length.png (against context length). Run it while a pretraining run goes (its
checkpoints rotate, `train.checkpoint.keep`) or after. `--tokens_before`: tokens the starting
weights had already seen (a run continued from another model), added to each row's count.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from icl_ft import sharding
from icl_ft.config import schema
from icl_ft.evaluation import plots
from icl_ft.model import checkpoints as checkpoints_lib
from icl_ft.model import loader
from icl_ft.pretrain import corpus as corpus_lib
from icl_ft.pretrain import recipe

CURVE_FILE = "heldout_curve.jsonl"
FIGURE_FILE = "heldout_curve.png"
LENGTH_FIGURE_FILE = "heldout_length.png"
MAX_LENGTH_LINES = 4


def checkpoint_steps(workdir: Path) -> list[int]:
  """The steps of the complete checkpoints of the run in `workdir`, ascending."""
  return checkpoints_lib.checkpoint_steps(workdir / "train" / "checkpoints")


def checkpoint_meta(workdir: Path, step: int) -> dict[str, Any]:
  """The metadata a train checkpoint records (preset, model, data, optimizer)."""
  return json.loads((workdir / "train" / "checkpoints" / str(step) / "meta" / "metadata")
                    .read_text())


def read_rows(workdir: Path) -> list[dict[str, Any]]:
  """The rows of `workdir`'s curve file (none if it has none)."""
  path = workdir / CURVE_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _scoring_key(step: int, context_chars: int, episodes: int, seed: int,
                 episode_params: dict[str, Any], families: Sequence[str]) -> tuple[Any, ...]:
  """What makes two scorings of a checkpoint the same (a curve row holds one)."""
  return (step, context_chars, episodes, seed, json.dumps(episode_params, sort_keys=True),
          tuple(families))


def score_checkpoints(workdir: Path, *, context_chars: int = 0, episodes: int = 8,
                      seed: int = 0, params: corpus_lib.Params | None = None,
                      tokens_before: int = 0, label: str = "",
                      families: Sequence[str] = corpus_lib.FAMILIES) -> list[dict[str, Any]]:
  """Scores the checkpoints not yet in the curve file; appends and returns their rows.

  Each checkpoint is loaded with the preset and tokenizer its metadata names; its tokens are
  `tokens_before` + step x batch x row length (token slots, padding included). A run continued
  from other weights (`train.model.checkpoint`) gets those weights as step 0. `params`: the
  held-out episodes' generator settings; the default `recipe.HELDOUT_PARAMS` is one yardstick for
  every run, whatever its own corpus. `families`: score only these (each family's episodes do
  not depend on the others, so its numbers are those of a full scoring).
  """
  params = params or recipe.HELDOUT_PARAMS
  episode_params = recipe.params_record(params)
  families = list(families)
  unknown = sorted(set(families) - set(corpus_lib.FAMILIES))
  if unknown:
    raise ValueError(f"unknown families {unknown}; valid: {', '.join(corpus_lib.FAMILIES)}")
  done = {_scoring_key(r["step"], r["context_chars"], r["episodes"], r["seed"],
                      r["episode_params"], r.get("families", corpus_lib.FAMILIES))
          for r in read_rows(workdir)}
  mesh, rules = sharding.mesh_from_config(schema.MeshConfig())
  steps = checkpoint_steps(workdir)
  checkpoints = {s: str(workdir / "train" / "checkpoints" / str(s)) for s in steps}
  first = checkpoint_meta(workdir, steps[0]) if steps else {}
  if first.get("model", {}).get("checkpoint"):  # a continued run: its start is step 0
    checkpoints = {0: first["model"]["checkpoint"], **checkpoints}
  new = []
  for step, checkpoint in checkpoints.items():
    if _scoring_key(step, context_chars, episodes, seed, episode_params, families) in done:
      continue
    start = time.perf_counter()
    meta = checkpoint_meta(workdir, steps[0] if step == 0 else step)
    step_tokens = int(meta["data"]["batch_size"]) * int(meta["data"]["seq_len"])
    model_cfg = schema.ModelConfig(preset=meta["preset"], tokenizer=meta["model"]["tokenizer"],
                                   checkpoint=checkpoint)
    model, tok = loader.load_model(model_cfg, mesh, rules)
    accuracy = recipe.evaluate_in_context(model, tok, episodes, seed=seed, params=params,
                                          families=families, context_chars=context_chars)
    row = {"label": label or workdir.name, "step": step,
           "tokens": tokens_before + step * step_tokens, "context_chars": context_chars,
           "episodes": episodes, "seed": seed, "episode_params": episode_params,
           "families": families,
           "accuracy": accuracy,
           "seconds": round(time.perf_counter() - start, 1)}
    with open(workdir / CURVE_FILE, "a") as f:  # one line per checkpoint: a stop loses none
      f.write(json.dumps(row) + "\n")
    new.append(row)
  return new


def figure_rows(rows: list[dict[str, Any]], x: str = "tokens") -> list[dict[str, Any]]:
  """The curve rows as plots.curve_figure points: against `x` ("tokens": a line per context
  length; "context_chars": a line per checkpoint scored at two lengths or more, at most
  MAX_LENGTH_LINES of them evenly spaced, the first and the last among them)."""
  if x == "context_chars":
    lengths: dict[int, set[int]] = {}
    for r in rows:
      lengths.setdefault(r["step"], set()).add(r["context_chars"])
    steps = sorted(s for s, c in lengths.items() if len(c) > 1)
    n = min(len(steps), MAX_LENGTH_LINES)
    keep = {steps[round(i * (len(steps) - 1) / max(n - 1, 1))] for i in range(n)}
    rows = [r for r in rows if r["step"] in keep]
  out = []
  for r in rows:
    series = (f"{r['label']}, {r['context_chars'] or 'own'} chars" if x == "tokens" else
              f"{r['label']}, {r['tokens'] / 1e6:.1f}M tokens")
    for key, acc in r["accuracy"].items():
      dataset, split = key.split("/")
      out.append({"dataset": dataset, "split": split, "series": series, "x": r[x],
                  "accuracy": acc["accuracy"], "se": acc["se"], "chance": acc["chance"]})
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdir", type=Path)
  parser.add_argument("--context_chars", default="4000",
                      help="comma-separated context lengths (0: the episode's own documents)")
  parser.add_argument("--episodes", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--tokens_before", type=int, default=0)
  parser.add_argument("--label", default="")
  parser.add_argument("--families", default=",".join(corpus_lib.FAMILIES),
                      help="comma-separated families to score")
  args = parser.parse_args()
  if not checkpoint_steps(args.workdir):
    raise SystemExit(f"error: no checkpoints under {args.workdir / 'train' / 'checkpoints'}")
  new = []
  for chars in (int(c) for c in args.context_chars.split(",")):
    new += score_checkpoints(args.workdir, context_chars=chars, episodes=args.episodes,
                             seed=args.seed, tokens_before=args.tokens_before, label=args.label,
                             families=args.families.split(","))
  for r in new:
    print(json.dumps({"step": r["step"], "tokens": r["tokens"], "context_chars": r["context_chars"],
                      **{k: round(v["accuracy"], 3) for k, v in r["accuracy"].items()}}))
  rows = read_rows(args.workdir)
  paths = [plots.curve_figure(figure_rows(rows), args.workdir / FIGURE_FILE,
                              xlabel="pretraining tokens")]
  by_length = figure_rows(rows, "context_chars")
  if by_length:
    paths.append(plots.curve_figure(by_length, args.workdir / LENGTH_FIGURE_FILE,
                                    xlabel="context characters"))
  print(f"{len(new)} evaluations; " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
  main()
