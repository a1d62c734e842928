"""A non-editable install runs `icl-ft-study` without the repository (no configs/ file is read).

The package is installed (`pip install --no-deps --target`, not editable) into a temporary
directory that is the only entry of PYTHONPATH; the study runs from another directory with no
`--config`, so its config comes from the package (`icl_ft.study.plan.default_config`) and its
train / eval configs from the package's schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_package_runs_the_study_from_elsewhere(tmp_path):
  site = tmp_path / "site"
  install = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
       "--target", str(site), str(ROOT)],
      capture_output=True, text=True, timeout=600, check=False)
  assert install.returncode == 0, install.stderr
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {**os.environ, "PYTHONPATH": str(site)}
  where = subprocess.run([sys.executable, "-c", "import icl_ft; print(icl_ft.__file__)"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.strip().startswith(str(site)), where.stdout  # not the repository's
  results = tmp_path / "results"
  run = subprocess.run(
      [sys.executable, "-m", "icl_ft.bin.study", "--config.datasets=syllogisms",
       "--config.conditions=pretrained,no_knowledge", f"--config.results_dir={results}",
       "--config.progress=false"],
      cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1200, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "study done" in run.stdout
  study = json.loads((results / "default" / "study.json").read_text())
  # The installed package's assets ($REPO: the directory holding the imported icl_ft).
  assert study["model"]["checkpoint"] == "$REPO/icl_ft/assets/tiny/params"
  rows = json.loads((results / "default" / "summary.json").read_text())
  assert {r["condition"] for r in rows} == {"pretrained", "no_knowledge"}
