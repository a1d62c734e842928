"""`--config.dry_run=true`: the real steps compiled abstractly, measured, compared, checked.

The Gemma 3 1B case compiles the real training step once (about a minute of CPU: marked slow)
on the 8 simulated CPU devices (fsdp=8, batch 8 x 128, bf16 compute) and checks XLA's numbers
against icl_ft.scale.memory's estimate: arguments (params + AdamW moments) within 1%, temp
(gradients, gathered / cast weights, activations) and the peak within 20%. The binary paths
(report, exit status, the one-line error) run on the tiny preset, which compiles in seconds.
"""

from __future__ import annotations

import dataclasses

import pytest

from icl_ft.bin import evaluate as eval_bin
from icl_ft.bin import train as train_bin
from icl_ft.config import schema
from icl_ft.scale import dry_run
from tests.test_configs import CONFIGS, _load

GiB = 1024**3


def _train_config(preset: str, **mesh):
  c = _load(CONFIGS / "train.py").get_config(preset)
  for k, v in mesh.items():
    c.mesh[k] = v
  c.data.batch_size, c.data.seq_len = 8, 128
  c.dry_run = True
  return c


@pytest.mark.slow
def test_gemma3_1b_dry_run_matches_the_estimator(capsys):
  c = _train_config("gemma3_1b", data=1, fsdp=8, tensor=1)
  report = dry_run.run(schema.typed("train", c), "train")  # CPU reports no memory limit: nothing to fail
  out = capsys.readouterr().out
  assert "gemma3_1b" in out and "TFLOP" in out and "fits" in out
  est, step = report.estimate, report.steps[0]
  assert report.num_params == pytest.approx(1.0e9, rel=0.01)
  # Arguments = params + AdamW moments (+ the int32 batch): exact up to the batch.
  assert step.argument_bytes == pytest.approx(est.params + est.optimizer, rel=0.01)
  # Everything else XLA keeps (temp), and the peak, within 20% of the estimator.
  assert step.temp_bytes == pytest.approx(dry_run.est_temp(est), rel=0.2)
  assert step.peak_bytes == pytest.approx(est.total_training, rel=0.2)
  # The per-device program does ~1/8 of 6 x params x tokens.
  assert step.flops * 8 == pytest.approx(6 * report.num_params * 8 * 128, rel=0.2)
  # Against a 4 GiB device it does not fit: one line naming the numbers and the field.
  small = dataclasses.replace(report, device_memory_bytes=4 * GiB)
  with pytest.raises(dry_run.DoesNotFitError, match=r"gemma3_1b .* needs [0-9.]+ GiB per device .*"
                     r"more than the 4.00 GiB .*device_memory_gib"):
    dry_run.check_fits(small)


def test_train_binary_dry_run_tiny_does_not_fit(capsys):
  c = _train_config("tiny", data=2, fsdp=4, tensor=1)
  c.device_memory_gib = 1e-4  # ~100 KiB: the report is printed, then the run fails
  assert train_bin.execute(c) == 1  # no workdir, dataset or tokenizer needed
  captured = capsys.readouterr()
  assert "dry run (train): tiny_gemma3" in captured.out
  assert "data=2 x fsdp=4 x tensor=1" in captured.out and "DOES NOT FIT" in captured.out
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: tiny_gemma3 (train, mesh data=2,fsdp=4,")
  assert "device_memory_gib" in err[0]


def test_train_binary_dry_run_bad_batch(capsys):
  c = _train_config("tiny", data=8, fsdp=1, tensor=1)
  c.data.batch_size = 4
  assert train_bin.execute(c) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: config.data.batch_size=4 is not divisible by the data-parallel size 8 "
                 "(mesh data=8 x fsdp=1)"]


def test_eval_binary_dry_run_tiny(capsys):
  c = _load(CONFIGS / "eval.py").get_config("icl")
  c.mesh.data, c.mesh.fsdp = 2, 4
  c.scoring.batch_size = 16
  c.scoring.prefill_chunk = 256
  c.dry_run = True
  c.dry_run_context_tokens = 600  # -> chunks 256, 256, 128 (bucketed rest)
  assert eval_bin.execute(c) == 0
  out = capsys.readouterr().out
  assert "dry run (eval): tiny_gemma3" in out
  assert "prefill step" in out and "suffix step" in out
  assert "context 600 tokens (3 prefill chunk(s) of <= 256)" in out
  assert "cache 640 slots" in out  # 256 + 256 + 128 context slots (suffixes: a shared prefix)

  c.dry_run_context_tokens = 5000  # tiny's max_seq_len is 4096
  assert eval_bin.execute(c) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "exceeds tiny_gemma3's max_seq_len 4096" in err[0]
