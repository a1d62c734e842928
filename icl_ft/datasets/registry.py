"""Dataset names -> generator modules, and `generate(name, scale, seed, **overrides)`.

Each module follows the dataset contract: a frozen `Params` dataclass (defaults =
paper scale), `SCALES = {"paper": ..., "small": ...}` and
`generate(params, seed) -> records.Dataset`. Modules are imported lazily, one
name at a time, so one broken or missing module never breaks the others.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

from icl_ft.datasets import records

NAMES: tuple[str, ...] = ("simple_reversals", "syllogisms", "celebrities", "semantic_structure")


class _LazyModules(Mapping[str, ModuleType]):
  """A read-only name -> module mapping that imports `icl_ft.datasets.<name>` on first access."""

  def __init__(self, names: tuple[str, ...]):
    self._names = names

  def __getitem__(self, name: str) -> ModuleType:
    if name not in self._names:
      raise KeyError(name)
    return importlib.import_module(f"icl_ft.datasets.{name}")

  def __iter__(self) -> Iterator[str]:
    return iter(self._names)

  def __len__(self) -> int:
    return len(self._names)

  def __repr__(self) -> str:
    return f"DATASETS({list(self._names)})"


DATASETS: Mapping[str, ModuleType] = _LazyModules(NAMES)


def module(name: str) -> ModuleType:
  """The generator module of dataset `name`; ValueError naming the valid ones if unknown."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")
  return DATASETS[name]


def params(name: str, scale: str = "paper", **overrides: Any) -> Any:
  """The `Params` of dataset `name` at `scale`, with fields replaced by `overrides`."""
  mod = module(name)
  if scale not in mod.SCALES:
    raise ValueError(f"unknown scale {scale!r} for dataset {name!r}; valid: {list(mod.SCALES)}")
  base = mod.SCALES[scale]
  fields = [f.name for f in dataclasses.fields(base)]
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f"unknown parameter(s) {unknown} for dataset {name!r}; valid: {fields}")
  return dataclasses.replace(base, **overrides)


def generate(name: str, scale: str = "paper", seed: int = 0, **overrides: Any) -> records.Dataset:
  """Generates dataset `name` at `scale` (overrides replace `Params` fields).

  Raises ValueError naming the problem for an unknown name, scale or parameter,
  and (from the dataset module) for impossible sizes. The card's `scale` is the
  requested scale, or "custom" when overrides changed the parameters.
  """
  p = params(name, scale, **overrides)
  dataset = module(name).generate(p, seed=seed)
  card = dict(dataset.card)
  card["scale"] = scale if p == module(name).SCALES[scale] else "custom"
  card.setdefault("seed", seed)
  return dataclasses.replace(dataset, card=card)
