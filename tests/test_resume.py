"""Exact resume: `icl-ft-train` killed with SIGKILL mid-run and restarted equals an uninterrupted run."""

import collections
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from icl_ft.model import checkpoints
from icl_ft.train import metrics as metrics_lib

import train_setup

pytestmark = [pytest.mark.resume, pytest.mark.slow]

STEPS = 16
EVERY = 3
DEVICES = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return train_setup.setup(tmp_path_factory, "resume_data")


def _config(workdir, data):
  data_dir, tok = data
  config = train_setup.train_config(workdir, data_dir, tok, steps=STEPS, checkpoint__every=EVERY,
                                    checkpoint__keep=2)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 2, 2  # sharded params
  return config


def _logged_steps(workdir) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  steps = [0]
  with open(path) as f:
    for line in f:
      if line.endswith("\n"):
        steps.append(int(line.split('"step": ', 1)[1].split(",", 1)[0]))
  return max(steps)


def _run_and_kill(config, kill_after_checkpoint: int) -> int:
  """Starts the binary; SIGKILLs it once checkpoint k is complete and step k+2 is logged."""
  workdir = config.workdir
  ckpt = os.path.join(workdir, "checkpoints", str(kill_after_checkpoint))
  proc = subprocess.Popen(train_setup.binary_command(config), env=train_setup.env(DEVICES),
                          cwd=train_setup.REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  try:
    while time.monotonic() < deadline:
      if proc.poll() is not None:
        pytest.fail(f"the run ended before it was killed: rc={proc.returncode}\n{proc.stderr.read()}")
      if (checkpoints.is_complete(ckpt) and
          _logged_steps(workdir) >= kill_after_checkpoint + 2):
        proc.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
    else:
      pytest.fail("timed out waiting for the checkpoint")
  finally:
    proc.wait()
    proc.stderr.close()
  assert proc.returncode == -signal.SIGKILL
  return _logged_steps(workdir)


def test_killed_and_restarted_run_is_bit_identical(tmp_path, data):
  full = _config(str(tmp_path / "full"), data)
  proc = train_setup.run_binary(full, num_devices=DEVICES)
  assert proc.returncode == 0, proc.stderr
  assert "trained to step 16" in proc.stdout

  killed = _config(str(tmp_path / "killed"), data)
  reached = _run_and_kill(killed, kill_after_checkpoint=6)
  assert reached < STEPS  # killed mid-run, after step 8 was logged
  latest = max(checkpoints.checkpoint_steps(tmp_path / "killed" / "checkpoints"))
  assert 6 <= latest < STEPS
  proc = train_setup.run_binary(killed, num_devices=DEVICES)
  assert proc.returncode == 0, proc.stderr
  assert f"resumed from step {latest}" in proc.stdout

  # Parameters after the last step: bit-identical.
  a = checkpoints.read_params(tmp_path / "full" / "checkpoints", STEPS)
  b = checkpoints.read_params(tmp_path / "killed" / "checkpoints", STEPS)
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) > 0
  assert all(np.array_equal(x, y) for x, y in zip(la, lb))

  # The same batches in the same order, each example seen equally often, the same losses.
  ra = metrics_lib.read_jsonl(tmp_path / "full" / "metrics.jsonl")
  rb = metrics_lib.read_jsonl(tmp_path / "killed" / "metrics.jsonl")
  assert [r["step"] for r in ra] == [r["step"] for r in rb] == list(range(1, STEPS + 1))
  for x, y in zip(ra, rb):
    assert (x["step"], x["batch_hash"], x["example_ids"], x["loss"]) == \
        (y["step"], y["batch_hash"], y["example_ids"], y["loss"])
  counts_a = collections.Counter(i for r in ra for i in r["example_ids"])
  counts_b = collections.Counter(i for r in rb for i in r["example_ids"])
  assert counts_a == counts_b and len(counts_a) > 0
