"""Files the runs write get the umask's mode (as open() / mkdir() would), not mkstemp's 0600."""

import contextlib
import os
import stat

import pytest

from icl_ft import fileio
from icl_ft.datasets import records


@contextlib.contextmanager
def _umask(mask):
  old = os.umask(mask)
  try:
    yield
  finally:
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_honours_the_umask(tmp_path, mask, mode):
  with _umask(mask):
    fileio.atomic_write(tmp_path / "summary.json", "{}")
    with open(tmp_path / "plain.json", "w") as f:  # what a plain write gives
      f.write("{}")
  assert stat.S_IMODE((tmp_path / "summary.json").stat().st_mode) == mode
  assert stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == mode
  assert (tmp_path / "summary.json").read_text() == "{}"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.json", "summary.json"]  # no temporary left


def test_dataset_directory_gets_the_umask_mode(tmp_path):
  dataset = records.Dataset(name="d", train=(records.Document(id="a", text="A b.", sentences=("A b.",)),),
                            tests={})
  with _umask(0o022):
    out = records.write_dataset(dataset, tmp_path / "d")
  assert stat.S_IMODE(out.stat().st_mode) == 0o755
  assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}
