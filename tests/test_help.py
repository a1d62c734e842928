"""Every binary's --help says what it does and lists its config's fields (not absl's bare USAGE line)."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# module -> (a field its default config has, one its docstring names)
BINARIES = {"augment": ("dataset_dir", "--config.dataset_dir"), "data": ("output_dir", "--config.output_dir"),
            "evaluate": ("datasets", "--config.datasets"), "pretrain": ("workdir", "--config.workdir"),
            "study": ("run", "--config.run"), "train": ("workdir", "--config.workdir")}


def _help(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", f"icl_ft.bin.{module}", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)


@pytest.mark.parametrize("module", sorted(BINARIES))
def test_help_says_what_the_binary_does(module):
  field, named = BINARIES[module]
  result = _help(module, "--help")
  assert result.returncode == 0, result.stderr
  doc = importlib.import_module(f"icl_ft.bin.{module}").__doc__
  assert result.stdout.startswith(doc.strip().splitlines()[0]) and "USAGE:" not in result.stdout
  assert named in result.stdout.split("Config fields")[0]  # the usage lines of the docstring
  fields = [l for l in result.stdout.splitlines() if l.startswith("  --config.")]
  assert len(fields) >= 3 and any(l.startswith(f"  --config.{field}=") for l in fields), fields
  assert "\\\n" not in doc or " \\" in result.stdout  # continuation backslashes survive


def test_help_shows_the_given_config():
  result = _help("data", "--config=configs/data.py:celebrities", "-h")
  assert result.returncode == 0, result.stderr
  assert "Config fields of configs/data.py:celebrities" in result.stdout
  assert "  --config.params.num_p2d_people=None (unset)" in result.stdout
  assert "  --config.original_dir=''" in result.stdout
