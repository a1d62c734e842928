"""docs/running-on-tpu.md stays true to the code: its configs, flags, launch_tpu.sh options, tables.

Every `configs/<file>.py:<arg>` the page names loads and validates (shell variables in the arg
are expanded over the values the page loops over), every `--config.<field>=` flag names a field
of the config it is used with (or of some Gemma train / eval config), every launch_tpu.sh
option it uses is one `--help` documents, and the mesh table matches icl_ft.scale.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from icl_ft import config_checks
from icl_ft import scale
from tests.test_configs import CONFIGS, _load

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "running-on-tpu.md").read_text()
# The shell loops of the page run over these.
LOOP = {"$d": scale.DATASETS}


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
    assert config_checks.validate(c) is not None


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
  for t in scale.TOPOLOGIES.values():
    m = t.mesh
    row = (f"| {t.name} | `{t.accelerator_type}` | `{t.runtime_version}` | {t.chips} | {t.hosts} | "
           f"{t.hbm_gib:g} GiB | ({m['data']}, {m['fsdp']}, {m['tensor']}) |")
    assert row in DOC, row
    assert f"{t.name} ({t.chips} x {t.hbm_gib:g} GiB)" in DOC  # the fit table's header
