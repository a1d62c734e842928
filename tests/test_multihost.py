"""Two local JAX processes (4 CPU devices each, gloo collectives) train like one with 8."""

import os
import socket
import subprocess

import jax
import numpy as np
import pytest

from icl_ft.config import schema
from icl_ft.model import checkpoints
from icl_ft.train import loop
from icl_ft.train import metrics as metrics_lib

import train_setup

pytestmark = [pytest.mark.multihost, pytest.mark.slow]

STEPS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return train_setup.setup(tmp_path_factory, "multihost_data")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _config(workdir, data):
  data_dir, tok = data
  config = train_setup.train_config(workdir, data_dir, tok, steps=STEPS, checkpoint__every=2)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  return config


def test_two_processes_match_one(tmp_path, data):
  # The reference: this (pytest) process, 8 devices, the same mesh.
  assert jax.process_count() == 1 and jax.device_count() == 8
  single = _config(str(tmp_path / "one"), data)
  loop.train(schema.typed("train", single))

  multi = _config(str(tmp_path / "two"), data)
  multi.multihost.initialize = True
  multi.multihost.coordinator_address = f"127.0.0.1:{_free_port()}"
  multi.multihost.num_processes = 2
  procs = []
  for pid in range(2):
    multi.multihost.process_id = pid
    procs.append(subprocess.Popen(
        train_setup.binary_command(multi), env=train_setup.env(4), cwd=train_setup.REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail("multi-process run timed out")
    outs.append((p.returncode, out, err))
  for rc, out, err in outs:
    assert rc == 0, err[-3000:]
  assert "trained to step 4" in outs[0][1]
  assert "trained to step" not in outs[1][1]  # only process 0 reports

  # Each process saved its own iterator state; process 0 alone wrote the metrics.
  files = sorted(os.listdir(tmp_path / "two" / "checkpoints" / str(STEPS) / "data_iter"))
  assert [f for f in files if f.endswith(".json")] == ["process_0-of-2.json",
                                                       "process_1-of-2.json"]
  a = checkpoints.read_params(tmp_path / "one" / "checkpoints", STEPS)
  b = checkpoints.read_params(tmp_path / "two" / "checkpoints", STEPS)
  diffs = [float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  assert len(diffs) > 0 and max(diffs) < 1e-5
  ra = metrics_lib.read_jsonl(tmp_path / "one" / "metrics.jsonl")
  rb = metrics_lib.read_jsonl(tmp_path / "two" / "metrics.jsonl")
  assert [r["step"] for r in rb] == list(range(1, STEPS + 1))
  np.testing.assert_allclose([r["loss"] for r in ra], [r["loss"] for r in rb], rtol=1e-5)
  # The same global batches: process 0 holds the first half of each one.
  for x, y in zip(ra, rb):
    assert 0 < len(y["example_ids"]) < len(x["example_ids"])
    assert x["example_ids"][: len(y["example_ids"])] == y["example_ids"]
