"""Running the study at scale: Cloud TPU topologies, Gemma presets and the finetuning recipe.

Pure Python (no JAX import): configs/gemma.py builds its configs from these tables, and
`icl_ft/scale/fit.py` (JAX) tells which model fits which topology from the memory estimator
(`python -m icl_ft.scale`, the table in docs/running-on-tpu.md).

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
