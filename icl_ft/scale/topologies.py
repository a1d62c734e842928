"""Running the study at scale: Cloud TPU topologies, Gemma presets and the finetuning recipe.

Pure Python (no JAX import): configs/gemma.py builds its configs from these tables, and
`fit_table()` (JAX, imported lazily) prints which model fits which topology from the memory
estimator (`python -m icl_ft.scale.topologies`, the table in docs/running-on-tpu.md).

Topologies (one JAX device per chip; v4 and v5p chips are megacore, so "v4-8" / "v5p-8" are
4 chips and "v5p-32" 16):

  name     accelerator type   chips  hosts  HBM per chip
  v4-8     v4-8               4      1      32 GiB
  v5e-8    v5litepod-8        8      1      16 GiB
  v5e-16   v5litepod-16       16     4      16 GiB
  v5p-8    v5p-8              4      1      95 GiB
  v5p-32   v5p-32             16     4      95 GiB

Every topology uses one mesh: all chips on `fsdp` (parameters, gradients and AdamW moments
sharded over every chip; the batch too, since batch -> (data, fsdp)). With batch 16 that is
1-4 rows per chip; tensor parallelism is not needed below 27B parameters.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from icl_ft.model import config as config_lib


@dataclasses.dataclass(frozen=True)
class Topology:
  """A Cloud TPU slice: chips (JAX devices), hosts (processes) and memory per chip."""

  name: str
  accelerator_type: str  # gcloud --accelerator-type
  chips: int
  hosts: int
  hbm_gib: float

  @property
  def runtime_version(self) -> str:
    """gcloud --version: the TPU software version of this slice's generation."""
    return RUNTIME_VERSIONS[self.accelerator_type.rsplit("-", 1)[0]]

  @property
  def mesh(self) -> dict[str, int]:
    """Mesh axis sizes for this slice (module docstring)."""
    return {"data": 1, "fsdp": self.chips, "tensor": 1}


# The TPU software (runtime) version of each generation, by its gcloud accelerator-type prefix
# (cloud.google.com/tpu/docs/runtimes: "v4 and older" share the base image; v5e is "v5litepod").
# launch_tpu.sh holds the same table (tests/test_launch_tpu.py checks they agree).
RUNTIME_VERSIONS: dict[str, str] = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}

TOPOLOGIES: dict[str, Topology] = {
    "v4-8": Topology("v4-8", "v4-8", 4, 1, 32.0),
    "v5e-8": Topology("v5e-8", "v5litepod-8", 8, 1, 16.0),
    "v5e-16": Topology("v5e-16", "v5litepod-16", 16, 4, 16.0),
    "v5p-8": Topology("v5p-8", "v5p-8", 4, 1, 95.0),
    "v5p-32": Topology("v5p-32", "v5p-32", 16, 4, 95.0),
}

# The study's Gemma models (icl_ft.model.config presets) and where their weights come from.
PRESETS = ("gemma2_2b", "gemma2_9b", "gemma3_1b", "gemma3_4b", "gemma3_12b", "gemma3_27b")
KAGGLE_HANDLES = {
    "gemma2_2b": "google/gemma-2/flax/gemma2-2b",
    "gemma2_9b": "google/gemma-2/flax/gemma2-9b",
    "gemma3_1b": "google/gemma-3/flax/gemma3-1b",
    "gemma3_4b": "google/gemma-3/flax/gemma3-4b",
    "gemma3_12b": "google/gemma-3/flax/gemma3-12b",
    "gemma3_27b": "google/gemma-3/flax/gemma3-27b",
}

