"""docs/running-on-tpu.md stays true to the code: its configs, flags, launch_tpu.sh options, tables.

Every `configs/<file>.py:<arg>` the page names loads and validates (shell variables in the arg
are expanded over the values the page loops over), every `--config.<field>=` flag names a field
of the config it is used with (or of some Gemma train / eval config), every launch_tpu.sh
option it uses is one `--help` documents, and the mesh table matches icl_ft.scale.topologies.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from icl_ft.config import checks
from icl_ft.scale import fit
from icl_ft.scale import topologies
from tests.test_configs import CONFIGS, _load

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "running-on-tpu.md").read_text()
# The shell loops of the page run over these.
LOOP = {"$d": topologies.DATASETS}


def _expand(arg: str) -> list[str]:
  for var, values in LOOP.items():
    if var in arg:
      return [arg.replace(var, v) for v in values]
  return [arg]


def _configs() -> list:
  out = []
  for m in re.finditer(r"configs/(\w+)\.py:([\w,.$-]+)", DOC):
    for arg in _expand(m.group(2)):
      out.append(_load(CONFIGS / f"{m.group(1)}.py").get_config(arg))
  return out


def _has(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False
    node = node[part]
  return True


def test_every_named_config_loads_and_validates():
  configs = _configs()
  assert len(configs) >= 10
  for c in configs:
    assert checks.validate(c) is not None


def test_every_config_flag_is_a_field():
  flags = set(re.findall(r"--config\.([\w.]+)=", DOC))
  assert {"model.checkpoint", "model.tokenizer", "dry_run", "results_dir", "icl.subsample",
          "workdir"} <= flags
  configs = _configs()
  for flag in sorted(flags):
    assert any(_has(c, flag) for c in configs), flag


def test_launch_options_are_documented():
  help_text = subprocess.run(["bash", str(ROOT / "launch_tpu.sh"), "--help"], capture_output=True,
                             text=True, check=True).stdout
  lines = [l for l in DOC.splitlines() if "./launch_tpu.sh" in l or l.startswith("      --")]
  used = {o for l in lines for o in re.findall(r"(?<![\w.])(--[a-z][a-z-]*)", l)}
  used -= {"--config."}  # binary flags after `--` are checked above
  assert {"--print", "--spot", "--binary", "--config"} <= used
  for option in used:
    assert re.search(rf"^  {re.escape(option)}\b", help_text, re.M), option
  steps = {w for l in lines for w in re.findall(r"launch_tpu\.sh(?: --print)? ((?:[a-z]+ ?)+)", l)}
  for group in steps:
    for step in group.split():
      assert re.search(rf"^  {step}\b", help_text, re.M), step


def test_mesh_table_matches_the_topologies():
  for t in topologies.TOPOLOGIES.values():
    m = t.mesh
    row = (f"| {t.name} | `{t.accelerator_type}` | `{t.runtime_version}` | {t.chips} | {t.hosts} | "
           f"{t.hbm_gib:g} GiB | ({m['data']}, {m['fsdp']}, {m['tensor']}) |")
    assert row in DOC, row
    assert f"{t.name} ({t.chips} x {t.hbm_gib:g} GiB)" in DOC  # the fit table's header


def _fit_cells(preset: str) -> dict[str, str]:
  """The page's fit-table cells of `preset`, by topology name."""
  header = next(l for l in DOC.splitlines() if l.startswith("| model | params |"))
  names = [re.match(r"\s*(\S+) \(", c).group(1) for c in header.strip("|").split("|")[2:]]
  row = next(l for l in DOC.splitlines() if l.startswith(f"| {preset} |"))
  return dict(zip(names, (c.strip() for c in row.strip("|").split("|")[2:])))


def test_fit_table_matches_the_estimator():
  """The Gemma 2 2B row (the model the page runs) is what `python -m icl_ft.scale` prints now.

  The tests see 8 devices, so the slices of up to 8 chips are recomputed.
  """
  import jax  # pylint: disable=g-import-not-at-top

  cells = _fit_cells("gemma2_2b")
  slices = [t for t in topologies.TOPOLOGIES.values() if t.chips <= len(jax.devices())]
  assert {t.name for t in slices} >= {"v4-8", "v5e-8", "v5p-8"}
  expected = fit.fit_table(fit.fit_rows(presets=("gemma2_2b",), topologies=slices))
  row = expected.splitlines()[2].strip("|").split("|")[2:]
  for topo, cell in zip(slices, row):
    assert cells[topo.name] == cell.strip(), (topo.name, cells[topo.name], cell)
  # The prose quotes the same numbers.
  train_gib = lambda t: cells[t].split(" GiB")[0]
  assert f"the estimator's {train_gib('v5p-8')} GiB in the table" in DOC
  assert f"finetuning at {train_gib('v5e-8')} GiB per chip on a v5e-8" in DOC
  assert f"about {round(float(train_gib('v5p-8')))} GiB per chip" in DOC


@pytest.mark.slow
def test_quoted_dry_run_peak_is_measured():
  """The dry-run peak the page quotes for Gemma 2 2B on v5p-8 is what the compiled step needs:
  the page's own command on 4 simulated CPU devices (about a minute of compile), whose estimator
  line the page quotes too."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": str(ROOT)}
  out = subprocess.run([sys.executable, "-m", "icl_ft.bin.train",
                        "--config=configs/gemma.py:train,gemma2_2b,v5p-8,semantic_structure",
                        "--config.dry_run=true"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1200, check=True).stdout
  peak = float(re.search(r"peak ([0-9.]+) GiB per device; device memory", out).group(1))
  estimate = float(re.search(r"total ([0-9.]+) GiB vs XLA peak", out).group(1))
  quoted = re.search(r"on 4 simulated\s+CPU devices measured a peak of ([0-9.]+) GiB", DOC)
  assert quoted and float(quoted.group(1)) == round(peak, 1), (quoted, peak)
  assert re.search(rf"the\s+estimator\s+says\s+{estimate:.1f}\)", DOC), estimate
  # An upper bound (it counts a cast copy of each gathered weight that XLA need not keep).
  assert peak <= estimate and peak == pytest.approx(estimate, rel=0.2)
