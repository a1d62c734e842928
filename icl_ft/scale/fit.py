"""Which model fits which Cloud TPU slice: the memory estimator over every preset and topology.

`python -m icl_ft.scale` prints the table (docs/running-on-tpu.md); it needs as many JAX devices
as the largest slice has chips, which `icl_ft/scale/__main__.py` simulates on CPU.
"""

from __future__ import annotations

from typing import Any

import jax

from icl_ft import sharding
from icl_ft.model import config as config_lib
from icl_ft.scale import memory
from icl_ft.scale import topologies as topologies_lib


def fit_rows(presets=topologies_lib.PRESETS, topologies=None, batch_size: int = 16, seq_len: int = 512
             ) -> list[dict[str, Any]]:
  """Per (preset, topology): estimated GiB per chip for finetuning and for scoring.

  Needs at least max(chips) JAX devices (CPU: XLA_FLAGS=--xla_force_host_platform_device_count=16):
  nothing is allocated, the estimator works on abstract shapes.
  """
  topologies = list(topologies or topologies_lib.TOPOLOGIES.values())
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
      f"{t} ({topologies_lib.TOPOLOGIES[t].chips} x {topologies_lib.TOPOLOGIES[t].hbm_gib:g} GiB)" for t in topos) + " |"
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