DATASETS = ("simple_reversals", "syllogisms", "celebrities", "semantic_structure")
CONDITIONS = ("pretrained", "icl", "ft")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Finetuning hyper-parameters for one dataset (paper: batch 8 or 16, lr 3e-4, 200-1000 steps)."""

  steps: int
  seq_len: int  # packed row length in Gemma tokens; longer examples are an error, never cut
  batch_size: int = 16
  learning_rate: float = 3e-4


RECIPES: dict[str, Recipe] = {
    # ~1000 one-sentence documents / ~70 short ones: a few epochs at batch 16.
    "simple_reversals": Recipe(steps=300, seq_len=128),
    "syllogisms": Recipe(steps=200, seq_len=128),
    # 3600 one-sentence documents.
    "celebrities": Recipe(steps=500, seq_len=128),
    # 2200 documents of 4-20 sentences (~0.8M characters, the longest 1023 characters): the
    # longest runs and rows.
    "semantic_structure": Recipe(steps=1000, seq_len=512),
}


def topology(name: str) -> Topology:
  """The named topology (ValueError listing the valid ones)."""
  if name not in TOPOLOGIES:
    raise ValueError(f"unknown topology {name!r}; valid: {', '.join(TOPOLOGIES)}")
  return TOPOLOGIES[name]


def recipe(dataset: str) -> Recipe:
  """The finetuning recipe of `dataset` (ValueError listing the valid ones)."""
  if dataset not in RECIPES:
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(RECIPES)}")
  return RECIPES[dataset]


def check_preset(preset: str) -> str:
  if preset not in PRESETS:
    raise ValueError(f"unknown study preset {preset!r}; valid: {', '.join(PRESETS)}")
  return preset


# ---------------------------------------------------------------------------
# Which model fits where (memory estimator)
# ---------------------------------------------------------------------------


def fit_rows(presets=PRESETS, topologies=None, batch_size: int = 16, seq_len: int = 512
             ) -> list[dict[str, Any]]:
  """Per (preset, topology): estimated GiB per chip for finetuning and for scoring.

  Needs at least max(chips) JAX devices (CPU: XLA_FLAGS=--xla_force_host_platform_device_count=16):
  nothing is allocated, the estimator works on abstract shapes.
  """
  # JAX (here and through sharding / memory) only now: `main` sets the device-count flag before
  # JAX is first imported, and configs/gemma.py imports this module without needing JAX.
  import jax  # pylint: disable=g-import-not-at-top

  from icl_ft import sharding  # pylint: disable=g-import-not-at-top
  from icl_ft.scale import memory  # pylint: disable=g-import-not-at-top

  topologies = list(topologies or TOPOLOGIES.values())
  devices = jax.devices()
  rows = []
  for preset in presets:
    cfg = config_lib.get_preset(preset)
    for topo in topologies:
      if topo.chips > len(devices):
        raise ValueError(f"{topo.name} needs {topo.chips} devices, have {len(devices)}; set "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={topo.chips}")
      mesh = sharding.make_mesh(topo.mesh, devices=devices[:topo.chips])
      est = memory.estimate(cfg, mesh, batch_size, seq_len)
      gib = lambda b: b / memory.GiB
      rows.append({"preset": preset, "topology": topo.name, "num_params": est.num_params,
                   "train_gib": gib(est.total_training), "params_gib": gib(est.params),
                   "hbm_gib": topo.hbm_gib,
                   "train_fits": gib(est.total_training) <= topo.hbm_gib,
                   "eval_fits": gib(est.params) <= 0.8 * topo.hbm_gib})
  return rows


def fit_table(rows: list[dict[str, Any]]) -> str:
  """Markdown: one row per preset, one column per topology, `train GiB / HBM` and a verdict."""
  topos = list(dict.fromkeys(r["topology"] for r in rows))
  presets = list(dict.fromkeys(r["preset"] for r in rows))
  by = {(r["preset"], r["topology"]): r for r in rows}
  head = "| model | params | " + " | ".join(
      f"{t} ({TOPOLOGIES[t].chips} x {TOPOLOGIES[t].hbm_gib:g} GiB)" for t in topos) + " |"
  lines = [head, "|" + " --- |" * (len(topos) + 2)]
  for p in presets:
    cells = []
    for t in topos:
      r = by[(p, t)]
      verdict = "train + eval" if r["train_fits"] else ("eval only" if r["eval_fits"] else "no")
      cells.append(f"{r['train_gib']:.1f} GiB: {verdict}")
    n = by[(p, topos[0])]["num_params"]
    lines.append(f"| {p} | {n / 1e9:.2f}B | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main() -> None:
  """Prints the fit table (batch 16, seq 512: the largest recipe)."""
  need = max(t.chips for t in TOPOLOGIES.values())
  flag = f"--xla_force_host_platform_device_count={need}"
  if "jax" not in sys.modules and flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  print(fit_table(fit_rows()), end="")


if __name__ == "__main__":
  main()
